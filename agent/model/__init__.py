"""The chat model: the factory (OpenAI-compatible, Azure, mock), the offline models, error classification."""
