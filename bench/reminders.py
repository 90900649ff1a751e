"""Reminders under load: 1,000 reminders falling due within one minute, each fired once and on time.

Run from the repository root:

    python bench/reminders.py                    # 1000 reminders over 60 s, SQLite
    python bench/reminders.py --postgres --json  # on a PostgreSQL database made for the run

This is issue #14's benchmark. It starts the real service (`python -m dingbot.server`, mock mode,
CHECK_INTERVAL_SECONDS=60: the periodic check is only the safety net, the timer does the work) and a fake
DingTalk session webhook (bench/fake_webhook.py, its own process), then:

1. sets the reminders the way people do, through signed callbacks: each message asks the mock model to
   call `set_reminder` with a due time (to the second) and a unique token ("bench-000123") as the text,
   50 people, sent at --rate per second; due times spread evenly over --window seconds, starting
   --lead seconds after the first callback;
2. waits until every reminder was due and --patience seconds more;
3. reads from the fake webhook which tokens were reminded, how often, and when the first reminder of each
   arrived.

It reports the firing delay (the reminder's arrival at the fake webhook minus its due time: the timer,
the claim and outbox write, the send): p50/p90/p99/max, with the goal "p99 <= 1 s" beside it (printed, not
asserted); duplicates (tokens reminded more than once: must be 0) and lost (never reminded: must be 0);
reminders early (arrived before their due time: must be 0).

Then, in this process, the tool-call round trip: the same mock assistant (real prompts, a real SQLite
history) answering --samples plain messages and --samples messages that make the model call a tool
(`list_reminders`): the per-message difference is what the agent loop costs (binding the tools, the tool
call, the second model round) outside any model's own time.

Exit code: 0 when no reminder was lost, doubled or early; 1 otherwise; 2 when the bench could not run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.fake_webhook import fake_webhook
from bench.load import callback_body, signed_headers
from bench.processes import mock_settings, postgres_database, run_bench, scratch, start_service
from bench.report import percentile
from bench.settings import BENCH_SECRET, HOST

GOAL_P99_S = 1.0
TIMEZONE = "Asia/Shanghai"


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1000, help="reminders (default 1000)")
    parser.add_argument("--window", type=float, default=60.0, help="seconds their due times span (60)")
    parser.add_argument(
        "--lead", type=float, default=20.0, help="seconds from the first callback to the first due"
    )
    parser.add_argument("--rate", type=float, default=200.0, help="callbacks per second while setting (200)")
    parser.add_argument("--patience", type=float, default=30.0, help="seconds waited after the last due (30)")
    parser.add_argument("--samples", type=int, default=300, help="messages per kind for the tool round trip")
    parser.add_argument(
        "--postgres", action="store_true", help="PostgreSQL at 127.0.0.1:5432 (made, dropped)"
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    return parser.parse_args(argv)


def ask_text(due: float, token: str) -> str:
    when = datetime.fromtimestamp(due, ZoneInfo(TIMEZONE)).replace(tzinfo=None).isoformat(timespec="seconds")
    return "用工具 set_reminder " + json.dumps({"when": when, "text": token})


async def set_reminders(base: str, webhook: str, dues: list[float], rate: float) -> dict[str, Any]:
    run_id = f"{int(time.time()) % 100000:05d}"
    statuses: dict[int, int] = {}
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        started = time.perf_counter()

        async def send(n: int) -> None:
            await asyncio.sleep(max(0.0, started + n / rate - time.perf_counter()))
            body = callback_body(n, webhook, run_id, text=ask_text(dues[n], f"bench-{n:06d}"))
            response = await client.post(
                "/dingtalk/callback", content=body, headers=signed_headers(BENCH_SECRET)
            )
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

        await asyncio.gather(*(send(n) for n in range(len(dues))))
    return {"statuses": statuses, "seconds": time.perf_counter() - started}


def firing(args: argparse.Namespace) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        room = scratch(stack, "dinghook-reminders-")
        port = stack.enter_context(fake_webhook())
        webhook = f"http://{HOST}:{port}"
        settings = mock_settings(
            webhook, CHECK_INTERVAL_SECONDS="60", BOT_TIMEZONE=TIMEZONE, MAX_REMINDERS_PER_PERSON="1000"
        )
        if args.postgres:
            settings["DATABASE_URL"] = stack.enter_context(postgres_database())
        base = start_service(stack, room, settings)
        first_due = time.time() + args.lead
        dues = [round(first_due + args.window * n / args.count) for n in range(args.count)]
        sent = asyncio.run(set_reminders(base, webhook, dues, args.rate))
        while time.time() < max(dues) + args.patience:
            time.sleep(0.5)
        seen = httpx.get(f"{webhook}/tokens", timeout=10).json()["tokens"]
    delays, early, lost, doubled, confirmed = [], 0, 0, 0, 0
    for n, due in enumerate(dues):
        token = seen.get(f"bench-{n:06d}")
        if token is None or not token.get("reminders"):
            lost += 1
            continue
        confirmed += token["count"] - token["reminders"]
        doubled += token["reminders"] > 1
        delay = token["reminder_at"] - due
        early += delay < -0.05  # the webhook's clock and ours are this machine's: a little jitter
        delays.append(delay)
    return {
        "engine": "postgresql" if args.postgres else "sqlite",
        "reminders": args.count,
        "window_s": args.window,
        "check_interval_s": 60,
        "callbacks": sent["statuses"],
        "setting_took_s": round(sent["seconds"], 2),
        "confirmations": confirmed,
        "delay_s": {
            "p50": round(percentile(delays, 50), 3) if delays else None,
            "p90": round(percentile(delays, 90), 3) if delays else None,
            "p99": round(percentile(delays, 99), 3) if delays else None,
            "max": round(max(delays), 3) if delays else None,
        },
        "lost": lost,
        "duplicates": doubled,
        "early": early,
        "service_log_tail": room.log_lines[-3:],
    }


def round_trip(samples: int) -> dict[str, Any]:
    """The mock assistant answering plain messages and tool-calling ones, in this process."""
    import os

    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from agent.assembly import open_agent
    from agent.messages import IncomingMessage
    from agent.settings.config import Settings

    async def go(folder: Path) -> dict[str, list[float]]:
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None, force_mock_openai=True, database_path=folder / "rt.db", rate_limit_per_minute=0
        )
        timings: dict[str, list[float]] = {"plain": [], "tool": []}
        async with open_agent(settings, memory=False) as parts:
            for n in range(samples * 2 + 20):
                kind = "tool" if n % 2 else "plain"
                text = "我的提醒" if kind == "tool" else "你好"
                message = IncomingMessage(
                    message_id=f"rt{n}", conversation_id=f"c{n}", is_group=False, person_id=f"p{n % 7}",
                    sender_id=f"s{n}", sender_staff_id=f"u{n}", sender_nick="测试", text=text,
                )  # fmt: skip
                started = time.perf_counter()
                await parts.assistant.reply(message)
                if n >= 20:  # the first ones warm the caches up
                    timings[kind].append((time.perf_counter() - started) * 1000)
        return timings

    with tempfile.TemporaryDirectory(prefix="dinghook-roundtrip-") as folder:
        timings = asyncio.run(go(Path(folder)))
    plain, tool = statistics.median(timings["plain"]), statistics.median(timings["tool"])
    return {
        "samples": samples,
        "plain_p50_ms": round(plain, 2),
        "tool_p50_ms": round(tool, 2),
        "overhead_p50_ms": round(tool - plain, 2),
        "tool_p99_ms": round(percentile(timings["tool"], 99), 2),
    }


def render(result: dict[str, Any]) -> str:
    fire, trip = result["firing"], result["round_trip"]
    delay = fire["delay_s"]
    meets = delay["p99"] is not None and delay["p99"] <= GOAL_P99_S
    lines = [
        f"reminders: {fire['reminders']} due within {fire['window_s']:g} s, CHECK_INTERVAL_SECONDS=60, "
        f"{fire['engine']}",
        f"  set through {sum(fire['callbacks'].values())} callbacks in {fire['setting_took_s']} s "
        f"(HTTP statuses {fire['callbacks']}), {fire['confirmations']} confirmations",
        f"  firing delay (due -> at the webhook): p50 {delay['p50']} s · p90 {delay['p90']} s · "
        f"p99 {delay['p99']} s · max {delay['max']} s  (goal p99 <= {GOAL_P99_S:g} s: "
        f"{'meets' if meets else 'misses'})",
        f"  lost {fire['lost']} · duplicates {fire['duplicates']} · early {fire['early']}",
        f"tool-call round trip (mock model, in process, {trip['samples']} each): plain p50 "
        f"{trip['plain_p50_ms']} ms · with a tool call p50 {trip['tool_p50_ms']} ms "
        f"(p99 {trip['tool_p99_ms']} ms) · overhead p50 {trip['overhead_p50_ms']} ms",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)

    def run() -> dict[str, Any]:
        return {"firing": firing(args), "round_trip": round_trip(args.samples)}

    def ok(result: dict[str, Any]) -> bool:
        fire = result["firing"]
        return fire["lost"] == 0 and fire["duplicates"] == 0 and fire["early"] == 0

    return run_bench(run, render, ok, as_json=args.json)


if __name__ == "__main__":
    sys.exit(main())
