"""The web console for operators and prompt authors, served under /console: off unless CONSOLE_PASSWORD."""
