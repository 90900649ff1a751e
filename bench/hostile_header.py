"""Callback ack latency while a hostile client sends a huge request header (api/serving.py's limits).

Run from the repository root:

    python bench/hostile_header.py                 # 500 callbacks quiet, 500 under attack, 200 MiB
    python bench/hostile_header.py --count 1000 --rate 100 --attackers 2 --json

It starts the real service in mock mode (`python -m dingbot.server`, FORCE_MOCK_OPENAI=1) and a fake
session webhook, all on 127.0.0.1 (bench/processes.py), then sends signed callbacks paced at --rate:
first with nobody else talking ("quiet"), then while --attackers threads each try to send one request
whose header is --header-mib MiB, reconnecting whenever the service closes on them, until they have
pushed that much or the measurement ends ("attacked"). It prints the ack p50/p99 of both phases, how much
the attackers got through before each refusal, how many refusals they saw, and the service's resident
memory (VmRSS, and its peak VmHWM) before and after. Nothing is asserted about timing; the exit code is 1
only when a callback was not acked with 200, 2 when the bench could not run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.fake_webhook import fake_webhook  # noqa: E402
from bench.load import Endpoint, Pacer, callback_body, signed_headers  # noqa: E402
from bench.processes import run_bench, scratch, start_service  # noqa: E402
from bench.report import summarize  # noqa: E402
from bench.settings import BENCH_SECRET, HOST, REQUEST_TIMEOUT_S  # noqa: E402

CHUNK = b"a" * (1024 * 1024)


@dataclass
class Attack:
    """What the attackers did: bytes pushed, connections the service refused (431 seen or reset)."""

    sent_bytes: int = 0
    connections: int = 0
    answered_431: int = 0


def _attack(port: int, budget: int, stop: threading.Event, attack: Attack, lock: threading.Lock) -> None:
    sent = 0
    while sent < budget and not stop.is_set():
        with socket.create_connection((HOST, port), timeout=REQUEST_TIMEOUT_S) as conn:
            with lock:
                attack.connections += 1
            with contextlib.suppress(OSError):
                conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: bench\r\nX-Huge: ")
                while sent < budget and not stop.is_set():
                    conn.sendall(CHUNK)
                    sent += len(CHUNK)
                    with lock:
                        attack.sent_bytes += len(CHUNK)
            with contextlib.suppress(OSError):
                if conn.recv(64).startswith(b"HTTP/1.1 431"):
                    with lock:
                        attack.answered_431 += 1


def _memory_kib(pid: int | None) -> dict[str, int | None]:
    figures: dict[str, int | None] = {"VmRSS": None, "VmHWM": None}
    with contextlib.suppress(OSError, TypeError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in figures:
                figures[name] = int(value.split()[0])
    return figures


def _phase(endpoint: Endpoint, bodies: list[bytes], rate: float) -> None:
    pacer = Pacer(rate)
    for body in bodies:
        pacer.wait()
        endpoint.send(body, signed_headers(BENCH_SECRET), record=True)


def run(args: argparse.Namespace) -> dict[str, Any]:
    run_id = f"{os.getpid():x}{int(time.time()):x}"
    with contextlib.ExitStack() as stack:
        room = scratch(stack)
        webhook_base = f"http://{HOST}:{stack.enter_context(fake_webhook())}"
        settings = {"FORCE_MOCK_OPENAI": "1", "SECRET": BENCH_SECRET, "DINGTALK_OAPI_BASE": webhook_base}
        service_base = start_service(stack, room, settings)
        port = int(service_base.rsplit(":", 1)[1])
        client = stack.enter_context(httpx.Client(timeout=REQUEST_TIMEOUT_S, trust_env=False))
        bodies = [callback_body(n, webhook_base, run_id) for n in range(args.warmup + 2 * args.count)]
        warmup = Endpoint("warmup", f"{service_base}/dingtalk/callback", client)
        _phase(warmup, bodies[: args.warmup], args.rate)

        quiet = Endpoint("quiet", f"{service_base}/dingtalk/callback", client)
        memory_before = _memory_kib(room.service_pid)
        _phase(quiet, bodies[args.warmup : args.warmup + args.count], args.rate)

        attacked = Endpoint("attacked", f"{service_base}/dingtalk/callback", client)
        attack, lock, stop = Attack(), threading.Lock(), threading.Event()
        budget = args.header_mib * 1024 * 1024
        attackers = [
            threading.Thread(target=_attack, args=(port, budget, stop, attack, lock), daemon=True)
            for _ in range(args.attackers)
        ]
        attack_started = time.perf_counter()
        for thread in attackers:
            thread.start()
        _phase(attacked, bodies[args.warmup + args.count :], args.rate)
        stop.set()
        for thread in attackers:
            thread.join(timeout=REQUEST_TIMEOUT_S)
        attack_seconds = time.perf_counter() - attack_started
        memory_after = _memory_kib(room.service_pid)
        healthy = client.get(f"{service_base}/healthz").status_code == 200

    return {
        "config": {
            "count": args.count,
            "rate_per_s": args.rate,
            "attackers": args.attackers,
            "header_mib_each": args.header_mib,
        },
        "quiet": summarize(quiet),
        "attacked": summarize(attacked),
        "attack": {
            "seconds": round(attack_seconds, 2),
            "sent_mib": round(attack.sent_bytes / 1024 / 1024, 1),
            "connections": attack.connections,
            "answered_431": attack.answered_431,
            "mib_per_connection": round(attack.sent_bytes / 1024 / 1024 / max(attack.connections, 1), 2),
        },
        "service_memory_kib": {"before": memory_before, "after": memory_after},
        "healthy_after": healthy,
        "log_tail": room.log_lines,
    }


def render(result: dict[str, Any]) -> str:
    quiet, attacked, attack = result["quiet"], result["attacked"], result["attack"]
    before, after = result["service_memory_kib"]["before"], result["service_memory_kib"]["after"]
    cfg = result["config"]
    lines = [
        f"callbacks: {cfg['count']} per phase at {cfg['rate_per_s']:g}/s; "
        f"{cfg['attackers']} attacker(s) with a {cfg['header_mib_each']} MiB header each",
        *(
            f"  {name:9} p50 {phase['p50_ms']:8.2f} ms  p99 {phase['p99_ms']:8.2f} ms  "
            f"max {phase['max_ms']:8.2f} ms"
            for name, phase in (("quiet", quiet), ("attacked", attacked))
        ),
        f"attack: {attack['sent_mib']} MiB pushed over {attack['connections']} connection(s) in "
        f"{attack['seconds']} s ({attack['mib_per_connection']} MiB each before the close; "
        f"431 read back on {attack['answered_431']})",
        f"service memory: VmRSS {before['VmRSS']} -> {after['VmRSS']} KiB, peak VmHWM {after['VmHWM']} KiB",
        f"problems: quiet {quiet['problems'] or 'none'}, attacked {attacked['problems'] or 'none'}; "
        f"/healthz after: {'200' if result['healthy_after'] else 'FAILED'}",
        "target: attacked p99 within noise of quiet p99 (issue 12: was p50 5.1 s with plain httptools)",
    ]
    return "\n".join(lines)


def ok(result: dict[str, Any]) -> bool:
    return not result["quiet"]["problems"] and not result["attacked"]["problems"] and result["healthy_after"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=500, help="callbacks per phase (default 500)")
    parser.add_argument("--warmup", type=int, default=50, help="uncounted callbacks first (default 50)")
    parser.add_argument("--rate", type=float, default=50.0, help="callbacks per second (default 50)")
    parser.add_argument("--attackers", type=int, default=1, help="hostile clients (default 1)")
    parser.add_argument("--header-mib", type=int, default=200, help="header size each tries (default 200)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    if args.count < 1 or args.rate <= 0 or args.attackers < 1 or args.header_mib < 1:
        parser.error("--count, --attackers and --header-mib must be >= 1, --rate > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_bench(lambda: run(args), render, ok, as_json=args.json)


if __name__ == "__main__":
    sys.exit(main())
