"""`dingbot simulate "text"`: play DingTalk against a running service.

Builds a realistic robot callback (dingtalk-protocol.md), signs it with `SECRET` when that is set (a
mock-mode service without SECRET takes it unsigned), hosts a one-shot session webhook (on
`DINGTALK_OAPI_BASE` when that is a loopback address, else on a free loopback port, which a mock-mode
service accepts), posts the callback, and prints the reply as DingTalk would show it with the time it
took. Exit code 0 when a reply arrived, 1 when none did, 2 when the settings stop it early.
"""

from __future__ import annotations

import argparse
import errno
import json
import queue
import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO
from urllib.parse import urlsplit

from dingbot.simulate_callback import (
    DEFAULT_CORP_ID,
    DEFAULT_NICK,
    DEFAULT_ROBOT_CODE,
    DEFAULT_USER,
    attachments,
    build_callback,
    conversation_id_for,
)
from dingbot.simulate_view import Part, describe
from dingbot.simulate_webhook import (
    EXIT_INTERRUPTED,
    EXIT_REPLY,
    EXIT_SETUP,
    WEBHOOK_PATH,
    OneShotWebhook,
    SimulateError,
    suggested_base,
    webhook_address,
)

if TYPE_CHECKING:
    from agent.settings.config import Settings

CALLBACK_PATH = "/dingtalk/callback"
QUIET_SECONDS = 1.5  # a long reply arrives as several posts: wait this long after the last one
MEMORY_WAIT_SECONDS = 10.0  # at most, for the service to store what the message taught
ACK_TIMEOUT_SECONDS = 10.0  # the service acknowledges in milliseconds; this is for a hung one


def add_parser(sub: Any) -> None:
    simulate = sub.add_parser(
        "simulate",
        help="play DingTalk against a running service: send a signed message, print the reply",
        description=(
            "Send one callback to a running service (signed with SECRET when set), host the session "
            "webhook it replies to, and print the reply as DingTalk shows it. A mock-mode service "
            "(FORCE_MOCK_OPENAI=1) needs nothing else; with a real model, set DINGTALK_OAPI_BASE to a "
            "loopback address such as http://127.0.0.1:9000 for both the service and this command."
        ),
    )
    simulate.add_argument("text", nargs="?", default="", help="what the person says")
    simulate.add_argument(
        "--image",
        action="append",
        default=[],
        metavar="PATH",
        help="send this picture too (repeatable; with text: a rich-text message, words first)",
    )
    simulate.add_argument(
        "--file",
        metavar="PATH",
        help="send this file (a file message: no words; ask about it in the next run)",
    )
    simulate.add_argument(
        "--group",
        metavar="NAME",
        help="send it in a group of this name, @-mentioning the bot (default: 1:1)",
    )
    simulate.add_argument(
        "--conversation-id",
        metavar="ID",
        help="the conversationId, e.g. a group's from prompts/groups/*.yaml (default: from --group/--user)",
    )
    simulate.add_argument(
        "--user",
        metavar="ID",
        default=DEFAULT_USER,
        help=f"the sender's staff id; memory is per sender (default: {DEFAULT_USER})",
    )
    simulate.add_argument(
        "--nick",
        help=f"the sender's display name (default: {DEFAULT_NICK}, or the id for another user)",
    )
    simulate.add_argument("--url", help="the service (default: http://127.0.0.1:$PORT)")
    simulate.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="how long to wait for the reply (default: 120, or OPENAI_TIMEOUT + 30 when that is longer)",
    )
    simulate.add_argument(
        "--stay",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="after the reply, keep the session webhook up this long and show later messages (reminders)",
    )
    simulate.set_defaults(handler=run)


def _callback_url(url: str | None, settings: Settings) -> tuple[str, tuple[str, int]]:
    if url is None:
        host = settings.host
        if host in ("0.0.0.0", ""):  # noqa: S104 - the wildcard: reach it on loopback
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        url = f"http://{f'[{host}]' if ':' in host else host}:{settings.port}"
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port, parts = None, parts._replace(netloc="")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SimulateError(f"--url {url!r} is not an http(s) URL, e.g. http://127.0.0.1:8080", EXIT_SETUP)
    port = port or (443 if parts.scheme == "https" else 80)
    path = parts.path.rstrip("/")
    if not path.endswith(CALLBACK_PATH):
        path += CALLBACK_PATH
    return f"{parts.scheme}://{parts.netloc}{path}", (parts.hostname, port)


def _check_allowed(settings: Settings, args: argparse.Namespace, conversation_id: str) -> None:
    """ALLOWED_USERS/ALLOWED_GROUPS: the service would ignore the message without a word; say so now."""
    users = settings.allowed_user_ids
    if users and args.user not in users:
        raise SimulateError(
            f"--user {args.user} is not on ALLOWED_USERS, so the service would ignore the message: "
            f"pass --user with one of them (e.g. --user {sorted(users)[0]})",
            EXIT_SETUP,
        )
    groups = settings.allowed_group_ids
    if args.group is not None and groups and conversation_id not in groups:
        raise SimulateError(
            f"the group's conversationId {conversation_id} is not on ALLOWED_GROUPS, so the service would "
            f"ignore the message: pass --conversation-id with one of them (e.g. {sorted(groups)[0]})",
            EXIT_SETUP,
        )


