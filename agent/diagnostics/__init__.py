"""Diagnostics of the model endpoint, memory and storage: `dingbot doctor` and the startup model check."""
