"""Child-process helpers for the benches: free ports, a clean environment, start and stop; the CPU time
processes use (Meters), and py-spy on the service (profiled)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.settings import BENCH_SECRET, HOST, REPO_ROOT, STARTUP_TIMEOUT_S, STOP_TIMEOUT_S


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
) -> Iterator[subprocess.Popen[bytes]]:
    """Run cmd (output to log_path) until health_url answers 200; stop it when the block ends."""
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_healthy(health_url, proc, log_path)
        yield proc
    finally:
        problem = stop_process(proc)
        if problem:
            print(f"warning: {' '.join(cmd[1:])} {problem}", file=sys.stderr)


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks that stop the children


def run_bench(
    run: Callable[[], dict[str, Any]],
    render: Callable[[dict[str, Any]], str],
    ok: Callable[[dict[str, Any]], bool],
    *,
    as_json: bool,
) -> int:
    """A bench's main: run it (children stopped on SIGTERM too), print the figures (text or JSON).
    Exit 0 when `ok`, 1 when not, 2 when the bench could not run."""
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        result = run()
    except (RuntimeError, OSError, AssertionError, httpx.HTTPError) as exc:
        print(f"bench: cannot run: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2, ensure_ascii=False) if as_json else render(result))
    return 0 if ok(result) else 1


def cpu_count() -> int:
    """The cores this process may run on (the bench, the service and the fakes share them)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


@dataclass
class Scratch:
    folder: Path  # a temporary folder for the service's database and log
    service_log: Path
    service_pid: int | None = None  # set by start_service
    log_lines: list[str] = field(default_factory=list)  # the log's last lines, once the service stopped


def scratch(stack: contextlib.ExitStack, prefix: str = "dinghook-bench-") -> Scratch:
    """A temporary folder for one run; the service log's tail is kept in `log_lines` at the end."""
    folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=prefix)))
    room = Scratch(folder, folder / "service.log")
    # Runs after the service has stopped (LIFO), before the temporary folder goes away.
    stack.callback(lambda: room.log_lines.extend(tail(room.service_log, 10).splitlines()))
    return room


def mock_settings(webhook: str, **more: str) -> dict[str, str]:
    """The service's settings for a bench: mock model, the bench's signing secret, DingTalk at the fake
    `webhook`, no per-person rate limit (a bench sends more than a person would); `more` on top."""
    return {
        "FORCE_MOCK_OPENAI": "1",
        "SECRET": BENCH_SECRET,
        "DINGTALK_OAPI_BASE": webhook,
        "RATE_LIMIT_PER_MINUTE": "0",
        **more,
    }


def start_service(stack: contextlib.ExitStack, room: Scratch, settings: dict[str, str]) -> str:
    """`python -m dingbot.server` with `settings`, on a free loopback port, its database in the scratch
    folder and LOG_LEVEL=WARNING; stopped when `stack` closes. Returns its base URL."""
    port = free_port()
    base = f"http://{HOST}:{port}"
    env = {
        "PORT": str(port),
        "HOST": HOST,
        "DATABASE_PATH": str(room.folder / "bench.db"),
        "LOG_LEVEL": "WARNING",
        **settings,
    }
    service = stack.enter_context(
        started(
            [sys.executable, "-m", "dingbot.server"],
            env=child_env(env),
            cwd=room.folder,  # no stray .env from the caller's working directory
            log_path=room.service_log,
            health_url=f"{base}/healthz",
        )
    )
    room.service_pid = service.pid
    return base


@contextlib.contextmanager
def postgres_database(server: str = "postgresql://postgres@127.0.0.1:5432") -> Iterator[str]:
    """A PostgreSQL database made for this run (dropped at the end); its URL."""
    import psycopg

    name = f"dinghook_bench_{os.getpid()}_{int(time.time())}"
    with psycopg.connect(f"{server}/postgres", autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{server}/{name}"
    finally:
        with psycopg.connect(f"{server}/postgres", autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def chroma_server(folder: Path) -> Iterator[str]:
    """`chroma run` from this virtualenv on a free port, its data in `folder`; its URL."""
    port = free_port()
    folder.mkdir(parents=True, exist_ok=True)
    base = f"http://{HOST}:{port}"
    chroma = str(Path(sys.executable).parent / "chroma")
    with started(
        [chroma, "run", "--path", str(folder), "--host", HOST, "--port", str(port)],
        env=child_env({"ANONYMIZED_TELEMETRY": "False"}),
        cwd=folder,
        log_path=folder / "chroma.log",
        health_url=f"{base}/api/v2/heartbeat",
    ):
        yield base


TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system time of a process (all its threads), from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * TICK_S  # utime, stime (fields 14 and 15)


def children(pid: int) -> list[int]:
    """The child processes of `pid` (the service's acking process, ACK_PROCESS), from /proc."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


class Meters:
    """CPU seconds between two marks of named groups of processes (the service; on PostgreSQL the server
    processes of its connections; the fake webhook...) and of this process ("generator")."""

    def __init__(self, pids: dict[str, list[int]]) -> None:
        self.pids = pids
        self._start: dict[str, float] = {}
        self._wall = 0.0

    def _now(self) -> dict[str, float]:
        used = {name: sum(cpu_seconds(pid) for pid in pids) for name, pids in self.pids.items()}
        used["generator"] = time.process_time()
        return used

    def mark(self) -> None:
        self._start = self._now()
        self._wall = time.perf_counter()

    def read(self) -> dict[str, float]:
        used = {name: value - self._start[name] for name, value in self._now().items()}
        used["wall"] = time.perf_counter() - self._wall
        return used


def share(used: dict[str, float], name: str) -> float:
    return 100.0 * used[name] / max(used["wall"], 1e-9)


@contextlib.contextmanager
def profiled(pid: int, folder: Path | None, engine: str) -> Iterator[None]:
    """With --py-spy: `py-spy record` the service while the block runs (raw stacks, one file per engine)."""
    if folder is None:
        yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    output = folder / f"{engine}.txt"
    command = [
        "py-spy",
        "record",
        "-p",
        str(pid),
        "-r",
        "250",
        "-f",
        "raw",
        "-o",
        str(output),
        "--nonblocking",
        "--gil",
    ]
    spy = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        with contextlib.suppress(subprocess.TimeoutExpired):
            spy.wait(timeout=30)
        print(f"py-spy: {output}", file=sys.stderr)
