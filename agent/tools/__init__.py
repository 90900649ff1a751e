"""Tools the model may call: reminders, MCP servers, and the loop that runs them (no HTTP, no DingTalk)."""
