"""Throughput: what one message costs, next to a bare FastAPI echo, on SQLite and on PostgreSQL.

Run from the repository root (PostgreSQL at 127.0.0.1:5432 with trust auth, as on the project's machines):

    python bench/throughput.py                         # both engines
    python bench/throughput.py --engine sqlite --burst 3000 --json

Per engine it starts, on 127.0.0.1, the real service (`python -m dingbot.server`, mock model, its own
SQLite file or a PostgreSQL database made for the run and dropped at the end), the fake session webhook
(bench/fake_webhook.py) and the baseline echo (bench/echo_app.py), then measures with one load generator
(bench/rawhttp.py: prebuilt requests on keep-alive connections, so that it takes little of the 2 cores):

1. **Burst.** The echo, then the callback, as fast as `--connections` connections go: req/s and p99 of
   each; then the callbacks' replies: answered messages/s (messages / first send to last reply), reply lag
   (ack to reply at the webhook) p50/p99, and the service's CPU per answered message (its user + system
   time over that window, from /proc, divided by the messages; with ACK_PROCESS the acking process's
   share is included and also shown apart).
2. **At --rate (200/s).** Echo and callbacks in alternating blocks of one second, open loop: the ack p99
   next to the echo p99, and the reply lag p50/p99.

It prints the load generator's and the fake webhook's own CPU (in % of one core over each phase): on 2
cores what they take is taken from the service. Every message carries a token; a reply's token tells
which message it answers, so lost and doubled replies are counted (both must be 0: the exit code is 1
otherwise, 2 when the bench could not run). Nothing is asserted about timing; the goals are printed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
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

from bench import rawhttp  # noqa: E402
from bench.delivery_report import token  # noqa: E402
from bench.fake_webhook import fake_webhook  # noqa: E402
from bench.load import EMPTY_ACK, callback_body, signed_headers  # noqa: E402
from bench.processes import (  # noqa: E402
    Meters,
    child_env,
    children,
    cpu_count,
    free_port,
    mock_settings,
    postgres_database,
    profiled,
    run_bench,
    scratch,
    share,
    start_service,
    started,
)
from bench.report import percentile  # noqa: E402
from bench.settings import BENCH_SECRET, HOST  # noqa: E402

GOAL_ANSWERED_PER_S = 1000.0
GOAL_ACK_OVER_ECHO_MS = 5.0
GOAL_LAG_P99_MS = 500.0


def ack_problems(outcomes: list[rawhttp.Outcome]) -> int:
    """Answers other than DingHook's ack (200, `{"msgtype": "empty"}` or nothing), transport errors too."""

    def bad(outcome: rawhttp.Outcome) -> bool:
        if outcome.latency_ms is None or outcome.status != 200:
            return True
        try:
            return bool(outcome.body) and json.loads(outcome.body) != EMPTY_ACK
        except ValueError:
            return True

    return sum(1 for outcome in outcomes if bad(outcome))


def latency(outcomes: list[rawhttp.Outcome]) -> dict[str, float]:
    values = [o.latency_ms for o in outcomes if o.latency_ms is not None]
    return {"p50_ms": statistics.median(values), "p99_ms": percentile(values, 99), "max_ms": max(values)}


def wait_replies(webhook: str, tokens: set[str], timeout: float, settle: float) -> dict[str, Any]:
    """Poll the fake webhook until every token has a reply (or timeout), then `settle` s more."""
    started_at = time.monotonic()
    seen: dict[str, Any] = {}
    with httpx.Client(timeout=5.0, trust_env=False) as client:
        while time.monotonic() - started_at < timeout:
            with contextlib.suppress(httpx.HTTPError, ValueError):
                seen = client.get(f"{webhook}/tokens").json()["tokens"]
            if tokens <= seen.keys():
                break
            time.sleep(0.05)
        done_at = time.time()
        time.sleep(settle)
        with contextlib.suppress(httpx.HTTPError, ValueError):
            seen = client.get(f"{webhook}/tokens").json()["tokens"]
    return {"tokens": seen, "done_at": done_at}


