"""Replicas: acks and answered messages per second for one replica on SQLite, one on PostgreSQL and two
on PostgreSQL, in one run with the same client; then memory recall at 10k memories on a Chroma server.

Run from the repository root (PostgreSQL at 127.0.0.1:5432 with trust auth, as on the project's
machines; `chroma` from this virtualenv):

    python bench/replicas.py                       # 1000 callbacks, 20% redeliveries, 200/s per setup
    python bench/replicas.py --count 2000 --rate 300 --memories 0   # skip the memory part

Each setup gets fresh storage: SQLite in a temporary folder (embedded memory store), or a PostgreSQL
database made for the run (dropped at the end) with a Chroma server of its own. The same open-loop load
(bench/delivery.py's schedule: redeliveries interleaved, each a byte-for-byte re-send) goes to the
replicas round-robin, as a load balancer would. Per setup it prints ack p50/p99 as the client sees them,
answered messages per second (distinct messages answered / first send to last reply), duplicates and
lost messages (both must be 0). Everything runs on this machine's cores (2 on the reference machine):
two replicas share them with PostgreSQL, Chroma, the fake webhook and the client, so a second replica
cannot double the figure here; the bench reports what it measured. Asserts nothing about timing.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.delivery import run_load, send_order  # noqa: E402
from bench.delivery_report import token  # noqa: E402
from bench.fake_webhook import fake_webhook  # noqa: E402
from bench.load import callback_body  # noqa: E402
from bench.processes import (  # noqa: E402
    chroma_server,
    cpu_count,
    mock_settings,
    postgres_database,
    scratch,
    start_service,
)
from bench.settings import HOST  # noqa: E402

SETUPS = (
    ("1 replica, SQLite", 1, False),
    ("1 replica, PostgreSQL", 1, True),
    ("2 replicas, PostgreSQL", 2, True),
)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))] if ordered else float("nan")


def wait_answered(webhook: str, expected: set[str], timeout: float, settle: float) -> dict[str, Any]:
    started = time.monotonic()
    snapshot: dict[str, Any] = {"tokens": {}}
    with httpx.Client(timeout=2.0, trust_env=False) as client:
        while time.monotonic() - started < timeout:
            with contextlib.suppress(httpx.HTTPError, ValueError):
                snapshot = client.get(f"{webhook}/tokens").json()
            if expected <= snapshot["tokens"].keys():
                break
            time.sleep(0.2)
        time.sleep(settle)  # a late second reply would still be counted
        with contextlib.suppress(httpx.HTTPError, ValueError):
            snapshot = client.get(f"{webhook}/tokens").json()
    return snapshot


def run_setup(name: str, replicas: int, postgres: bool, args: argparse.Namespace) -> dict[str, Any]:
    run_id = f"{os.getpid():x}{int(time.time()):x}"
    with contextlib.ExitStack() as stack:
        room = scratch(stack)
        webhook = f"http://{HOST}:{stack.enter_context(fake_webhook())}"
        settings = mock_settings(webhook)
        if postgres:
            settings["DATABASE_URL"] = stack.enter_context(postgres_database())
            settings["CHROMA_URL"] = stack.enter_context(chroma_server(room.folder / "chroma"))
        bases = []
        for n in range(replicas):
            replica_room = scratch(stack, prefix=f"dinghook-bench-{n}-")
            bases.append(start_service(stack, replica_room, settings))
        order = send_order(args.count, args.duplicates, args.seed)
        bodies = [
            callback_body(n, webhook, run_id, text=f"{token(n)} 你好，这是第 {n} 条基准消息")
            for n in range(max(order) + 1)
        ]
        first_send = time.time()
        sends = run_load(
            [f"{base}/dingtalk/callback" for base in bases], order, bodies, args.rate, args.connections
        )
        acked = {s.n for s in sends if s.status == 200 and not s.problem}
        snapshot = wait_answered(webhook, {token(n) for n in acked}, args.reply_timeout, args.settle)
    tokens = snapshot["tokens"]
    answered = [t for t in (token(n) for n in acked) if t in tokens]
    last = max((tokens[t]["first_at"] for t in answered), default=first_send)
    latencies = [s.latency_ms for s in sends if s.latency_ms is not None]
    return {
        "setup": name,
        "callbacks": len(sends),
        "not_200": sum(1 for s in sends if s.status != 200 or s.problem),
        "ack_p50_ms": statistics.median(latencies),
        "ack_p99_ms": pct(latencies, 99),
        "answered": len(answered),
        "answered_per_s": len(answered) / max(last - first_send, 1e-9),
        "duplicates": sum(int(seen["count"]) - 1 for seen in tokens.values() if seen["count"] > 1),
        "lost": len(acked) - len(answered),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000, help="callbacks per setup")
    parser.add_argument("--duplicates", type=float, default=0.2, help="share of re-sends")
    parser.add_argument("--rate", type=float, default=200.0, help="callbacks per second, open loop")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--reply-timeout", type=float, default=120.0)
    parser.add_argument("--settle", type=float, default=2.0)
    parser.add_argument(
        "--memories", type=int, default=10000, help="memory part: memories on Chroma (0: skip)"
    )
    args = parser.parse_args(argv)
    print(
        f"DingHook replicas bench: {args.count} callbacks ({args.duplicates:.0%} re-sends) "
        f"at {args.rate:g}/s per setup, mock model, {cpu_count()} cores shared by everything"
    )
    header = ("setup", "ack p50", "ack p99", "answered/s", "dup", "lost", "non-200")
    print("{:<24} {:>8} {:>8} {:>11} {:>4} {:>5} {:>8}".format(*header))
    ok = True
    for name, replicas, postgres in SETUPS:
        result = run_setup(name, replicas, postgres, args)
        ok = ok and result["duplicates"] == 0 and result["lost"] == 0
        print(
            f"{name:<24} {result['ack_p50_ms']:>6.2f}ms {result['ack_p99_ms']:>6.2f}ms "
            f"{result['answered_per_s']:>11.0f} {result['duplicates']:>4} {result['lost']:>5} "
            f"{result['not_200']:>8}",
            flush=True,
        )
    if args.memories:
        from bench.memory_search import run_on_chroma

        run_on_chroma(args.memories)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
