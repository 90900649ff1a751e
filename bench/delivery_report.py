"""The result and the report of bench/delivery.py: figures from the sends and the replies, the verdict,
and the text people read."""

from __future__ import annotations

import argparse
import math
import sys
from collections import Counter
from dataclasses import dataclass
from typing import Any

from bench.report import percentile
from bench.settings import PEOPLE, TARGET_ACK_P99_MS


def token(n: int) -> str:
    """The marker in message n's text; bench.fake_webhook.TOKEN_PATTERN finds it in the replies."""
    return f"bench-{n:06d}"


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


def _stats(values: list[float]) -> dict[str, float]:
    return {
        "count": len(values),
        "p50_ms": round(percentile(values, 50), 3),
        "p90_ms": round(percentile(values, 90), 3),
        "p99_ms": round(percentile(values, 99), 3),
        "max_ms": round(max(values), 3) if values else math.nan,
        "mean_ms": round(sum(values) / len(values), 3) if values else math.nan,
    }


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
