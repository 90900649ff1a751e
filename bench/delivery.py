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
import math
import os
import random
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

# The bench modules below need the repository on sys.path.
from bench.fake_webhook import fake_webhook  # noqa: E402
from bench.load import ack_problem, callback_body, signed_headers  # noqa: E402
from bench.processes import cpu_count, run_bench, scratch, start_service  # noqa: E402
from bench.report import percentile  # noqa: E402
from bench.settings import BENCH_SECRET, HOST, PEOPLE, REQUEST_TIMEOUT_S, TARGET_ACK_P99_MS  # noqa: E402

RATE_LIMIT_PER_MINUTE = 0  # 0 = no per-person limit (the most the setting takes is 10000)
CLOSE_GAP_SLOTS = (1, 10)  # a "close" re-send follows its original within this many of its sends
LATE_MIN_SLOTS = 20  # a "late" re-send comes at least this many positions after its original
_CALLBACK_METRIC = re.compile(r'^dingbot_callbacks_total\{outcome="([^"]*)"\}\s+(\S+)$', re.MULTILINE)


def token(n: int) -> str:
    """The marker in message n's text; bench.fake_webhook.TOKEN_PATTERN finds it in the replies."""
    return f"bench-{n:06d}"


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


@dataclass
class Send:
    """One POST /dingtalk/callback as the client saw it."""

    n: int  # message index (several sends share it when redelivered)
    redelivery: bool
    scheduled: float  # perf_counter seconds
    started: float = math.nan  # perf_counter seconds
    wall: float = math.nan  # time.time() at the send, to compare with the fake webhook's clock
    latency_ms: float = math.nan  # send to complete response; NaN on a transport error
    status: int | None = None
    problem: str = ""  # "" for a 200 with the empty ack


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
    url: str, order: list[int], bodies: list[bytes], rate: float, connections: int
) -> list[Send]:
    """Open loop: send i goes out at start + i/rate whatever happened to the earlier ones."""
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
            tasks.append(asyncio.create_task(_post(client, url, bodies[n], send)))
        await asyncio.gather(*tasks)
    return sends


def run_load(url: str, order: list[int], bodies: list[bytes], rate: float, connections: int) -> list[Send]:
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


def _stats(values: list[float]) -> dict[str, float]:
    return {
        "count": len(values),
        "p50_ms": round(percentile(values, 50), 3),
        "p90_ms": round(percentile(values, 90), 3),
        "p99_ms": round(percentile(values, 99), 3),
        "max_ms": round(max(values), 3) if values else math.nan,
        "mean_ms": round(sum(values) / len(values), 3) if values else math.nan,
    }


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


