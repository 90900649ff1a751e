"""Fakes at process boundaries only: local servers for the LLM and DingTalk, LangChain fake models."""
