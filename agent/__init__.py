"""The brain of DingHook: settings, model, prompts, memory, conversation, assistant. No HTTP, no DingTalk."""
