"""Stream ack latency: from a CALLBACK frame pushed by a fake DingTalk gateway to its ack, as the gateway
sees it (both times taken in the gateway's process, `time.monotonic()`).

Run from the repository root:

    python bench/stream_ack.py                   # 2000 messages, one at a time (push, wait for the ack)
    python bench/stream_ack.py --count 500 --rate 100 --redeliver 50 --json

What it starts, all on 127.0.0.1 and all stopped at the end (also on error or Ctrl-C):

* the real service, `python -m dingbot.server`, in mock mode (FORCE_MOCK_OPENAI=1) with
  DINGTALK_MODE=stream, app credentials, DINGTALK_API_BASE pointing at the fake gateway and
  DINGTALK_OAPI_BASE at the fake webhook, a temporary DATABASE_PATH, no public URL used;
* the fake gateway (tests/fakes/gateway.py: connections/open over HTTP and the WebSocket, each in a
  thread of this process), which pushes the messages and records the acks;
* the fake session webhook (bench/fake_webhook.py, its own process) that counts the replies.

The service freezes its startup heap out of the garbage collector (api/app.py: `gc.freeze()`); before
that, full collections of its large heap stalled the event loop for ~0.1-0.2 s and set the max (measured:
max 156 ms without, 11 ms with, over 2000 sequential frames).

Redeliveries (`--redeliver N`): N of the measured messages are pushed again in new frames (new frame
messageId, same msgId); they must be acked and must not be answered again.

The exit code is 1 when something functional went wrong (a frame not acked, not every message answered,
or a redelivery answered), 2 when the bench could not run. Timing is reported, never asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

# The bench modules below need the repository on sys.path.
from bench.fake_webhook import fake_webhook  # noqa: E402
from bench.load import Pacer, callback_body, in_flight, wait_for_replies  # noqa: E402
from bench.processes import cpu_count, run_bench, scratch, start_service  # noqa: E402
from bench.report import percentile  # noqa: E402
from bench.settings import HOST, STARTUP_TIMEOUT_S  # noqa: E402
from tests.fakes.gateway import CLIENT_ID, CLIENT_SECRET, FakeGateway  # noqa: E402

TARGET_ACK_MS = 100.0  # "a message pushed by the gateway is acked within 100 ms"
ACK_TIMEOUT_S = 10.0


def stats(values: list[float]) -> dict[str, Any]:
    return {
        "count": len(values),
        "p50_ms": round(percentile(values, 50), 3),
        "p90_ms": round(percentile(values, 90), 3),
        "p99_ms": round(percentile(values, 99), 3),
        "max_ms": round(max(values), 3) if values else None,
    }


def push_all(
    gateway: FakeGateway, bodies: list[dict[str, Any]], pacer: Pacer, sequential: bool
) -> list[float]:
    """Push each body in a new frame; the push-to-ack latencies in ms (missing acks are left out)."""
    frames = []
    latencies = []
    for body in bodies:
        pacer.wait()
        frame_id = gateway.push(body)
        frames.append(frame_id)
        if sequential:
            with contextlib.suppress(AssertionError):  # counted as missing
                latencies.append(gateway.latency(gateway.wait_ack(frame_id, ACK_TIMEOUT_S)) * 1000)
    if not sequential:
        for frame_id in frames:
            with contextlib.suppress(AssertionError):
                latencies.append(gateway.latency(gateway.wait_ack(frame_id, ACK_TIMEOUT_S)) * 1000)
    return latencies


def run(args: argparse.Namespace) -> dict[str, Any]:
    run_id = f"{os.getpid():x}{int(time.time()):x}"
    cpus = cpu_count()
    with contextlib.ExitStack() as stack:
        room = scratch(stack, "dinghook-stream-bench-")
        log_lines = room.log_lines
        webhook_base = f"http://{HOST}:{stack.enter_context(fake_webhook())}"
        gateway = FakeGateway().start()
        stack.callback(gateway.stop)
        service_base = start_service(
            stack,
            room,
            {
                "FORCE_MOCK_OPENAI": "1",
                "DINGTALK_MODE": "stream",
                "DINGTALK_CLIENT_ID": CLIENT_ID,
                "DINGTALK_CLIENT_SECRET": CLIENT_SECRET,
                "DINGTALK_API_BASE": gateway.url,
                "DINGTALK_OAPI_BASE": webhook_base,
            },
        )
        gateway.wait_socket(1, timeout=STARTUP_TIMEOUT_S)

        total = args.warmup + args.count
        bodies = [json.loads(callback_body(n, webhook_base, run_id)) for n in range(total)]
        sequential = not args.rate
        pacer = Pacer(args.rate)
        push_all(gateway, bodies[: args.warmup], pacer, sequential)
        measure_started = time.perf_counter()
        latencies = push_all(gateway, bodies[args.warmup :], pacer, sequential)
        measure_seconds = time.perf_counter() - measure_started
        replies, waited = wait_for_replies(webhook_base, total, args.reply_timeout)

        step = max(1, args.count // args.redeliver) if args.redeliver else 0
        again = bodies[args.warmup :: step][: args.redeliver] if step else []
        redelivery_latencies = push_all(gateway, again, Pacer(0), True)
        time.sleep(1.0)  # room for a wrong second answer to arrive
        final, _ = wait_for_replies(webhook_base, total, 0)
        backlog = in_flight(service_base)
        sockets = len(gateway.sockets)

    ack = stats(latencies)
    return {
        "config": {
            "count": args.count,
            "warmup": args.warmup,
            "redeliver": len(again),
            "mode": f"paced at {args.rate:g} msg/s" if args.rate else "sequential (push, wait for the ack)",
            "cpus": cpus,
            "python": sys.version.split()[0],
        },
        "ack": ack,
        "redelivery_ack": stats(redelivery_latencies),
        "target_ack_ms": TARGET_ACK_MS,
        "meets": ack["max_ms"] is not None and ack["max_ms"] <= TARGET_ACK_MS,
        "missing_acks": args.count - len(latencies) + len(again) - len(redelivery_latencies),
        "replies": {
            "expected": total,
            "received": final["count"],
            "distinct_sessions": final["distinct_sessions"],
            "waited_s": round(waited, 2),
            "before_redeliveries": replies["count"],
            "in_flight_after_load": backlog,
        },
        "gateway_sockets": sockets,
        "measure_seconds": round(measure_seconds, 2),
        "service_log_tail": log_lines,
        "note": (
            f"the service, the fake gateway (this process) and the fake webhook share this machine's "
            f"{cpus} CPU core(s); the latency includes the gateway's own send and receive work"
        ),
    }


def functional_ok(result: dict[str, Any]) -> bool:
    replies = result["replies"]
    return bool(
        result["missing_acks"] == 0
        and replies["received"] == replies["expected"]
        and replies["distinct_sessions"] == replies["expected"]
    )


def render(result: dict[str, Any]) -> str:
    cfg, ack, again, replies = result["config"], result["ack"], result["redelivery_ack"], result["replies"]
    lines = [
        f"DingHook Stream ack latency: {cfg['count']} CALLBACK frames ({cfg['warmup']} warm-up), "
        f"{cfg['mode']}, Python {cfg['python']}",
        f"note: {result['note']}",
        "",
        f"{'':12}{'count':>7}{'p50':>9}{'p90':>9}{'p99':>9}{'max':>9}   (ms, push to ack at the gateway)",
    ]
    for name, s in (("ack", ack), ("redelivery", again)):
        if s["count"]:
            lines.append(
                f"{name:12}{s['count']:>7}{s['p50_ms']:>9.2f}{s['p90_ms']:>9.2f}{s['p99_ms']:>9.2f}"
                f"{s['max_ms']:>9.2f}"
            )
    lines += [
        "",
        f"every ack within {result['target_ack_ms']:g} ms: {'meets' if result['meets'] else 'MISSES'}",
        f"frames not acked: {result['missing_acks']}",
        f"replies at the fake webhook: {replies['received']} of {replies['expected']} expected "
        f"({replies['distinct_sessions']} distinct sessions; {replies['before_redeliveries']} before the "
        f"{cfg['redeliver']} redeliveries), after waiting {replies['waited_s']:.1f} s",
        f"gateway sockets opened: {result['gateway_sockets']}; measured phase took "
        f"{result['measure_seconds']:.1f} s",
    ]
    if result["service_log_tail"]:
        lines += ["", "service log (WARNING and up), last lines:"]
        lines += [f"  {line}" for line in result["service_log_tail"]]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Stream ack latency, push to ack, at a fake gateway.")
    parser.add_argument("--count", type=int, default=2000, help="measured messages (default 2000)")
    parser.add_argument("--warmup", type=int, default=50, help="uncounted messages first (default 50)")
    parser.add_argument(
        "--rate", type=float, default=0.0, help="messages per second (default: one at a time, back to back)"
    )
    parser.add_argument(
        "--redeliver", type=int, default=20, help="measured messages pushed again in new frames (default 20)"
    )
    parser.add_argument(
        "--reply-timeout", type=float, default=60.0, help="seconds to wait for all replies (default 60)"
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    if args.count < 1 or args.warmup < 0 or args.rate < 0 or args.redeliver < 0 or args.reply_timeout < 0:
        parser.error("--count must be >= 1; --warmup, --rate, --redeliver and --reply-timeout >= 0")
    args.redeliver = min(args.redeliver, args.count)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_bench(lambda: run(args), render, functional_ok, as_json=args.json)


if __name__ == "__main__":
    sys.exit(main())
