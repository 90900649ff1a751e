"""`python -m dingbot.server`: the service on HOST:PORT, one process, clean stop on SIGTERM/SIGINT."""

from __future__ import annotations

import contextlib
import signal
import socket
import sys
from collections.abc import Iterator

import uvicorn

from agent.errors import ConfigError, PromptError
from agent.memory.embeddings import build_embeddings
from agent.memory.store import check_stored_dims
from agent.prompts.library import PromptLibrary
from agent.settings.config import Settings
from agent.settings.loading import load_settings
from agent.storage.database import engine_for
from agent.storage.health import StorageError
from agent.storage.migrate import SchemaTooNew
from agent.storage.sqlite import SqliteEngine
from api.app import create_app
from api.serving import server_config
from dingbot.logs import configure_logging


def preflight() -> Settings:
    """Everything that can be checked before the server binds; raises with one clear line."""
    settings = load_settings()
    PromptLibrary(settings.prompts_dir)  # the defaults and every group override must load
    _check_database(settings)
    check_stored_dims(settings, build_embeddings(settings))
    _check_port(settings.host, settings.port)
    return settings


def _check_database(settings: Settings) -> None:
    """SQLite: the file opens and passes quick_check within its budget. PostgreSQL: the server answers.
    Either: the schema is not newer than this code (agent/storage/)."""
    engine = engine_for(settings)
    if isinstance(engine, SqliteEngine):
        path = engine.path
        try:
            path.resolve().parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"DATABASE_PATH={str(path)!r} cannot be opened ({exc.strerror or exc}): point it at a "
                "writable file path, e.g. DATABASE_PATH=data/dingbot_memory.db"
            ) from None
        if path.is_dir():
            example = path / "bot.db"
            raise ConfigError(f"DATABASE_PATH={str(path)!r} is a folder: name a file in it, e.g. {example}")
    found = engine.check()
    if "quick_check not finished" in found:
        print(f"dingbot: database {engine.where}: {found}", file=sys.stderr)


def _check_port(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ConfigError(
                f"PORT={port} on HOST={host} is not available ({exc.strerror}): stop the other process "
                "or choose another PORT"
            ) from None


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
    except (ConfigError, PromptError, StorageError, SchemaTooNew) as exc:
        print(f"dingbot: cannot start: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    config = server_config(create_app(settings), settings.host, settings.port)
    server = _Server(config)
    server.run()  # handles SIGTERM/SIGINT: stops accepting, drains, runs the lifespan shutdown
    return 0 if server.started else 1


if __name__ == "__main__":
    sys.exit(main())
