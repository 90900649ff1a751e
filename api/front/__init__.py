"""The acking process: HTTP callbacks stored and acked in a process of their own, the rest passed on."""
