"""The acking process (api/front/): started by `python -m dingbot.server` with ACK_PROCESS on, not by hand."""

from __future__ import annotations

import argparse
import os
import socket
import sys

from agent.errors import ConfigError
from agent.settings.loading import fingerprint, load_settings
from api.front.app import create_front_app
from api.front.supervisor import SETTINGS_ENV, TOKEN_ENV
from api.serving import GracefulServer, server_config
from dingbot.logs import configure_logging


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dingbot.front", description=__doc__)
    parser.add_argument(
        "--listen-fd", type=int, action="append", required=True, help="a listening socket of PORT (repeated)"
    )
    parser.add_argument("--events-fd", type=int, required=True, help="this end of the event line")
    parser.add_argument("--service", required=True, help="the service's abstract Unix socket name")
    args = parser.parse_args(argv)
    token = os.environ.pop(TOKEN_ENV, "")
    if not token:
        print(f"dingbot.front: {TOKEN_ENV} is not set: started by hand?", file=sys.stderr)
        return 2
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"dingbot.front: cannot start: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    if fingerprint(settings) != os.environ.pop(SETTINGS_ENV, ""):
        # Started again after a crash, it read a .env edited since the service started: acking with
        # other settings (another database, SECRET or allowlist) than the service answers with is worse
        # than not acking (DingTalk delivers again).
        print(
            "dingbot.front: cannot start: the settings (environment or .env) changed since the service "
            "started; restart the service to apply them",
            file=sys.stderr,
        )
        return 2
    listeners = [socket.socket(fileno=fd) for fd in args.listen_fd]
    events = socket.socket(fileno=args.events_fd)
    app = create_front_app(settings, events=events, service=args.service, token=token)
    server = GracefulServer(server_config(app, settings.host, settings.port))
    server.run(sockets=listeners)
    return 0 if server.succeeded else 1


if __name__ == "__main__":
    sys.exit(main())
