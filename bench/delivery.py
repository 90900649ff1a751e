"""Delivery under load: redelivered callbacks at a fixed rate, every message answered exactly once.

Run from the repository root:

    python bench/delivery.py                 # 1000 callbacks, 20% redeliveries, 200/s
    python bench/delivery.py --count 2000 --duplicates 0.3 --rate 300 --json

This is issue #4's benchmark: N signed callbacks, a share of them re-sends of an earlier msgId (the
same body byte for byte, as DingTalk redelivers), sent open-loop at a fixed total rate against the
running service, then a wait until every message has been answered. It reports:

* ack latency as the client sees it (send to complete 200 response): p50/p90/p99/max, with the
  target "ack p99 <= 10 ms" printed beside it (meets/misses; nothing is asserted about timing);
* how the callbacks were answered (200 vs non-200 or transport errors) and how the service classified
  them (`dingbot_callbacks_total` by outcome, scraped from GET /metrics);
* replies sent (POSTs at the fake webhook), distinct messages answered, duplicates sent (replies to a
  message beyond its first: must be 0) and lost (messages acknowledged with 200 that got no reply
  within --reply-timeout: must be 0);
* the achieved request rate, how late the sends were against the schedule, when the last reply
  arrived, and each message's reply delay (its first send to its reply at the fake webhook).

What it starts, all on 127.0.0.1 and all stopped at the end (also on error or Ctrl-C):

* the real service, `python -m dingbot.server`, in mock mode (FORCE_MOCK_OPENAI=1: a fake model whose
  reply quotes the person's text in 「…」) with a temporary DATABASE_PATH, SECRET set to the bench's
  signing secret, RATE_LIMIT_PER_MINUTE=0 (no per-person limit, so it never interferes), and
  DINGTALK_OAPI_BASE pointing at the fake webhook below; WORKERS and the rest at their defaults;
* a fake DingTalk session webhook (its own process, bench/fake_webhook.py) that answers every POST with
  errcode 0. Each message's text carries a unique token ("bench-000123"), which the mock reply quotes,
  so the webhook's `GET /tokens` tells how many replies each message got.

The messages come from 50 people (settings.PEOPLE), each in their own one-to-one conversation, so the
service works on them in parallel lanes. Re-sends are interleaved at random (seeded, --seed): about half
follow their original within 10 sends (usually while it is still being processed); the others come
anywhere in the run and repeat an original sent at least 20 positions earlier (often after its reply
went out). The report counts which case each re-send actually hit: before the original's ack came
back, after the ack but before its reply, or after its reply.

The load generator is one asyncio loop (uvloop) with an httpx connection pool: each request is sent at
its scheduled time whether or not earlier ones have been answered. It, the fake webhook and the service
all share this machine's cores (2 on the reference machine), so the figures include the client's own
cost and are not those of a service on a machine of its own. There is no warm-up: the first callbacks
are measured too.

Exit code: 0 when every callback got a 200 and every acknowledged message was answered exactly once;
1 when duplicates sent > 0, lost > 0 or any callback was not answered 200; 2 when the bench could not
run. The pieces it uses sit next to it: settings.py, fake_webhook.py, processes.py, load.py and
report.py (see bench/ack_latency.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import re
import sys
import time
from pathlib import Path
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

# The bench modules below need the repository on sys.path.
from bench.delivery_report import Send, build_result, functional_ok, render, token  # noqa: E402
from bench.fake_webhook import fake_webhook  # noqa: E402
from bench.load import ack_problem, callback_body, signed_headers  # noqa: E402
from bench.processes import cpu_count, run_bench, scratch, start_service  # noqa: E402
from bench.settings import BENCH_SECRET, HOST, REQUEST_TIMEOUT_S  # noqa: E402

RATE_LIMIT_PER_MINUTE = 0  # 0 = no per-person limit (the most the setting takes is 10000)
CLOSE_GAP_SLOTS = (1, 10)  # a "close" re-send follows its original within this many of its sends
LATE_MIN_SLOTS = 20  # a "late" re-send comes at least this many positions after its original
_CALLBACK_METRIC = re.compile(r'^dingbot_callbacks_total\{outcome="([^"]*)"\}\s+(\S+)$', re.MULTILINE)


def send_order(count: int, duplicates: float, seed: int) -> list[int]:
    """The message index of each of the `count` sends, in order; repeated indices are redeliveries.

    Originals go out in index order (position n for message n). Half the redeliveries, at random, follow
    a random original closely: 1-10 positions (CLOSE_GAP_SLOTS) later. The others are placed anywhere in
    the run and repeat a random original at least LATE_MIN_SLOTS positions earlier. One message may be
    redelivered more than once."""
    rng = random.Random(seed)
    redeliveries = round(count * duplicates)
    originals = count - redeliveries
    slots: list[tuple[float, int, int]] = [(float(n), 0, n) for n in range(originals)]
    for _ in range(redeliveries):
        if originals > LATE_MIN_SLOTS and rng.random() >= 0.5:
            at = rng.uniform(LATE_MIN_SLOTS, originals)
            n = rng.randrange(int(at) - LATE_MIN_SLOTS + 1)
        else:
            n = rng.randrange(originals)
            at = n + rng.randint(*CLOSE_GAP_SLOTS) + rng.random() / 2
        slots.append((at, 1, n))
    slots.sort()
    return [n for _, _, n in slots]


async def _post(client: httpx.AsyncClient, url: str, body: bytes, send: Send) -> None:
    headers = signed_headers(BENCH_SECRET)  # a fresh timestamp and signature, as DingTalk does per try
    send.wall = time.time()
    send.started = time.perf_counter()
    try:
        response = await client.post(url, content=body, headers=headers)
    except httpx.HTTPError as exc:
        send.problem = f"transport error {type(exc).__name__}"
        return
    send.latency_ms = (time.perf_counter() - send.started) * 1000
    send.status = response.status_code
    send.problem = ack_problem(response) or None


async def send_all(
    url: str | list[str], order: list[int], bodies: list[bytes], rate: float, connections: int
) -> list[Send]:
    """Open loop: send i goes out at start + i/rate whatever happened to the earlier ones. Several URLs
    (replicas behind a balancer) take the sends in turn."""
    urls = [url] if isinstance(url, str) else url
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    sends: list[Send] = []
    tasks: list[asyncio.Task[None]] = []
    seen: set[int] = set()
    async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT_S, limits=limits, trust_env=False) as client:
        start = time.perf_counter() + 0.05
        for i, n in enumerate(order):
            scheduled = start + i / rate
            # Always yield to the loop, even when late, so the requests already sent make progress.
            await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
            send = Send(n=n, redelivery=n in seen, scheduled=scheduled)
            seen.add(n)
            sends.append(send)
            tasks.append(asyncio.create_task(_post(client, urls[i % len(urls)], bodies[n], send)))
        await asyncio.gather(*tasks)
    return sends


def run_load(
    url: str | list[str], order: list[int], bodies: list[bytes], rate: float, connections: int
) -> list[Send]:
    try:
        import uvloop
    except ImportError:  # not on Windows; the default loop does the same, a little slower
        return asyncio.run(send_all(url, order, bodies, rate, connections))
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(send_all(url, order, bodies, rate, connections))


def _get_json(client: httpx.Client, url: str) -> Any:
    with contextlib.suppress(httpx.HTTPError, ValueError):
        response = client.get(url)
        if response.status_code == 200:
            return response.json()
    return None


def wait_for_replies(
    service_base: str, webhook_base: str, expected: set[str], timeout: float, settle: float
) -> tuple[dict[str, Any], float, int | None, bool]:
    """Poll until every expected token has a reply and the service has nothing in flight (or timeout),
    then wait `settle` s more so that a late second reply would still be counted.

    Returns the fake webhook's /tokens snapshot, the seconds waited, the last in_flight and whether
    everything was answered before the timeout."""
    started_at = time.monotonic()
    snapshot: dict[str, Any] = {"count": 0, "untagged": 0, "last_post_at": None, "tokens": {}}
    in_flight: int | None = None
    done = False
    with httpx.Client(timeout=2.0, trust_env=False) as client:
        while True:
            snapshot = _get_json(client, f"{webhook_base}/tokens") or snapshot
            health = _get_json(client, f"{service_base}/healthz")
            in_flight = health.get("in_flight") if isinstance(health, dict) else None
            done = expected <= snapshot["tokens"].keys() and in_flight == 0
            if done or time.monotonic() - started_at >= timeout:
                break
            time.sleep(0.2)
        waited = time.monotonic() - started_at
        if done and settle > 0:
            time.sleep(settle)
            snapshot = _get_json(client, f"{webhook_base}/tokens") or snapshot
            health = _get_json(client, f"{service_base}/healthz")
            in_flight = health.get("in_flight") if isinstance(health, dict) else in_flight
    return snapshot, waited, in_flight, done


def callback_outcomes(service_base: str) -> dict[str, int]:
    """dingbot_callbacks_total by outcome, from the service's GET /metrics."""
    with httpx.Client(timeout=2.0, trust_env=False) as client:
        text = client.get(f"{service_base}/metrics").text
    return {outcome: round(float(value)) for outcome, value in _CALLBACK_METRIC.findall(text)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    run_id = f"{os.getpid():x}{int(time.time()):x}"
    cpus = cpu_count()
    with contextlib.ExitStack() as stack:
        room = scratch(stack)
        log_lines = room.log_lines
        webhook_port = stack.enter_context(fake_webhook())
        webhook_base = f"http://{HOST}:{webhook_port}"

        service_base = start_service(
            stack,
            room,
            {
                "FORCE_MOCK_OPENAI": "1",
                "SECRET": BENCH_SECRET,
                "DINGTALK_OAPI_BASE": webhook_base,
                "RATE_LIMIT_PER_MINUTE": str(RATE_LIMIT_PER_MINUTE),
            },
        )

        order = send_order(args.count, args.duplicates, args.seed)
        messages = max(order) + 1
        bodies = [
            callback_body(n, webhook_base, run_id, text=f"{token(n)} 你好，这是第 {n} 条基准消息")
            for n in range(messages)
        ]
        load_started_wall = time.time()
        sends = run_load(f"{service_base}/dingtalk/callback", order, bodies, args.rate, args.connections)
        load_ended_wall = time.time()

        acknowledged = {send.n for send in sends if send.status == 200 and not send.problem}
        expected = {token(n) for n in acknowledged}
        snapshot, waited, in_flight, all_answered = wait_for_replies(
            service_base, webhook_base, expected, args.reply_timeout, args.settle
        )
        outcomes = callback_outcomes(service_base)

    return build_result(
        args,
        cpus=cpus,
        messages=messages,
        sends=sends,
        acknowledged=acknowledged,
        snapshot=snapshot,
        waited=waited,
        in_flight=in_flight,
        all_answered=all_answered,
        outcomes=outcomes,
        load_wall=(load_started_wall, load_ended_wall),
        log_lines=log_lines,
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Redelivered callbacks at a fixed rate: acks and replies.")
    parser.add_argument("--count", type=int, default=1000, help="callbacks in all (default 1000)")
    parser.add_argument(
        "--duplicates",
        type=float,
        default=0.2,
        help="share of the callbacks that re-send an earlier msgId (default 0.2)",
    )
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second (default 200)")
    parser.add_argument(
        "--connections", type=int, default=32, help="client connection pool size (default 32)"
    )
    parser.add_argument("--seed", type=int, default=4, help="seed of the redelivery interleaving (default 4)")
    parser.add_argument(
        "--reply-timeout", type=float, default=60.0, help="seconds to wait for all replies (default 60)"
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=2.0,
        help="seconds to keep counting once all are answered, for late duplicates (default 2)",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    if args.count < 1 or args.rate <= 0 or args.connections < 1:
        parser.error("--count and --connections must be >= 1 and --rate > 0")
    if not 0 <= args.duplicates < 1 or args.count - round(args.count * args.duplicates) < 1:
        parser.error("--duplicates must be in [0, 1) and leave at least one original message")
    if args.count - round(args.count * args.duplicates) > 1_000_000:
        parser.error("at most 1,000,000 distinct messages (the token has 6 digits)")
    if args.reply_timeout < 0 or args.settle < 0:
        parser.error("--reply-timeout and --settle must be >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_bench(lambda: run(args), render, functional_ok, as_json=args.json)


if __name__ == "__main__":
    sys.exit(main())
