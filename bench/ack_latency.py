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
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import multiprocessing
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from api.dingtalk.signature import compute_sign  # noqa: E402 - needs the repository on sys.path

HOST = "127.0.0.1"
BENCH_SECRET = "bench-secret-not-for-production"  # a throwaway signing secret
EMPTY_ACK = {"msgtype": "empty"}
WEBHOOK_OK = {"errcode": 0, "errmsg": "ok"}

TARGET_ACK_P99_MS = 10.0
TARGET_OVERHEAD_P50_MS = 5.0

STARTUP_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 20.0  # the service drains in-flight replies for up to 10 s on SIGTERM
REQUEST_TIMEOUT_S = 10.0
PEOPLE = 50


# --------------------------------------------------------------------------- fake session webhook


class _WebhookServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int]) -> None:
        super().__init__(address, _WebhookHandler)
        self._lock = threading.Lock()
        self._count = 0
        self._sessions: set[str] = set()

    def record(self, session: str) -> None:
        with self._lock:
            self._count += 1
            self._sessions.add(session)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {"count": self._count, "distinct_sessions": len(self._sessions)}


class _WebhookHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the service's httpx client expects
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall
    server: _WebhookServer

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        session = parse_qs(urlsplit(self.path).query).get("session", [""])[0]
        self.server.record(session)
        self._answer(200, WEBHOOK_OK)

    def do_GET(self) -> None:
        if urlsplit(self.path).path == "/count":
            self._answer(200, self.server.snapshot())
        else:
            self._answer(404, {"error": "not found"})

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        return


def _serve_webhook(port_queue: Any) -> None:
    """Child-process entry: bind a free loopback port, report it, serve until terminated."""
    server = _WebhookServer((HOST, 0))
    port_queue.put(server.server_address[1])
    server.serve_forever(poll_interval=0.2)


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def child_env(extra: dict[str, str]) -> dict[str, str]:
    """A minimal environment: nothing from the caller's settings (OPENAI_*, SECRET, ...) leaks in."""
    env = {
        name: value
        for name in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")
        if (value := os.environ.get(name))
    }
    env["PYTHONPATH"] = str(REPO_ROOT)
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env.update(extra)
    return env


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def wait_healthy(url: str, proc: subprocess.Popen[bytes], log_path: Path) -> None:
    name = " ".join(str(arg) for arg in proc.args[1:]) if isinstance(proc.args, list) else str(proc.args)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    with httpx.Client(timeout=1.0, trust_env=False) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with {proc.returncode} before {url} answered:\n{tail(log_path)}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if client.get(url).status_code == 200:
                    return
            time.sleep(0.1)
    raise RuntimeError(
        f"{name}: {url} did not answer 200 within {STARTUP_TIMEOUT_S:.0f} s:\n{tail(log_path)}"
    )


def stop_process(proc: subprocess.Popen[bytes]) -> str | None:
    """SIGTERM, wait, SIGKILL if need be. None for a clean stop, else what went wrong."""
    if proc.poll() is not None:
        return f"had already exited with {proc.returncode}"
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        return f"did not stop within {STOP_TIMEOUT_S:.0f} s of SIGTERM and was killed"
    # uvicorn re-raises the captured SIGTERM after its graceful shutdown, so -SIGTERM is a clean stop.
    if proc.returncode in (0, -signal.SIGTERM):
        return None
    return f"exited with {proc.returncode}"


@contextlib.contextmanager
def started(
    cmd: list[str], *, env: dict[str, str], cwd: Path, log_path: Path, health_url: str
) -> Iterator[None]:
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_healthy(health_url, proc, log_path)
        yield
    finally:
        problem = stop_process(proc)
        if problem:
            print(f"warning: {' '.join(cmd[1:])} {problem}", file=sys.stderr)


@contextlib.contextmanager
def fake_webhook() -> Iterator[int]:
    ctx = multiprocessing.get_context("spawn")
    port_queue = ctx.Queue()
    proc = ctx.Process(target=_serve_webhook, args=(port_queue,), name="fake-dingtalk-webhook", daemon=True)
    proc.start()
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            with contextlib.suppress(queue.Empty):
                port = int(port_queue.get(timeout=0.2))
                break
            if not proc.is_alive():
                raise RuntimeError(f"the fake webhook process exited with {proc.exitcode} before serving")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the fake webhook did not start within {STARTUP_TIMEOUT_S:.0f} s")
        yield port
    finally:
        proc.terminate()
        proc.join(timeout=5)
        if proc.is_alive():
            proc.kill()
            proc.join(timeout=5)
        port_queue.close()


# --------------------------------------------------------------------------- load


