"""`python -m dingbot.server`: the service on HOST:PORT, one process, clean stop on SIGTERM/SIGINT."""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Iterator

import uvicorn

from agent.config import Settings, load_settings
from agent.errors import ConfigError, PromptError
from agent.prompts import load_prompts
from api.app import create_app
from dingbot.logs import configure_logging


def preflight() -> Settings:
    """Everything that can be checked before the server binds; raises with one clear line."""
    settings = load_settings()
    load_prompts(settings.prompts_dir)
    folder = settings.database_path.resolve().parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"DATABASE_PATH folder {folder} cannot be created ({exc.strerror})") from None
    return settings


class _Server(uvicorn.Server):
    """uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown; we exit 0 instead."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        stops = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in stops}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def main() -> int:
    try:
        settings = preflight()
    except (ConfigError, PromptError) as exc:
        print(f"dingbot: cannot start: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,  # keep our logging configuration
        access_log=False,  # our own lines say what happened, without bodies or URLs
        lifespan="on",
        workers=1,  # embedded stores have one owner: never more than one process (design.md)
    )
    server = _Server(config)
    server.run()  # handles SIGTERM/SIGINT: stops accepting, drains, runs the lifespan shutdown
    return 0 if server.started else 1


if __name__ == "__main__":
    sys.exit(main())
