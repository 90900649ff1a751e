"""The acking process (api/front/): started by `python -m dingbot.server` with ACK_PROCESS on, not by hand."""

from __future__ import annotations

import argparse
import os
import socket
import sys

from agent.errors import ConfigError
from agent.settings.loading import load_settings
from api.front.app import create_front_app
from api.front.supervisor import TOKEN_ENV
from api.serving import GracefulServer, server_config
from dingbot.logs import configure_logging


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dingbot.front", description=__doc__)
    parser.add_argument("--listen-fd", type=int, required=True, help="the service's listening socket (PORT)")
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
    listener = socket.socket(fileno=args.listen_fd)
    events = socket.socket(fileno=args.events_fd)
    app = create_front_app(settings, events=events, service=args.service, token=token)
    server = GracefulServer(server_config(app, settings.host, settings.port))
    server.run(sockets=[listener])
    return 0 if server.succeeded else 1


if __name__ == "__main__":
    sys.exit(main())
