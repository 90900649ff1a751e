"""The brain of DingHook: settings, model, prompts, history, assistant. Knows nothing of HTTP or DingTalk."""