def build_result(
    args: argparse.Namespace,
    *,
    cpus: int | None,
    messages: int,
    sends: list[Send],
    acknowledged: set[int],
    snapshot: dict[str, Any],
    waited: float,
    in_flight: int | None,
    all_answered: bool,
    outcomes: dict[str, int],
    load_wall: tuple[float, float],
    log_lines: list[str],
) -> dict[str, Any]:
    """Everything a run found, as printed with --json."""
    replies: dict[str, dict[str, float]] = snapshot["tokens"]
    first_send: dict[int, Send] = {}
    for send in sends:
        first_send.setdefault(send.n, send)

    latencies = [send.latency_ms for send in sends if not math.isnan(send.latency_ms)]
    problems = Counter(send.problem for send in sends if send.problem)
    lags_ms = [(send.started - send.scheduled) * 1000 for send in sends]
    span = sends[-1].started - sends[0].started if len(sends) > 1 else math.nan

    duplicate_replies = {t: int(r["count"]) - 1 for t, r in replies.items() if r["count"] > 1}
    lost = sorted(n for n in acknowledged if token(n) not in replies)
    unexpected = sorted(set(replies) - {token(n) for n in range(messages)})

    # Where each redelivery landed: before the original's ack came back, before its reply, or after.
    landed: Counter[str] = Counter()
    for send in sends:
        if not send.redelivery:
            continue
        original = first_send[send.n]
        reply = replies.get(token(send.n))
        if math.isnan(original.latency_ms) or send.started < original.started + original.latency_ms / 1000:
            landed["before_original_ack"] += 1
        elif reply is None or send.wall < reply["first_at"]:
            landed["before_original_reply"] += 1
        else:
            landed["after_original_reply"] += 1

    reply_delays_ms = [
        (replies[token(n)]["first_at"] - send.wall) * 1000
        for n, send in first_send.items()
        if token(n) in replies
    ]
    last_post_at = snapshot.get("last_post_at")
    redelivered = sum(send.redelivery for send in sends)
    return {
        "config": {
            "count": len(sends),
            "messages": messages,
            "redeliveries": redelivered,
            "duplicates_share": args.duplicates,
            "rate_per_s": args.rate,
            "connections": args.connections,
            "seed": args.seed,
            "people": PEOPLE,
            "reply_timeout_s": args.reply_timeout,
            "settle_s": args.settle,
            "cpus": cpus,
            "python": sys.version.split()[0],
        },
        "acks": {
            **_stats(latencies),
            "ok_200": sum(1 for send in sends if send.status == 200 and not send.problem),
            "not_ok": sum(problems.values()),
            "problems": dict(problems),
        },
        "pacing": {
            "achieved_rate_per_s": round((len(sends) - 1) / span, 1) if span and span > 0 else None,
            "send_lag_p99_ms": round(percentile(lags_ms, 99), 3),
            "send_lag_max_ms": round(max(lags_ms), 3) if lags_ms else math.nan,
            "load_seconds": round(load_wall[1] - load_wall[0], 2),
        },
        "service_outcomes": outcomes,
        "replies": {
            "sent": snapshot["count"],
            "untagged": snapshot["untagged"],
            "messages_acknowledged": len(acknowledged),
            "messages_answered": len(set(replies) & {token(n) for n in acknowledged}),
            "duplicates_sent": sum(duplicate_replies.values()),
            "duplicate_tokens": dict(sorted(duplicate_replies.items())),
            "lost": len(lost),
            "lost_tokens": [token(n) for n in lost],
            "unexpected_tokens": unexpected,
            "all_answered_in_time": all_answered,
            "waited_s": round(waited, 2),
            "in_flight_at_end": in_flight,
            "last_reply_after_first_send_s": (
                round(last_post_at - sends[0].wall, 2) if last_post_at and sends else None
            ),
            "last_reply_after_load_end_s": round(last_post_at - load_wall[1], 2) if last_post_at else None,
            "reply_delay": _stats(reply_delays_ms),
        },
        "redeliveries_landed": {
            key: landed[key]
            for key in ("before_original_ack", "before_original_reply", "after_original_reply")
        },
        "targets": {"ack_p99_ms": TARGET_ACK_P99_MS},
        "meets": {"ack_p99": bool(latencies) and percentile(latencies, 99) <= TARGET_ACK_P99_MS},
        "service_log_tail": log_lines,  # LOG_LEVEL=WARNING: anything here deserves a look
        "note": (
            f"the load generator, the fake webhook and the service all share this machine's {cpus} CPU "
            f"core(s); the ack figures include the client's own cost"
        ),
    }


def functional_ok(result: dict[str, Any]) -> bool:
    replies = result["replies"]
    return replies["duplicates_sent"] == 0 and replies["lost"] == 0 and result["acks"]["not_ok"] == 0


def _listed(items: list[str] | dict[str, int], limit: int = 20) -> str:
    shown = [f"{k} (+{v})" for k, v in items.items()] if isinstance(items, dict) else list(items)
    more = f" ... and {len(shown) - limit} more" if len(shown) > limit else ""
    return ", ".join(shown[:limit]) + more


