"""Ack latency of POST /dingtalk/callback, measured against a bare FastAPI echo endpoint.

Run from the repository root:

    python bench/ack_latency.py              # 2000 signed callbacks + 2000 echoes, sequential
    python bench/ack_latency.py --count 500 --rate 200 --json

What it starts, all on 127.0.0.1 and all stopped at the end (also on error or Ctrl-C):

* the real service, `python -m dingbot.server`, in mock mode (FORCE_MOCK_OPENAI=1) with a temporary
  DATABASE_PATH and DINGTALK_OAPI_BASE pointing at the fake webhook below;
* a fake DingTalk session webhook (its own process) that answers every POST with errcode 0 and counts
  them (`GET /count`), so every accepted callback's background reply has somewhere to go;
* the baseline `bench.echo_app`: one FastAPI `POST /echo` that reads the body and answers
  `{"msgtype": "empty"}`, served by uvicorn with the same settings as the service.

Both endpoints get the same signed bodies, in alternating blocks so machine noise hits both alike.
The figures are what the client sees (connection kept alive, one request at a time, or paced with
--rate). Nothing is asserted about timing: the targets are printed next to the figures. The exit code
is 1 only when something functional went wrong (a non-200 answer, a transport error, or fewer replies
at the fake webhook than accepted callbacks), 2 when the bench could not run.

This file holds the command line and the measurement loop; the pieces it uses sit next to it:
settings.py (fixed settings), fake_webhook.py (the fake session webhook process), processes.py
(ports, child environment, start and stop), load.py (signed callbacks, endpoints, pacing) and
report.py (statistics, verdicts, text and JSON output).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

# The bench modules below need the repository on sys.path.
from bench.fake_webhook import fake_webhook  # noqa: E402
from bench.load import Endpoint, Pacer, callback_body, in_flight, signed_headers, wait_for_replies  # noqa: E402
from bench.processes import child_env, cpu_count, free_port, run_bench, scratch, start_service, started  # noqa: E402
from bench.report import build_result, functional_ok, render  # noqa: E402
from bench.settings import BENCH_SECRET, HOST, REQUEST_TIMEOUT_S  # noqa: E402


def run(args: argparse.Namespace) -> dict[str, Any]:
    run_id = f"{os.getpid():x}{int(time.time()):x}"
    cpus = cpu_count()
    with contextlib.ExitStack() as stack:
        room = scratch(stack)
        tmp, log_lines = room.folder, room.log_lines
        webhook_port = stack.enter_context(fake_webhook())
        webhook_base = f"http://{HOST}:{webhook_port}"

        service_base = start_service(
            stack,
            room,
            {
                "FORCE_MOCK_OPENAI": "1",
                "SECRET": BENCH_SECRET,
                "DINGTALK_OAPI_BASE": webhook_base,
            },
        )
        echo_port = free_port()
        echo_base = f"http://{HOST}:{echo_port}"
        stack.enter_context(
            started(
                [sys.executable, "-m", "bench.echo_app", "--port", str(echo_port)],
                env=child_env({}),
                cwd=REPO_ROOT,
                log_path=tmp / "echo.log",
                health_url=f"{echo_base}/healthz",
            )
        )

        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        callback = Endpoint(
            "callback",
            f"{service_base}/dingtalk/callback",
            stack.enter_context(httpx.Client(timeout=REQUEST_TIMEOUT_S, limits=limits, trust_env=False)),
        )
        echo = Endpoint(
            "echo",
            f"{echo_base}/echo",
            stack.enter_context(httpx.Client(timeout=REQUEST_TIMEOUT_S, limits=limits, trust_env=False)),
        )

        total = args.warmup + args.count
        bodies = [callback_body(n, webhook_base, run_id) for n in range(total)]
        pacer = Pacer(args.rate)

        for n in range(args.warmup):  # alternate one by one; not recorded
            headers = signed_headers(BENCH_SECRET)
            for endpoint in (callback, echo):
                pacer.wait()
                endpoint.send(bodies[n], headers, record=False)

        measure_started = time.perf_counter()
        for block, start in enumerate(range(args.warmup, total, args.block)):
            indices = range(start, min(start + args.block, total))
            headers_by_index = {n: signed_headers(BENCH_SECRET) for n in indices}
            order = (callback, echo) if block % 2 == 0 else (echo, callback)
            for endpoint in order:
                for n in indices:
                    pacer.wait()
                    endpoint.send(bodies[n], headers_by_index[n], record=True)
        measure_seconds = time.perf_counter() - measure_started

        backlog = in_flight(service_base)
        expected_replies = total  # every callback has a fresh msgId, warm-up included
        replies, waited = wait_for_replies(webhook_base, expected_replies, args.reply_timeout)

    return build_result(
        args,
        cpus=cpus,
        callback=callback,
        echo=echo,
        expected_replies=expected_replies,
        replies=replies,
        waited=waited,
        backlog=backlog,
        measure_seconds=measure_seconds,
        log_lines=log_lines,
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Ack latency of POST /dingtalk/callback vs a bare echo.")
    parser.add_argument(
        "--count", type=int, default=2000, help="measured requests per endpoint (default 2000)"
    )
    parser.add_argument("--warmup", type=int, default=50, help="uncounted requests per endpoint (default 50)")
    parser.add_argument("--block", type=int, default=100, help="requests per alternating block (default 100)")
    parser.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="requests per second, both endpoints together (default: back to back)",
    )
    parser.add_argument(
        "--reply-timeout", type=float, default=20.0, help="seconds to wait for all replies (default 20)"
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    if args.count < 1 or args.warmup < 0 or args.block < 1 or args.rate < 0 or args.reply_timeout < 0:
        parser.error("--count and --block must be >= 1; --warmup, --rate and --reply-timeout >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_bench(lambda: run(args), render, functional_ok, as_json=args.json)


if __name__ == "__main__":
    sys.exit(main())