class Load:
    """The callbacks (each with a fresh msgId and token) and echoes of one run, built before sending."""

    def __init__(self, service: str, echo: str, webhook: str, run_id: str) -> None:
        self.callback_url, self.echo_url = f"{service}/dingtalk/callback", f"{echo}/echo"
        self.webhook, self.run_id = webhook, run_id
        self.next = 0

    def callbacks(self, count: int) -> tuple[list[bytes], list[str]]:
        numbers = range(self.next, self.next + count)
        self.next += count
        headers = signed_headers(BENCH_SECRET)  # valid for an hour: one signature serves the run
        payloads, tokens = [], []
        for n in numbers:
            body = callback_body(n, self.webhook, self.run_id, text=f"{token(n)} 你好，这是第 {n} 条基准消息")
            payloads.append(rawhttp.encode(self.callback_url, rawhttp.Request(body, headers)))
            tokens.append(token(n))
        return payloads, tokens

    def echoes(self, count: int) -> list[bytes]:
        payloads, _ = self.callbacks(count)  # the same bodies, to the echo
        return [p.replace(b"/dingtalk/callback", b"/echo", 1) for p in payloads]


def replies(outcomes: list[rawhttp.Outcome], tokens: list[str], seen: dict[str, Any]) -> dict[str, Any]:
    acked = [
        (o, t) for o, t in zip(outcomes, tokens, strict=True) if o.latency_ms is not None and o.status == 200
    ]
    lags = [
        (seen[t]["first_at"] - (o.sent_at + (o.latency_ms or 0) / 1000)) * 1000 for o, t in acked if t in seen
    ]
    last = max((seen[t]["first_at"] for _, t in acked if t in seen), default=0.0)
    return {
        "answered": len(lags),
        "lost": sum(1 for _, t in acked if t not in seen),
        "doubled": sum(int(seen[t]["count"]) - 1 for _, t in acked if t in seen and seen[t]["count"] > 1),
        "lag_p50_ms": percentile(lags, 50),
        "lag_p99_ms": percentile(lags, 99),
        "last_reply_at": last,
    }


def burst(load: Load, meters: Meters, args: argparse.Namespace) -> dict[str, Any]:
    echo_payloads = load.echoes(args.burst)
    meters.mark()
    echo = rawhttp.fire(load.echo_url, echo_payloads, connections=args.connections)
    echo_used = meters.read()

    payloads, tokens = load.callbacks(args.burst)
    meters.mark()
    first = time.time()
    acks = rawhttp.fire(load.callback_url, payloads, connections=args.connections)
    ack_used = meters.read()
    acked_at = time.time()
    seen = wait_replies(load.webhook, set(tokens), args.reply_timeout, 0.0)
    answer_used = meters.read()
    outcome = replies(acks, tokens, seen["tokens"])
    span = max(outcome["last_reply_at"] - first, 1e-9)
    return {
        "echo": {
            **latency(echo),
            "per_s": len(echo) / echo_used["wall"],
            "generator_pct": share(echo_used, "generator"),
        },
        "ack": {
            **latency(acks),
            "per_s": len(acks) / max(acked_at - first, 1e-9),
            "problems": ack_problems(acks),
            "generator_pct": share(ack_used, "generator"),
        },
        "answered_per_s": outcome["answered"] / span,
        "service_cpu_ms_per_message": 1000
        * (answer_used["service"] + answer_used["acking"])
        / max(outcome["answered"], 1),
        "acking_cpu_ms_per_message": 1000 * answer_used["acking"] / max(outcome["answered"], 1),
        "database_cpu_ms_per_message": 1000 * answer_used["database"] / max(outcome["answered"], 1),
        "webhook_pct": share(answer_used, "webhook"),
        "generator_pct": share(answer_used, "generator"),
        "service_pct": share(answer_used, "service"),
        "acking_pct": share(answer_used, "acking"),
        **{k: outcome[k] for k in ("answered", "lost", "doubled", "lag_p50_ms", "lag_p99_ms")},
    }