def callback_body(n: int, webhook_base: str, run_id: str) -> bytes:
    """A one-to-one text callback as DingTalk sends it (tests/fakes/payloads.py), for person n % PEOPLE."""
    now = int(time.time() * 1000)
    person = n % PEOPLE
    body = {
        "conversationId": f"cidBench{person:04d}{run_id}==",
        "chatbotCorpId": "ding9f50b15bccd16741",
        "chatbotUserId": "$:LWCP_v1:$rhYEt+K6DS3bXvXqXihY/",
        "msgId": f"msgBench{run_id}{n:07d}==",
        "senderNick": f"测试{person:02d}",
        "isAdmin": False,
        "senderStaffId": f"bench{person:04d}",
        "sessionWebhookExpiredTime": now + 90 * 60 * 1000,
        "createAt": now,
        "senderCorpId": "ding9f50b15bccd16741",
        "conversationType": "1",
        "senderId": f"$:LWCP_v1:$bench{person:04d}{run_id}==",
        "sessionWebhook": f"{webhook_base}/robot/sendBySession?session={n}",
        "robotCode": "dingbenchrobot",
        "msgtype": "text",
        "text": {"content": f"你好，这是第 {n} 条基准消息"},
    }
    return json.dumps(body, ensure_ascii=False).encode()


def signed_headers(secret: str) -> dict[str, str]:
    timestamp = str(int(time.time() * 1000))
    return {
        "timestamp": timestamp,
        "sign": compute_sign(timestamp, secret),
        "Content-Type": "application/json",
    }


@dataclass
class Endpoint:
    name: str
    url: str
    client: httpx.Client
    latencies_ms: list[float] = field(default_factory=list)
    problems: Counter[str] = field(default_factory=Counter)  # non-200 answers, odd bodies, transport errors
    sent: int = 0

    def send(self, body: bytes, headers: dict[str, str], *, record: bool) -> None:
        self.sent += 1
        started_ns = time.perf_counter_ns()
        try:
            response = self.client.post(self.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            self.problems[f"transport error {type(exc).__name__}"] += 1
            return
        elapsed_ms = (time.perf_counter_ns() - started_ns) / 1e6
        if record:
            self.latencies_ms.append(elapsed_ms)
        if response.status_code != 200:
            self.problems[f"HTTP {response.status_code}"] += 1
        elif response.content and _json_or_none(response.content) != EMPTY_ACK:
            self.problems["200 with a body other than {'msgtype': 'empty'}"] += 1


def _json_or_none(data: bytes) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        return None


class Pacer:
    """Sequential by default; with a rate, one request every 1/rate s (no catch-up bursts when late)."""

    def __init__(self, rate: float) -> None:
        self._interval = 1.0 / rate if rate > 0 else 0.0
        self._next = time.perf_counter()

    def wait(self) -> None:
        if not self._interval:
            return
        now = time.perf_counter()
        if self._next > now:
            time.sleep(self._next - now)
        self._next = max(self._next + self._interval, time.perf_counter())


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


def wait_for_replies(webhook_base: str, expected: int, timeout: float) -> tuple[dict[str, int], float]:
    started = time.monotonic()
    snapshot = {"count": -1, "distinct_sessions": -1}
    with httpx.Client(timeout=2.0, trust_env=False) as client:
        while True:
            with contextlib.suppress(httpx.HTTPError, ValueError):
                snapshot = client.get(f"{webhook_base}/count").json()
            waited = time.monotonic() - started
            if snapshot["count"] >= expected or waited >= timeout:
                return snapshot, waited
            time.sleep(0.1)


def in_flight(service_base: str) -> int | None:
    with httpx.Client(timeout=2.0, trust_env=False) as client:
        try:
            return int(client.get(f"{service_base}/healthz").json()["in_flight"])
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return None


# --------------------------------------------------------------------------- the run


def run(args: argparse.Namespace) -> dict[str, Any]:
    run_id = f"{os.getpid():x}{int(time.time()):x}"
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dinghook-bench-")))
        service_log = tmp / "service.log"
        log_lines: list[str] = []
        # Runs after the service has stopped (LIFO), before the temporary folder goes away.
        stack.callback(lambda: log_lines.extend(tail(service_log, 10).splitlines()))
        webhook_port = stack.enter_context(fake_webhook())
        webhook_base = f"http://{HOST}:{webhook_port}"

        service_port, echo_port = free_port(), free_port()
        service_base, echo_base = f"http://{HOST}:{service_port}", f"http://{HOST}:{echo_port}"
        stack.enter_context(
            started(
                [sys.executable, "-m", "dingbot.server"],
                env=child_env(
                    {
                        "FORCE_MOCK_OPENAI": "1",
                        "SECRET": BENCH_SECRET,
                        "PORT": str(service_port),
                        "HOST": HOST,
                        "DATABASE_PATH": str(tmp / "bench.db"),
                        "DINGTALK_OAPI_BASE": webhook_base,
                        "LOG_LEVEL": "WARNING",
                    }
                ),
                cwd=tmp,  # no stray .env from the caller's working directory
                log_path=service_log,
                health_url=f"{service_base}/healthz",
            )
        )
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


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks that stop the children


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        result = run(args)
    except (RuntimeError, OSError, httpx.HTTPError) as exc:
        print(f"bench: cannot run: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2, ensure_ascii=False) if args.json else render(result))
    return 0 if functional_ok(result) else 1


if __name__ == "__main__":
    sys.exit(main())
