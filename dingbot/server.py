"""`python -m dingbot.server`: the service on HOST:PORT, one process, clean stop on SIGTERM/SIGINT."""

from __future__ import annotations

import ipaddress
import logging
import os
import secrets
import socket
import sys
from typing import Any

from agent.errors import ConfigError, PromptError
from agent.memory.embeddings import build_embeddings
from agent.memory.store import check_stored_dims
from agent.prompts.library import PromptLibrary
from agent.settings.choices import DingTalkMode
from agent.settings.config import Settings
from agent.settings.loading import fingerprint, load_settings
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
    """PORT can be bound as the server will bind it (ConfigError in one line otherwise)."""
    for listener in _listen(host, port):
        listener.close()


def _addresses(host: str, port: int) -> list[tuple[socket.AddressFamily, tuple[Any, ...]]]:
    """Where to bind: an address as it is (no lookup), or what a name or "" (every interface) resolves to."""
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        found = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        return list(dict.fromkeys((family, address) for family, _, _, _, address in found))
    if literal.version == 6:
        return [(socket.AF_INET6, (host, port, 0, 0))]
    return [(socket.AF_INET, (host, port))]


def _listen(host: str, port: int) -> list[socket.socket]:
    """PORT, bound here the way uvicorn binds it (every address HOST resolves to; IPv6 sockets IPv6 only),
    and kept open while the acking process serves it: connections wait in the backlog across its restart."""
    listeners: list[socket.socket] = []
    try:
        for family, address in _addresses(host, port):
            listener = socket.socket(family, socket.SOCK_STREAM)
            listeners.append(listener)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            listener.bind(address)
            listener.listen(LISTEN_BACKLOG)
    except OSError as exc:
        for listener in listeners:
            listener.close()
        raise ConfigError(
            f"PORT={port} on HOST={host} is not available ({exc.strerror}): stop the other process "
            "or choose another PORT"
        ) from None
    return listeners


def _serve_with_ack_process(settings: Settings, listeners: list[socket.socket]) -> GracefulServer:
    """ACK_PROCESS: this process answers; a child process stores and acks callbacks on PORT and passes
    every other request here, over an abstract Unix socket (api/front/)."""
    name = f"dingbot-{os.getpid()}-{secrets.token_hex(8)}"
    inside = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    inside.bind("\0" + name)
    token = secrets.token_urlsafe(32)
    app = create_app(settings, front_token=token)

    def services() -> Services:
        found: Services = app.state.services
        return found

    handlers = EventHandlers(
        schedule=lambda message, claimed_at: services().dispatcher.announced(message, claimed_at),
        redelivered=lambda message: services().dispatcher.redelivered(message),
        count=lambda outcome: services().metrics.callback(outcome),
        ready=lambda: None,
    )
    front = AckProcess(
        listeners, service=name, token=token, settings_fingerprint=fingerprint(settings), handlers=handlers
    )
    server = GracefulServer(server_config(app, settings.host, settings.port), companion=front)
    server.run(sockets=[inside])
    for listener in listeners:  # closed by front.stop() already, unless startup failed before it
        listener.close()
    return server


def _acks_apart(settings: Settings) -> bool:
    """ACK_PROCESS, where it applies: HTTP callbacks (Stream mode has none), on Linux (abstract sockets)."""
    if not settings.ack_process or settings.dingtalk_mode is DingTalkMode.STREAM:
        return False
    if not sys.platform.startswith("linux"):
        logging.getLogger(__name__).info(
            "ACK_PROCESS needs Linux (an abstract Unix socket): callbacks are acked in this process"
        )
        return False
    return True


def main() -> int:
    try:
        settings = preflight()
    except (ConfigError, PromptError, StorageError, SchemaTooNew) as exc:
        print(f"dingbot: cannot start: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    if _acks_apart(settings):
        try:
            listeners = _listen(settings.host, settings.port)
        except ConfigError as exc:  # taken since the preflight looked
            print(f"dingbot: cannot start: {exc}", file=sys.stderr)
            return 2
        server = _serve_with_ack_process(settings, listeners)
    else:
        server = GracefulServer(server_config(create_app(settings), settings.host, settings.port))
        server.run()  # handles SIGTERM/SIGINT: stops accepting, drains, runs the lifespan shutdown
    return 0 if server.succeeded else 1


if __name__ == "__main__":
    sys.exit(main())
