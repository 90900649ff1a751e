"""Memory per person: short-term conversation history and long-term facts in mem0 (store, index, guard)."""
