"""Statistics and the report of the ack-latency bench: the result dict, its verdicts, text and JSON."""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any

from bench.load import Endpoint
from bench.settings import PEOPLE, TARGET_ACK_P99_MS, TARGET_OVERHEAD_P50_MS


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def summarize(endpoint: Endpoint) -> dict[str, Any]:
    values = endpoint.latencies_ms
    return {
        "count": len(values),
        "p50_ms": round(percentile(values, 50), 3),
        "p90_ms": round(percentile(values, 90), 3),
        "p99_ms": round(percentile(values, 99), 3),
        "max_ms": round(max(values), 3) if values else math.nan,
        "mean_ms": round(sum(values) / len(values), 3) if values else math.nan,
        "problems": dict(endpoint.problems),
    }


def build_result(
    args: argparse.Namespace,
    *,
    cpus: int | None,
    callback: Endpoint,
    echo: Endpoint,
    expected_replies: int,
    replies: dict[str, int],
    waited: float,
    backlog: int | None,
    measure_seconds: float,
    log_lines: list[str],
) -> dict[str, Any]:
    """Everything a run found, as printed with --json."""
    cb, ec = summarize(callback), summarize(echo)
    return {
        "config": {
            "count": args.count,
            "warmup": args.warmup,
            "block": args.block,
            "rate_per_s": args.rate or None,
            "mode": f"paced at {args.rate:g} req/s" if args.rate else "sequential, back to back",
            "people": PEOPLE,
            "cpus": cpus,
            "python": sys.version.split()[0],
        },
        "callback": cb,
        "echo": ec,
        "overhead": {
            "p50_ms": round(cb["p50_ms"] - ec["p50_ms"], 3),
            "p99_ms": round(cb["p99_ms"] - ec["p99_ms"], 3),
        },
        "targets": {"ack_p99_ms": TARGET_ACK_P99_MS, "overhead_p50_ms": TARGET_OVERHEAD_P50_MS},
        "meets": {
            "ack_p99": cb["p99_ms"] <= TARGET_ACK_P99_MS,
            "overhead_p50": cb["p50_ms"] - ec["p50_ms"] <= TARGET_OVERHEAD_P50_MS,
        },
        "replies": {
            "expected": expected_replies,
            "received": replies["count"],
            "distinct_sessions": replies["distinct_sessions"],
            "waited_s": round(waited, 2),
            "in_flight_after_load": backlog,
        },
        "measure_seconds": round(measure_seconds, 2),
        "service_log_tail": log_lines,  # LOG_LEVEL=WARNING: anything here deserves a look
        "note": (
            f"the load generator, the fake webhook, the service and the echo baseline all share this "
            f"machine's {cpus} CPU core(s); figures include the client's own cost"
        ),
    }


def functional_ok(result: dict[str, Any]) -> bool:
    replies = result["replies"]
    return (
        not result["callback"]["problems"]
        and not result["echo"]["problems"]
        and replies["received"] == replies["expected"]
        and replies["distinct_sessions"] == replies["expected"]
    )


def render(result: dict[str, Any]) -> str:
    cfg, targets, meets = result["config"], result["targets"], result["meets"]
    verdict = {True: "meets", False: "MISSES"}
    lines = [
        f"DingHook ack latency: {cfg['count']} signed callbacks vs a bare FastAPI echo "
        f"({cfg['warmup']} warm-up each, blocks of {cfg['block']} alternating, {cfg['mode']}, "
        f"{cfg['people']} people, Python {cfg['python']})",
        f"note: {result['note']}",
        "",
        f"{'':10}{'count':>7}{'p50':>9}{'p90':>9}{'p99':>9}{'max':>9}{'mean':>9}   (ms, client-side)",
    ]
    for name in ("callback", "echo"):
        s = result[name]
        lines.append(
            f"{name:10}{s['count']:>7}{s['p50_ms']:>9.2f}{s['p90_ms']:>9.2f}{s['p99_ms']:>9.2f}"
            f"{s['max_ms']:>9.2f}{s['mean_ms']:>9.2f}"
        )
    overhead = result["overhead"]
    lines += [
        "",
        f"ack p99 (callback):         {result['callback']['p99_ms']:8.2f} ms   target <= "
        f"{targets['ack_p99_ms']:g} ms: {verdict[meets['ack_p99']]}",
        f"overhead p50 (cb - echo):   {overhead['p50_ms']:8.2f} ms   target <= "
        f"{targets['overhead_p50_ms']:g} ms: {verdict[meets['overhead_p50']]}",
        f"overhead p99 (cb - echo):   {overhead['p99_ms']:8.2f} ms",
    ]
    replies = result["replies"]
    lines += [
        "",
        f"replies at the fake webhook: {replies['received']} of {replies['expected']} expected "
        f"({replies['distinct_sessions']} distinct sessions), after waiting {replies['waited_s']:.1f} s; "
        f"{replies['in_flight_after_load']} message(s) were still in flight when the load ended",
        f"measured phase took {result['measure_seconds']:.1f} s",
    ]
    problems = [
        f"{name}: {what} x{n}"
        for name in ("callback", "echo")
        for what, n in result[name]["problems"].items()
    ]
    lines.append("non-200 answers / errors: " + ("; ".join(problems) if problems else "none"))
    if result["service_log_tail"]:
        lines += ["", "service log (WARNING and up), last lines:"]
        lines += [f"  {line}" for line in result["service_log_tail"]]
    return "\n".join(lines)
