"""The `dingbot` command."""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import sys
import time

from agent.errors import ConfigError
from agent.settings.loading import load_settings


def _sign(args: argparse.Namespace) -> int:
    """Print the headers of a signed callback, for curl."""
    from api.dingtalk.signature import compute_sign

    try:
        settings = load_settings(runnable=False)
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


def _catch(args: argparse.Namespace) -> int:
    """Stand in for DingTalk's session webhook on this machine: print each reply, answer errcode 0."""
    import json
    from http.server import BaseHTTPRequestHandler, HTTPServer

    class Catcher(BaseHTTPRequestHandler):
        def log_message(self, format: str, *values: object) -> None:
            return

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                shown = json.dumps(json.loads(body), ensure_ascii=False, indent=2)
            except ValueError:
                shown = body.decode(errors="replace")
            print(f"--- reply received {time.strftime('%H:%M:%S')} ---\n{shown}", flush=True)
            answer = b'{"errcode":0,"errmsg":"ok"}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

    server = HTTPServer((args.host, args.port), Catcher)
    print(
        f"catching replies on http://{args.host}:{args.port} (a mock-mode service posts here as it is; "
        f"with a real model start it with DINGTALK_OAPI_BASE=http://{args.host}:{args.port}); Ctrl+C to stop",
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def _notify(args: argparse.Namespace) -> int:
    """Send a proactive notice through the custom-robot webhook (ACCESS_TOKEN), via the outbox."""
    import asyncio

    from api.delivery.notices import send_notice
    from api.delivery.outbox import OutboxState

    try:
        settings = load_settings(runnable=False)
        outcome = asyncio.run(send_notice(settings, args.text, title=args.title, markdown=args.markdown))
    except (ConfigError, ValueError) as exc:
        print(f"dingbot: {exc}", file=sys.stderr)
        return 2
    if outcome.state is OutboxState.SENT:
        print("sent")
        return 0
    if outcome.state is OutboxState.PENDING:
        when = time.strftime("%H:%M:%S", time.localtime(outcome.next_attempt_at))
        reason = outcome.detail or "DingTalk allows a robot 20 messages a minute"
        print(
            f"queued ({reason}): a service running with this ACCESS_TOKEN and database sends it from {when}"
        )
        return 0
    print(f"dingbot: not sent: {outcome.detail}", file=sys.stderr)
    return 1


# Commands that live in their own module: each defines `add_parser(subparsers)`, which registers the
# command and sets `handler` (a function of the parsed args returning the exit code). Heavy imports stay
# inside the handlers, so `dingbot --help` is quick.
COMMAND_MODULES = (
    "dingbot.doctor",
    "dingbot.chat",
    "dingbot.simulate",
    "dingbot.prompt_tests",
    "dingbot.settings_reference",
    "dingbot.migrate",
    "dingbot.transfer",
)


def package_version() -> str:
    try:
        return importlib.metadata.version("dinghook")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="dingbot", description="DingHook, a DingTalk assistant that remembers."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="run the service (same as python -m dingbot.server)")
    sign = sub.add_parser("sign", help="print timestamp and sign headers for a test callback (uses SECRET)")
    sign.add_argument("--timestamp", type=int, help="milliseconds since the epoch (default: now)")
    catch = sub.add_parser(
        "catch", help="print the replies the service sends (a local stand-in for DingTalk)"
    )
    catch.add_argument("--host", default="127.0.0.1")
    catch.add_argument("--port", type=int, default=9000)
    notify = sub.add_parser(
        "notify", help="send a notice to the custom robot's group (ACCESS_TOKEN; at most 20 a minute, queued)"
    )
    notify.add_argument("text", help="what to say")
    notify.add_argument("--markdown", action="store_true", help="send as Markdown")
    notify.add_argument("--title", default="", help="the Markdown message's title in the chat list")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parser(sub)
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is not None:
        return int(handler(args))
    if args.command == "serve":
        from dingbot.server import main as serve

        return serve()
    if args.command == "catch":
        return _catch(args)
    if args.command == "notify":
        return _notify(args)
    return _sign(args)


if __name__ == "__main__":
    sys.exit(main())