# --- the run ---


def _refusal(response: Any, *, signed: bool) -> str:
    """The status and reason of a refused callback, with the likely fix."""
    try:
        reason = str(response.json().get("error") or response.json().get("detail") or "")
    except (ValueError, AttributeError):
        reason = response.text.strip()[:200]
    status = response.status_code
    line = f"the service refused the callback: HTTP {status} {reason or response.reason_phrase}"
    if status == 401 and "configured on the server" in reason:
        line += (
            " — the service has no SECRET and is not in mock mode, so it takes no callback: set the same "
            "SECRET for the service and simulate (e.g. in .env) and restart the service"
        )
    elif status == 401 and not signed:
        line += (
            " — the service checks signatures: set SECRET for simulate too, the same value as the service's "
            "(e.g. in .env, or SECRET=… dingbot simulate …)"
        )
    elif status == 401:
        line += " — simulate and the service must use the same SECRET (restart the service after changing it)"
    elif status == 400 and "mock mode only" in reason:
        line += (
            " — the service is not in mock mode (or was reached through a proxy), so it replies only to "
            "DINGTALK_OAPI_BASE: to try it on this machine, set DINGTALK_OAPI_BASE=http://127.0.0.1:9000 for "
            "both the service and simulate and restart the service"
        )
    elif status == 400 and "DINGTALK_OAPI_BASE" in reason:
        line += " — the service runs with another DINGTALK_OAPI_BASE: give both the same value and restart it"
    elif status == 403:
        line += (
            " — simulate sends DINGTALK_ROBOT_CODE/DINGTALK_CORP_ID from its own settings: give both the same"
        )
    elif status in (404, 405):
        line += " — is --url the DingHook service, running with DINGTALK_MODE=http or both?"
    return line


def _inline_reply(response: Any, seconds: float) -> Part | None:
    """A message object in the callback's answer is posted by DingTalk as the reply (legacy)."""
    try:
        data = response.json()
    except ValueError:
        return None
    if isinstance(data, dict) and data.get("msgtype") not in (None, "empty"):
        return Part(seconds, response.content)
    return None


def _wait_for_memory(client: Any, service: str) -> None:
    """What this message taught is stored before the next `simulate` asks (the service learns after it
    replied): wait, briefly, until the service has no memory write in flight."""
    deadline = time.monotonic() + MEMORY_WAIT_SECONDS
    while time.monotonic() < deadline:
        try:
            if not client.get(f"{service}/healthz").json().get("memory_writes"):
                return
        except Exception:  # an older service, or one that stopped: nothing to wait for
            return
        time.sleep(0.05)


def _default_timeout(settings: Settings) -> float:
    return max(120.0, settings.openai_timeout + 30)