def render(result: dict[str, Any]) -> str:
    cfg, acks, pacing, replies = result["config"], result["acks"], result["pacing"], result["replies"]
    landed, outcomes = result["redeliveries_landed"], result["service_outcomes"]
    verdict = "meets" if result["meets"]["ack_p99"] else "MISSES"
    delay = replies["reply_delay"]
    lines = [
        f"DingHook delivery under load: {cfg['count']} signed callbacks = {cfg['messages']} messages + "
        f"{cfg['redeliveries']} redeliveries ({cfg['duplicates_share']:.0%}), open loop at "
        f"{cfg['rate_per_s']:g}/s, {cfg['people']} people, mock model, local fake DingTalk, "
        f"seed {cfg['seed']}, Python {cfg['python']}",
        f"note: {result['note']}",
        "",
        f"ack latency (client-side, send to full response, {acks['count']} answered):",
        f"  p50 {acks['p50_ms']:.2f} ms   p90 {acks['p90_ms']:.2f} ms   p99 {acks['p99_ms']:.2f} ms   "
        f"max {acks['max_ms']:.2f} ms   mean {acks['mean_ms']:.2f} ms",
        f"  ack p99 {acks['p99_ms']:.2f} ms   target <= {result['targets']['ack_p99_ms']:g} ms: {verdict}",
        f"callbacks answered 200: {acks['ok_200']}   not 200 / errors: {acks['not_ok']}"
        + (f" ({_listed([f'{k} x{v}' for k, v in acks['problems'].items()])})" if acks["problems"] else ""),
        f"service classified: {outcomes.get('accepted', 0)} accepted, {outcomes.get('duplicate', 0)} "
        f"duplicate"
        + "".join(
            f", {v} {k}" for k, v in sorted(outcomes.items()) if k not in ("accepted", "duplicate") and v
        )
        + f"   (sent: {cfg['messages']} messages, {cfg['redeliveries']} redeliveries)",
        f"pacing: achieved {pacing['achieved_rate_per_s']} req/s over {pacing['load_seconds']:.2f} s; "
        f"send lag behind schedule p99 {pacing['send_lag_p99_ms']:.2f} ms, "
        f"max {pacing['send_lag_max_ms']:.2f} ms",
        f"redeliveries landed: {landed['before_original_ack']} before the original's ack, "
        f"{landed['before_original_reply']} after its ack but before its reply, "
        f"{landed['after_original_reply']} after its reply",
        "",
        f"replies sent (POSTs at the fake webhook): {replies['sent']}"
        + (f" ({replies['untagged']} without a message token)" if replies["untagged"] else ""),
        f"messages answered: {replies['messages_answered']} of {replies['messages_acknowledged']} "
        "acknowledged",
        f"duplicates sent: {replies['duplicates_sent']} (must be 0)"
        + (f": {_listed(replies['duplicate_tokens'])}" if replies["duplicate_tokens"] else ""),
        f"lost: {replies['lost']} (must be 0)"
        + (f": {_listed(replies['lost_tokens'])}" if replies["lost_tokens"] else ""),
    ]
    if replies["unexpected_tokens"]:
        lines.append(f"replies quoting no message of this run: {_listed(replies['unexpected_tokens'])}")
    lines += [
        f"last reply arrived {replies['last_reply_after_first_send_s']} s after the first send "
        f"({replies['last_reply_after_load_end_s']} s after the last send); "
        + (
            f"all answered and nothing in flight after {replies['waited_s']:.1f} s of waiting "
            f"(+{cfg['settle_s']:g} s settle)"
            if replies["all_answered_in_time"]
            else f"NOT all answered within {cfg['reply_timeout_s']:g} s "
            f"(in flight at the end: {replies['in_flight_at_end']})"
        ),
        f"reply delay (first send to reply at the webhook): p50 {delay['p50_ms']:.0f} ms   "
        f"p90 {delay['p90_ms']:.0f} ms   p99 {delay['p99_ms']:.0f} ms   max {delay['max_ms']:.0f} ms",
    ]
    if result["service_log_tail"]:
        lines += ["", "service log (WARNING and up), last lines:"]
        lines += [f"  {line}" for line in result["service_log_tail"]]
    lines += ["", "result: " + ("ok" if functional_ok(result) else "FAILED (duplicates, lost or non-200)")]
    return "\n".join(lines)


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
