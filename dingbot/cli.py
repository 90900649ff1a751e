"""The `dingbot` command."""

from __future__ import annotations

import argparse
import sys
import time

from agent.config import load_settings
from agent.errors import ConfigError


def _sign(args: argparse.Namespace) -> int:
    """Print the headers of a signed callback, for curl."""
    from api.dingtalk.signature import compute_sign

    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"dingbot: {exc}", file=sys.stderr)
        return 2
    secret = settings.callback_secret
    if secret is None:
        print("dingbot: SECRET is not set: nothing to sign with", file=sys.stderr)
        return 2
    timestamp = str(args.timestamp or int(time.time() * 1000))
    print(f"timestamp: {timestamp}")
    print(f"sign: {compute_sign(timestamp, secret.get_secret_value())}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="dingbot", description="DingHook, a DingTalk assistant that remembers."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="run the service (same as python -m dingbot.server)")
    sign = sub.add_parser("sign", help="print timestamp and sign headers for a test callback (uses SECRET)")
    sign.add_argument("--timestamp", type=int, help="milliseconds since the epoch (default: now)")
    args = parser.parse_args(argv)
    if args.command == "serve":
        from dingbot.server import main as serve

        return serve()
    return _sign(args)


if __name__ == "__main__":
    sys.exit(main())
