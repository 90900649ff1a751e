"""Settings: every environment variable DingHook reads, in one Settings class, and its reference."""
