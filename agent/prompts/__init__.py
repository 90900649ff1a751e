"""Prompts as data: loading the files in prompts/, hot reload with per-group overrides, regression cases."""
