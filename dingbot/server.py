"""`python -m dingbot.server`: the service on HOST:PORT, one process, clean stop on SIGTERM/SIGINT."""

from __future__ import annotations

import os
import secrets
import socket
import sys

from agent.errors import ConfigError, PromptError
from agent.memory.embeddings import build_embeddings
from agent.memory.store import check_stored_dims
from agent.prompts.library import PromptLibrary
from agent.settings.choices import DingTalkMode
from agent.settings.config import Settings
from agent.settings.loading import load_settings
from agent.storage.database import engine_for
from agent.storage.health import StorageError
from agent.storage.migrate import SchemaTooNew
from agent.storage.sqlite import SqliteEngine
from api.app import create_app
from api.front.events import EventHandlers
from api.front.supervisor import AckProcess
from api.services import Services
from api.serving import GracefulServer, server_config
from dingbot.logs import configure_logging

LISTEN_BACKLOG = 2048  # uvicorn's default


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


def _listen(host: str, port: int) -> socket.socket:
    """PORT, bound here and kept open: the acking process serves it; a restart of that process loses no
    connection (they wait in the backlog)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(LISTEN_BACKLOG)
    listener.set_inheritable(True)
    return listener


def _serve_with_ack_process(settings: Settings) -> GracefulServer:
    """ACK_PROCESS: this process answers; a child process stores and acks callbacks on PORT and passes
    every other request here, over an abstract Unix socket (api/front/)."""
    listener = _listen(settings.host, settings.port)
    name = f"dingbot-{os.getpid()}-{secrets.token_hex(8)}"
    inside = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    inside.bind("\0" + name)
    token = secrets.token_urlsafe(32)
    app = create_app(settings, front_token=token)

    def services() -> Services:
        found: Services = app.state.services
        return found

    handlers = EventHandlers(
        schedule=lambda message: services().dispatcher.schedule(message),
        redelivered=lambda message: services().dispatcher.redelivered(message),
        count=lambda outcome: services().metrics.callback(outcome),
        ready=lambda: None,
    )
    front = AckProcess(listener, service=name, token=token, handlers=handlers)
    server = GracefulServer(server_config(app, settings.host, settings.port), companion=front)
    server.run(sockets=[inside])
    listener.close()
    return server


def main() -> int:
    try:
        settings = preflight()
    except (ConfigError, PromptError, StorageError, SchemaTooNew) as exc:
        print(f"dingbot: cannot start: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    if settings.ack_process and settings.dingtalk_mode is not DingTalkMode.STREAM:
        server = _serve_with_ack_process(settings)
    else:
        server = GracefulServer(server_config(create_app(settings), settings.host, settings.port))
        server.run()  # handles SIGTERM/SIGINT: stops accepting, drains, runs the lifespan shutdown
    return 0 if server.succeeded else 1


if __name__ == "__main__":
    sys.exit(main())
