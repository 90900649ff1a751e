"""Logging for the entry points: one readable line per event, level from LOG_LEVEL."""

from __future__ import annotations

import logging
import sys

from agent.observe import current_message_id


class MessageIdFilter(logging.Filter):
    """Every line says which message it belongs to ("-" outside a message)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg_id = current_message_id.get()
        return True


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(MessageIdFilter())
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s [%(msg_id)s]: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)  # third-party loggers that print URLs or text are quietened by api.app.create_app
