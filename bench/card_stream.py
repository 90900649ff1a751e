"""Typewriter replies in an AI card: from the model's first token to the first card update.

Run from the repository root:

    python bench/card_stream.py                          # 20 answers of 40 pieces x 50 ms (~2 s each)
    python bench/card_stream.py --count 5 --pieces 10 --json

The service streams a model answer into an AI card (api/dingtalk/cards.py): when the model starts it
creates and delivers the card, then sends the whole text so far at most every UPDATE_INTERVAL_SECONDS
(`PUT /v1.0/card/streaming`), and once the answer is complete the outbox finishes it (a last update with
isFinalize, then flowStatus 3; api/delivery/courier.py). This bench measures, per answer:

* first token -> first card update: from the moment the fake model wrote the first content piece of
  the answer to the arrival of the card's first streaming (non-final) update at the fake DingTalk;
* callback -> card delivered: from the signed callback's POST to the arrival of `deliver` (the token,
  recall and card creation happen before the model is asked), and callback -> first token;
* the spacing of consecutive streaming updates of one card (throttled to ~600 ms) and how many each
  answer got (plus the final one);
* last token -> final update and last token -> card finished (`PUT /v1.0/card/instances`).

Nothing is asserted about timing: the figures are printed. The exit code is 0 when every message
(warm-up included) was acknowledged with 200 and got a card finished with flowStatus 3, 1 otherwise,
2 when the bench could not run.

What it starts, all on 127.0.0.1 and all stopped at the end (also on error, Ctrl-C or SIGTERM):

* the real service, `python -m dingbot.server`, with a temporary DATABASE_PATH, SECRET set to the
  bench's signing secret, EMBEDDING_PROVIDER=local, RATE_LIMIT_PER_MINUTE=0, OPENAI_MAX_RETRIES=0,
  OPENAI_API_BASE at the fake model and DINGTALK_API_BASE / DINGTALK_OAPI_BASE at the fake DingTalk,
  with app credentials and DINGTALK_CARD_TEMPLATE_ID set, so answers go into cards;
* in this process, on threads: a fake OpenAI-compatible model that streams (`"stream": true`) answers
  of --pieces content pieces, --piece-delay-ms apart, and answers non-streamed requests (the memory's
  fact extraction) with `{"facts": []}`; and a fake DingTalk with the access-token endpoint, the four
  card endpoints (`{"success": true, "result": true}`) and the session webhook (errcode 0). Both stamp
  what they do with this process's perf_counter, so their times compare directly.

Each message's text carries a token ("cardbench-000007"); the fake model puts it in the first piece of
the answer it streams, so the card whose updates show that token is that message's card (matched by
text, not by order). The messages go one at a time: the next is sent once the previous card is finished
and its fact extraction has reached the model (then --gap), so the answers never overlap. The first
--warmup messages (default 1: the first access token, the first model connection, the embedding model
loading) are not in the figures. The service, the fakes and this bench share the machine's cores (2 on
the reference machine), so every figure includes that contention.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import math
import os
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

# The modules below need the repository on sys.path.
from api.dingtalk.cards import UPDATE_INTERVAL_SECONDS  # noqa: E402
from bench.card_fakes import (  # noqa: E402
    API_KEY,
    CLIENT_ID,
    CLIENT_SECRET,
    EXTRACTION_WAIT_S,
    MODEL,
    TEMPLATE_ID,
    CardCall,
    FakeDingTalk,
    FakeModel,
    serving,
    token,
)
from bench.load import ack_problem, callback_body, signed_headers  # noqa: E402
from bench.processes import cpu_count, run_bench, scratch, start_service  # noqa: E402
from bench.report import percentile  # noqa: E402
from bench.settings import BENCH_SECRET, REQUEST_TIMEOUT_S  # noqa: E402

# --- one message at a time ---


@dataclass
class Sent:
    n: int
    warmup: bool
    posted_at: float
    status: int | None = None
    problem: str = ""
    done: bool = False  # the card was finished (or a plain reply came) within --timeout


def send_one(client: httpx.Client, url: str, body: bytes, sent: Sent) -> None:
    try:
        response = client.post(url, content=body, headers=signed_headers(BENCH_SECRET))
    except httpx.HTTPError as exc:
        sent.problem = f"transport error {type(exc).__name__}"
        return
    sent.status = response.status_code
    sent.problem = ack_problem(response) or None


def measure(sent: Sent, model: FakeModel, dingtalk: FakeDingTalk) -> dict[str, Any]:
    """One message's figures (ms), from the fakes' records; None where it has no such moment."""
    key = token(sent.n)
    calls = dingtalk.card_of(key)
    answer = model.answers.get(key)

    def first(name: str, finalize: bool | None = None) -> CardCall | None:
        return next(
            (c for c in calls if c.name == name and (finalize is None or c.finalize is finalize)), None
        )

    def ms(later: float | None, earlier: float | None) -> float | None:
        if later is None or earlier is None or math.isnan(later) or math.isnan(earlier):
            return None
        return round((later - earlier) * 1000, 2)

    streaming = [c for c in calls if c.name == "update" and not c.finalize]
    deliver, final, finish = first("deliver"), first("update", True), first("finish")
    first_piece = answer.first_piece_at if answer else None
    last_piece = answer.last_piece_at if answer else None
    return {
        "token": key,
        "warmup": sent.warmup,
        "ack": sent.problem or "ok",
        "card": bool(calls),
        "flow_status": finish.flow_status if finish else None,
        "plain_replies": dingtalk.plain.get(key, 0),
        "model_streams": model.streams.get(key, 0),
        "callback_to_deliver_ms": ms(deliver.at if deliver else None, sent.posted_at),
        "callback_to_first_token_ms": ms(first_piece, sent.posted_at),
        "first_token_to_first_update_ms": ms(streaming[0].at if streaming else None, first_piece),
        "streaming_updates": len(streaming),
        "update_gaps_ms": [ms(b.at, a.at) for a, b in itertools.pairwise(streaming)],
        "answer_ms": ms(last_piece, first_piece),
        "last_token_to_final_update_ms": ms(final.at if final else None, last_piece),
        "last_token_to_finish_ms": ms(finish.at if finish else None, last_piece),
    }


def finished_ok(message: dict[str, Any]) -> bool:
    return bool(message["ack"] == "ok" and message["flow_status"] == "3" and not message["plain_replies"])


def run(args: argparse.Namespace) -> dict[str, Any]:
    run_id = f"{os.getpid():x}{int(time.time()):x}"
    cpus = cpu_count()
    model, dingtalk = FakeModel(args.pieces, args.piece_delay_ms / 1000), FakeDingTalk()
    sends: list[Sent] = []
    with contextlib.ExitStack() as stack:
        room = scratch(stack)
        log_lines = room.log_lines
        model_base = stack.enter_context(serving(model, "fake-model"))
        dingtalk_base = stack.enter_context(serving(dingtalk, "fake-dingtalk"))

        service_base = start_service(
            stack,
            room,
            {
                "SECRET": BENCH_SECRET,
                "EMBEDDING_PROVIDER": "local",
                "OPENAI_API_BASE": f"{model_base}/v1",
                "OPENAI_API_KEY": API_KEY,
                "OPENAI_MODEL": MODEL,
                "OPENAI_MAX_RETRIES": "0",
                "OPENAI_TIMEOUT": str(max(30.0, args.timeout)),
                "DINGTALK_CLIENT_ID": CLIENT_ID,
                "DINGTALK_CLIENT_SECRET": CLIENT_SECRET,
                "DINGTALK_API_BASE": dingtalk_base,
                "DINGTALK_OAPI_BASE": dingtalk_base,
                "DINGTALK_CARD_TEMPLATE_ID": TEMPLATE_ID,
                "RATE_LIMIT_PER_MINUTE": "0",
            },
        )

        url = f"{service_base}/dingtalk/callback"
        bench_started = time.perf_counter()
        with httpx.Client(timeout=REQUEST_TIMEOUT_S, trust_env=False) as client:
            for n in range(args.warmup + args.count):
                key = token(n)
                body = callback_body(n, dingtalk_base, run_id, text=f"{key} 请用几句话介绍一下第 {n} 个话题")
                sent = Sent(n=n, warmup=n < args.warmup, posted_at=time.perf_counter())
                sends.append(sent)
                send_one(client, url, body, sent)
                if sent.problem:
                    continue
                sent.done = dingtalk.wait_done(key, args.timeout)
                # The fact extraction comes right after the reply: let it pass before the next answer.
                if sent.done and model.wait_extraction(key, EXTRACTION_WAIT_S) and args.gap:
                    time.sleep(args.gap)
        bench_seconds = time.perf_counter() - bench_started

    messages = [measure(sent, model, dingtalk) for sent in sends]
    return build_result(
        args,
        cpus=cpus,
        messages=messages,
        sends=sends,
        dingtalk=dingtalk,
        model=model,
        bench_seconds=bench_seconds,
        log_lines=log_lines,
    )


# --- the report ---


def _stats(values: list[float]) -> dict[str, Any]:
    """count, p50/p90/min/max in ms; None for no values (so --json stays valid JSON)."""
    if not values:
        return {"count": 0, "p50_ms": None, "p90_ms": None, "min_ms": None, "max_ms": None}
    return {
        "count": len(values),
        "p50_ms": round(percentile(values, 50), 2),
        "p90_ms": round(percentile(values, 90), 2),
        "min_ms": round(min(values), 2),
        "max_ms": round(max(values), 2),
    }


def _present(messages: list[dict[str, Any]], name: str) -> list[float]:
    return [float(m[name]) for m in messages if m[name] is not None]


def build_result(
    args: argparse.Namespace,
    *,
    cpus: int | None,
    messages: list[dict[str, Any]],
    sends: list[Sent],
    dingtalk: FakeDingTalk,
    model: FakeModel,
    bench_seconds: float,
    log_lines: list[str],
) -> dict[str, Any]:
    """Everything a run found, as printed with --json."""
    measured = [m for m in messages if not m["warmup"]]
    gaps = [float(g) for m in measured for g in m["update_gaps_ms"] if g is not None]
    updates = [float(m["streaming_updates"]) for m in measured if m["card"]]
    return {
        "config": {
            "count": args.count,
            "warmup": args.warmup,
            "pieces": args.pieces,
            "piece_delay_ms": args.piece_delay_ms,
            "answer_ms_planned": round((args.pieces - 1) * args.piece_delay_ms, 1),
            "update_interval_ms": UPDATE_INTERVAL_SECONDS * 1000,
            "gap_s": args.gap,
            "timeout_s": args.timeout,
            "cpus": cpus,
            "python": sys.version.split()[0],
        },
        "first_token_to_first_update": _stats(_present(measured, "first_token_to_first_update_ms")),
        "callback_to_deliver": _stats(_present(measured, "callback_to_deliver_ms")),
        "callback_to_first_token": _stats(_present(measured, "callback_to_first_token_ms")),
        "update_spacing": _stats(gaps),
        "streaming_updates_per_answer": {
            "count": len(updates),
            "p50": percentile(updates, 50) if updates else None,
            "min": min(updates) if updates else None,
            "max": max(updates) if updates else None,
            "mean": round(sum(updates) / len(updates), 2) if updates else None,
        },
        "answer_at_model": _stats(_present(measured, "answer_ms")),
        "last_token_to_final_update": _stats(_present(measured, "last_token_to_final_update_ms")),
        "last_token_to_finish": _stats(_present(measured, "last_token_to_finish_ms")),
        "outcome": {
            "messages": len(messages),
            "acked_200": sum(1 for s in sends if s.status == 200 and not s.problem),
            "ack_problems": dict(Counter(s.problem for s in sends if s.problem)),
            "cards_finished_ok": sum(finished_ok(m) for m in messages),
            "timed_out": sum(1 for s in sends if not s.problem and not s.done),
            "plain_replies": sum(dingtalk.plain.values()),
            "model_retries": sum(max(0, count - 1) for count in model.streams.values()),
            "access_tokens_issued": dingtalk.tokens_issued,
            "unexpected_requests": dict(dingtalk.other + model.other),
            "bench_seconds": round(bench_seconds, 1),
        },
        "messages": messages,
        "service_log_tail": log_lines,  # LOG_LEVEL=WARNING: anything here deserves a look
        "note": (
            f"the service, the fake model, the fake DingTalk and the bench all share this machine's {cpus} "
            "CPU core(s); the figures include that contention"
        ),
    }


def functional_ok(result: dict[str, Any]) -> bool:
    outcome = result["outcome"]
    return bool(outcome["messages"] and outcome["cards_finished_ok"] == outcome["messages"])


def _ms(value: float | None) -> str:
    return "    n/a" if value is None else f"{value:7.1f}"


def _line(label: str, s: dict[str, Any], *, keys: tuple[str, ...] = ("p50", "p90", "max")) -> str:
    figures = "   ".join(f"{k} {_ms(s[f'{k}_ms'])} ms" for k in keys)
    return f"{label:<36}{figures}   (n={s['count']})"


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:g}"


def render(result: dict[str, Any]) -> str:
    cfg, outcome, per = result["config"], result["outcome"], result["streaming_updates_per_answer"]
    lines = [
        f"DingHook AI-card streaming: {cfg['count']} answers (+{cfg['warmup']} warm-up) of {cfg['pieces']} "
        f"pieces x {cfg['piece_delay_ms']:g} ms (~{cfg['answer_ms_planned'] / 1000:.1f} s each), one at a "
        f"time; real service + local fake model + local fake DingTalk; Python {cfg['python']}",
        f"note: {result['note']}",
        "",
        _line("first token -> first card update", result["first_token_to_first_update"]),
        _line("callback -> card delivered", result["callback_to_deliver"]),
        _line("callback -> first token", result["callback_to_first_token"]),
        _line(
            f"update spacing (throttle {cfg['update_interval_ms']:.0f} ms)",
            result["update_spacing"],
            keys=("p50", "min", "max"),
        ),
        f"{'streaming updates per answer':<36}p50 {_num(per['p50'])}   min {_num(per['min'])}   "
        f"max {_num(per['max'])}   mean {_num(per['mean'])}   (+1 final each; answers took p50 "
        f"{_ms(result['answer_at_model']['p50_ms']).strip()} ms at the model)",
        _line("last token -> final update", result["last_token_to_final_update"]),
        _line("last token -> card finished", result["last_token_to_finish"]),
        "",
        f"cards finished (flowStatus 3): {outcome['cards_finished_ok']} of {outcome['messages']} messages "
        f"(warm-up included); acked 200: {outcome['acked_200']}; timed out: {outcome['timed_out']}; "
        f"plain replies: {outcome['plain_replies']}; model retries: {outcome['model_retries']}; "
        f"access tokens issued: {outcome['access_tokens_issued']}; took {outcome['bench_seconds']:.1f} s",
    ]
    if outcome["ack_problems"]:
        lines.append(f"callback problems: {outcome['ack_problems']}")
    if outcome["unexpected_requests"]:
        lines.append(f"unexpected requests at the fakes: {outcome['unexpected_requests']}")
    if result["service_log_tail"]:
        lines += ["", "service log (WARNING and up), last lines:"]
        lines += [f"  {line}" for line in result["service_log_tail"]]
    lines += ["", "result: " + ("ok" if functional_ok(result) else "FAILED (a message got no finished card)")]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="AI-card streaming: first token to first card update.")
    parser.add_argument("--count", type=int, default=20, help="measured messages (default 20)")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured messages first (default 1)")
    parser.add_argument("--pieces", type=int, default=40, help="content pieces per answer (default 40)")
    parser.add_argument(
        "--piece-delay-ms", type=float, default=50.0, help="ms between the pieces (default 50)"
    )
    parser.add_argument(
        "--gap", type=float, default=0.2, help="seconds of quiet between messages (default 0.2)"
    )
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to wait for each card's finish (default 30)"
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    if args.count < 1 or args.pieces < 1 or args.warmup < 0:
        parser.error("--count and --pieces must be >= 1, --warmup >= 0")
    if args.piece_delay_ms < 0 or args.gap < 0 or args.timeout <= 0:
        parser.error("--piece-delay-ms and --gap must be >= 0, --timeout > 0")
    if args.count + args.warmup > 1_000_000:
        parser.error("at most 1,000,000 messages (the token has 6 digits)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_bench(lambda: run(args), render, functional_ok, as_json=args.json)


if __name__ == "__main__":
    sys.exit(main())