def paced(load: Load, meters: Meters, args: argparse.Namespace) -> dict[str, Any]:
    block = max(1, round(args.rate))
    echoes: list[rawhttp.Outcome] = []
    acks: list[rawhttp.Outcome] = []
    tokens: list[str] = []
    meters.mark()
    for n in range(args.seconds):
        payloads, block_tokens = load.callbacks(block)
        echo_payloads = load.echoes(block)
        order = ("callback", "echo") if n % 2 == 0 else ("echo", "callback")
        for which in order:
            if which == "echo":
                echoes += rawhttp.fire(
                    load.echo_url, echo_payloads, connections=args.connections, rate=args.rate
                )
            else:
                acks += rawhttp.fire(
                    load.callback_url, payloads, connections=args.connections, rate=args.rate
                )
                tokens += block_tokens
    seen = wait_replies(load.webhook, set(tokens), args.reply_timeout, args.settle)
    used = meters.read()
    outcome = replies(acks, tokens, seen["tokens"])
    return {
        "rate": args.rate,
        "echo": latency(echoes),
        "ack": {**latency(acks), "problems": ack_problems(acks)},
        "generator_pct": share(used, "generator"),
        "webhook_pct": share(used, "webhook"),
        "service_pct": share(used, "service"),
        "acking_pct": share(used, "acking"),
        **{k: outcome[k] for k in ("answered", "lost", "doubled", "lag_p50_ms", "lag_p99_ms")},
    }


def run_engine(engine: str, args: argparse.Namespace) -> dict[str, Any]:
    run_id = f"{os.getpid():x}{int(time.time()):x}{engine[0]}"
    with contextlib.ExitStack() as stack:
        room = scratch(stack)
        webhook = f"http://{HOST}:{stack.enter_context(fake_webhook())}"
        settings = mock_settings(webhook, **dict(setting.split("=", 1) for setting in args.set))
        if engine == "postgresql":
            settings["DATABASE_URL"] = stack.enter_context(postgres_database())
        service = start_service(stack, room, settings)
        echo_port = free_port()
        stack.enter_context(
            started(
                [sys.executable, "-m", "bench.echo_app", "--port", str(echo_port)],
                env=child_env({}),
                cwd=REPO_ROOT,
                log_path=room.folder / "echo.log",
                health_url=f"http://{HOST}:{echo_port}/healthz",
            )
        )
        with httpx.Client(timeout=5.0, trust_env=False) as client:
            webhook_pid = int(client.get(f"{webhook}/count").json()["pid"])
        assert room.service_pid is not None
        groups = {
            "service": [room.service_pid],
            "acking": children(room.service_pid),  # the acking process (ACK_PROCESS), if any
            "webhook": [webhook_pid],
            "database": [],
        }
        if engine == "postgresql":  # the server processes of the service's connections (the lanes)
            groups["database"] = server_pids(settings["DATABASE_URL"])
        meters = Meters(groups)
        load = Load(service, f"http://{HOST}:{echo_port}", webhook, run_id)

        warm, warm_tokens = load.callbacks(args.warmup)  # first model, memory and connection costs
        rawhttp.fire(load.callback_url, warm, connections=4)
        rawhttp.fire(load.echo_url, load.echoes(args.warmup), connections=4)
        wait_replies(webhook, set(warm_tokens), args.reply_timeout, 0.0)

        with profiled(room.service_pid, args.py_spy, engine):
            burst_result = burst(load, meters, args)
        return {"engine": engine, "burst": burst_result, "paced": paced(load, meters, args)}


def server_pids(url: str) -> list[int]:
    """The PostgreSQL server processes serving connections to the database at `url` (this machine's)."""
    import psycopg

    database = url.rsplit("/", 1)[1]
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (database,)
        ).fetchall()
    return [int(row[0]) for row in rows]


