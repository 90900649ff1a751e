"""Entry points of DingHook: `python -m dingbot.server` and the `dingbot` command."""