def simulate(args: argparse.Namespace, out: TextIO) -> int:
    import httpx

    from agent.errors import ConfigError
    from agent.settings.loading import load_settings
    from api.dingtalk.signature import compute_sign

    try:
        settings = load_settings(runnable=False)
    except ConfigError as exc:
        raise SimulateError(str(exc), EXIT_SETUP) from None
    secret = settings.callback_secret  # None: unsigned, which only a mock-mode service without it takes
    callback_url, service = _callback_url(args.url, settings)
    host, port, base = webhook_address(settings, service)
    group: str | None = args.group
    nick = args.nick or (DEFAULT_NICK if args.user == DEFAULT_USER else args.user)
    conversation_id = args.conversation_id or conversation_id_for(args.user, group)
    _check_allowed(settings, args, conversation_id)
    timeout = args.timeout if args.timeout is not None else _default_timeout(settings)
    if timeout <= 0:
        raise SimulateError(
            "--timeout must be a number of seconds greater than 0, e.g. --timeout 120", EXIT_SETUP
        )

    served, pictures, file = attachments(args)
    session = uuid.uuid4().hex
    started: list[float] = []
    try:
        webhook = OneShotWebhook(host, port, session, started, served)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE and base is not None:
            raise SimulateError(
                f"port {port} on {host} (from DINGTALK_OAPI_BASE={base}) is in use: stop what listens there "
                f"(another simulate, or `dingbot catch`), or choose a free port in DINGTALK_OAPI_BASE "
                "for both the service and simulate and restart the service",
                EXIT_SETUP,
            ) from None
        raise SimulateError(
            f"cannot listen on {host}:{port} (from DINGTALK_OAPI_BASE={base}): {exc.strerror or exc}; "
            f"use a free port above 1024, e.g. DINGTALK_OAPI_BASE={suggested_base({settings.port})}, "
            "for both the service and simulate",
            EXIT_SETUP,
        ) from None

    base = base or f"http://127.0.0.1:{webhook.port}"
    body = build_callback(
        args.text,
        webhook=f"{base}{WEBHOOK_PATH}?session={session}",
        user=args.user,
        nick=nick,
        group=group,
        conversation_id=conversation_id,
        robot_code=settings.dingtalk_robot_code or DEFAULT_ROBOT_CODE,
        corp_id=settings.dingtalk_corp_id or DEFAULT_CORP_ID,
        pictures=pictures,
        file=file,
    )
    raw = json.dumps(body, ensure_ascii=False).encode()
    bot = settings.bot_name
    where = f"in group “{group}”, @{bot}" if group is not None else "one-to-one"
    sent = [args.text] if args.text else []
    sent += [f"[图片 {Path(p).name}]" for p in args.image] + ([f"[文件《{file[0]}》]"] if file else [])
    print(f"{nick} ({args.user}) → {bot}, {where}: {' '.join(sent)}", file=out, flush=True)

    with webhook, httpx.Client(timeout=ACK_TIMEOUT_SECONDS, trust_env=False) as client:
        headers = {"Content-Type": "application/json; charset=utf-8"}
        if secret is not None:
            timestamp = str(int(time.time() * 1000))
            headers |= {"timestamp": timestamp, "sign": compute_sign(timestamp, secret.get_secret_value())}
        started.append(time.perf_counter())
        try:
            response = client.post(callback_url, content=raw, headers=headers)
        except httpx.ConnectError as exc:
            raise SimulateError(
                f"no service at {callback_url.removesuffix(CALLBACK_PATH)} ({exc or 'cannot connect'}): "
                "start it (to try it: `FORCE_MOCK_OPENAI=1 python -m dingbot.server`, with the same settings "
                "or .env as simulate), or pass --url"
            ) from None
        except httpx.TimeoutException:
            raise SimulateError(
                f"the service at {callback_url} did not acknowledge within {ACK_TIMEOUT_SECONDS:.0f} s"
            ) from None
        except httpx.HTTPError as exc:
            raise SimulateError(f"sending the callback to {callback_url} failed: {exc}") from None
        ack_ms = (time.perf_counter() - started[0]) * 1000
        if response.status_code != 200:
            raise SimulateError(_refusal(response, signed=secret is not None))
        inline = _inline_reply(response, ack_ms / 1000)
        parts = [inline] if inline else webhook.collect(started[0] + timeout, QUIET_SECONDS)
        if parts:
            _wait_for_memory(client, callback_url.removesuffix(CALLBACK_PATH))

        if not parts:
            raise SimulateError(
                f"no reply within {timeout:g} s (the service acknowledged in {ack_ms:.0f} ms): it may "
                f"still be answering (OPENAI_TIMEOUT={settings.openai_timeout:g} s a model call, "
                f"OPENAI_MAX_RETRIES={settings.openai_max_retries}) or have ignored the message; "
                "see the service's log, or wait longer with --timeout"
            )
        nicks = {args.user: nick}
        for i, part in enumerate(parts, 1):
            label = f" · part {i}/{len(parts)}" if len(parts) > 1 else ""
            print(f"\n{describe(part, bot, nicks, label)}", file=out, flush=True)
        last = parts[-1].seconds
        summary = f"reply in {parts[0].seconds:.2f} s"
        if len(parts) > 1:
            summary += f", {len(parts)} messages, the last at {last:.2f} s"
        print(f"\n{summary} (callback acknowledged in {ack_ms:.0f} ms)", file=out, flush=True)
        if args.stay:
            _stay(webhook, args.stay, bot, nicks, out)
    if webhook.strays:
        print(f"({webhook.strays} late post(s) to an earlier run's webhook answered and not shown)", file=out)
    return EXIT_REPLY


def _stay(webhook: OneShotWebhook, seconds: float, bot: str, nicks: dict[str, str], out: TextIO) -> None:
    """--stay: keep the session webhook up and show what else comes to it (a reminder falling due)."""
    print(f"\n(the session webhook stays up for {seconds:g} s: later messages, such as reminders, show here)",
          file=out, flush=True)  # fmt: skip
    deadline = time.perf_counter() + seconds
    shown = 0
    while (left := deadline - time.perf_counter()) > 0:
        try:
            part = webhook.parts.get(timeout=min(left, 0.25))
        except queue.Empty:
            continue
        shown += 1
        print(f"\n{describe(part, bot, nicks, ' · later')}", file=out, flush=True)
    print(f"\n({shown} later message(s) in {seconds:g} s)", file=out, flush=True)


def run(args: argparse.Namespace) -> int:
    try:
        return simulate(args, sys.stdout)
    except SimulateError as exc:
        print(f"dingbot: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print("dingbot: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