def render(result: dict[str, Any]) -> str:
    lines = [
        f"DingHook throughput bench: mock model, {result['cpus']} cores shared by the service, the fakes "
        f"and the load generator; burst {result['burst_size']} over {result['connections']} connections, "
        f"then {result['rate']:g}/s for {result['seconds']} s"
        + (f"; service settings {' '.join(result['settings'])}" if result["settings"] else "")
    ]
    for run in result["engines"]:
        b, p = run["burst"], run["paced"]
        lines += [
            "",
            f"[{run['engine']}]",
            f"  burst   echo {b['echo']['per_s']:7.0f} req/s p99 {b['echo']['p99_ms']:6.2f} ms"
            f"   (generator {b['echo']['generator_pct']:.0f}% of a core)",
            f"          ack  {b['ack']['per_s']:7.0f} req/s p99 {b['ack']['p99_ms']:6.2f} ms"
            f"   (generator {b['ack']['generator_pct']:.0f}%)",
            f"          answered {b['answered_per_s']:7.0f} messages/s (goal >= {GOAL_ANSWERED_PER_S:.0f});"
            f" reply lag p50 {b['lag_p50_ms']:.0f} / p99 {b['lag_p99_ms']:.0f} ms",
            f"          service CPU {b['service_cpu_ms_per_message']:.2f} ms per answered message"
            f" ({b['service_pct']:.0f}% of a core"
            + (
                f", of which acking {b['acking_cpu_ms_per_message']:.2f} ms, {b['acking_pct']:.0f}%"
                if b["acking_pct"]
                else ""
            )
            + f"); webhook {b['webhook_pct']:.0f}%,"
            f" generator {b['generator_pct']:.0f}%"
            + (
                f"; PostgreSQL's server {b['database_cpu_ms_per_message']:.2f} ms per message"
                if run["engine"] == "postgresql"
                else ""
            ),
            f"          answered {b['answered']}, lost {b['lost']}, doubled {b['doubled']},"
            f" bad acks {b['ack']['problems']}",
            f"  {p['rate']:g}/s   echo p50 {p['echo']['p50_ms']:.2f} / p99 {p['echo']['p99_ms']:.2f} ms;"
            f" ack p50 {p['ack']['p50_ms']:.2f} / p99 {p['ack']['p99_ms']:.2f} ms"
            f" (+{p['ack']['p99_ms'] - p['echo']['p99_ms']:.2f}; goal <= +{GOAL_ACK_OVER_ECHO_MS:.0f})",
            f"          reply lag p50 {p['lag_p50_ms']:.0f} / p99 {p['lag_p99_ms']:.0f} ms"
            f" (goal p99 <= {GOAL_LAG_P99_MS:.0f}); service {p['service_pct']:.0f}%"
            + (f" + acking {p['acking_pct']:.0f}%" if p["acking_pct"] else "")
            + ","
            f" webhook {p['webhook_pct']:.0f}%, generator {p['generator_pct']:.0f}% of a core",
            f"          answered {p['answered']}, lost {p['lost']}, doubled {p['doubled']},"
            f" bad acks {p['ack']['problems']}",
        ]
    return "\n".join(lines)


def functional_ok(result: dict[str, Any]) -> bool:
    return all(
        phase["lost"] == 0 and phase["doubled"] == 0 and phase["ack"]["problems"] == 0
        for run in result["engines"]
        for phase in (run["burst"], run["paced"])
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    engines = ["sqlite", "postgresql"] if args.engine == "both" else [args.engine]
    return {
        "cpus": cpu_count(),
        "burst_size": args.burst,
        "connections": args.connections,
        "rate": args.rate,
        "seconds": args.seconds,
        "settings": list(args.set),
        "engines": [run_engine(engine, args) for engine in engines],
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--engine", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--burst", type=int, default=3000, help="requests per endpoint in the burst")
    parser.add_argument("--connections", type=int, default=16, help="connections in the burst (default 16)")
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second in the paced phase")
    parser.add_argument("--seconds", type=int, default=10, help="seconds of callbacks (and of echoes) paced")
    parser.add_argument("--warmup", type=int, default=200, help="uncounted callbacks and echoes first")
    parser.add_argument("--reply-timeout", type=float, default=120.0)
    parser.add_argument("--settle", type=float, default=1.0, help="seconds to wait for a late second reply")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for the service, e.g. --set WORKERS=1 (repeatable)",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument(
        "--py-spy", type=Path, default=None, metavar="FOLDER", help="record the service's stacks in the burst"
    )
    args = parser.parse_args(argv)
    if any("=" not in setting for setting in args.set):
        parser.error("--set takes NAME=VALUE")
    if args.burst < 1 or args.connections < 1 or args.rate <= 0 or args.seconds < 1:
        parser.error("--burst, --connections and --seconds must be >= 1, --rate > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_bench(lambda: run(args), render, functional_ok, as_json=args.json)


if __name__ == "__main__":
    sys.exit(main())
