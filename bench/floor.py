"""The floor: what the libraries DingHook must use cost for one answered message, before any code of ours.

Run from the repository root:

    python bench/floor.py            # about 20 s
    python bench/floor.py --json

Issue 18 asks for 1,000 answered messages a second on this 2-core machine in mock mode. Everything runs
on those 2 cores: the service, its acking process, the fake DingTalk and the load generator, so each
message may cost 2 ms of CPU in all (2 cores / 1,000 per second). This bench measures, one at a time and
in CPU time (not wall time), the least that each step of an answered message costs through the libraries
the project is built on, with nothing of DingHook in the way:

- the callback's HTTP request and ack through uvicorn + FastAPI (bench/echo_app.py, a route that reads the
  body and answers `{"msgtype": "empty"}`): the server's CPU per request, from /proc;
- the load generator's and the fake session webhook's CPU per request (bench/rawhttp.py,
  bench/fake_webhook.py), which the bench machine pays too;
- two LangChain chat-model calls (the answer and the fact extraction mem0-style learning makes), on
  LangChain's own lightest fake (`FakeListChatModel.ainvoke`), callbacks and all;
- the reply's POST through aiohttp (the service's session-webhook client): the client's CPU;
- the database writes the guarantees need (inbox insert before the ack; reply stored with the message done;
  the reply marked sent with its history turn), each a SQLite transaction in WAL mode (synchronous=NORMAL,
  as the service), and the read of the history window; each handed to a database thread and back (the
  event loop never blocks on the database), which is measured apart.

It prints each step, their sum per message and that sum against the 2 ms budget. What the sum leaves out
is everything DingHook itself does: signature check, parsing, dedupe logic, prompts, the memory recall
(a vector search), token counting, tools, metrics, logs. Compare with bench/throughput.py's CPU per
answered message.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench import rawhttp  # noqa: E402
from bench.fake_webhook import fake_webhook  # noqa: E402
from bench.processes import child_env, cpu_count, cpu_seconds, free_port, started  # noqa: E402
from bench.settings import HOST  # noqa: E402

BUDGET_MS = 2.0  # 2 cores / 1,000 messages a second
CONNECTIONS = 16


def cpu_ms_per(runs: int, seconds: float) -> float:
    return seconds * 1000 / runs


async def per_call(call: Callable[[], Awaitable[Any]], runs: int) -> float:
    """This process's CPU ms per awaited call (after a warm-up)."""
    for _ in range(min(200, runs)):
        await call()
    before = time.process_time()
    for _ in range(runs):
        await call()
    return cpu_ms_per(runs, time.process_time() - before)


def http_floor(runs: int) -> dict[str, float]:
    """The echo server's, the generator's and the fake webhook's CPU per request, from /proc."""
    body = json.dumps({"msgtype": "text", "text": {"content": "你好" * 20}}, ensure_ascii=False).encode()
    request = rawhttp.Request(body, {"Content-Type": "application/json"})
    port = free_port()
    with (
        tempfile.TemporaryDirectory(prefix="dinghook-floor-") as folder,
        started(
            [sys.executable, "-m", "bench.echo_app", "--port", str(port)],
            env=child_env({}),
            cwd=Path(folder),
            log_path=Path(folder) / "echo.log",
            health_url=f"http://{HOST}:{port}/healthz",
        ) as echo,
    ):
        url = f"http://{HOST}:{port}/echo"
        payloads = [rawhttp.encode(url, request)] * runs
        rawhttp.fire(url, payloads[: runs // 10], connections=CONNECTIONS)  # warm-up
        server, generator = cpu_seconds(echo.pid), time.process_time()
        rawhttp.fire(url, payloads, connections=CONNECTIONS)
        ack = cpu_ms_per(runs, cpu_seconds(echo.pid) - server)
        load = cpu_ms_per(runs, time.process_time() - generator)
    with fake_webhook() as webhook_port:
        url = f"http://{HOST}:{webhook_port}/robot/sendBySession?session=floor"
        payloads = [rawhttp.encode(url, request)] * runs
        pid = json.loads(rawhttp_get(f"http://{HOST}:{webhook_port}/count"))["pid"]
        rawhttp.fire(url, payloads[: runs // 10], connections=CONNECTIONS)
        before = cpu_seconds(pid)
        rawhttp.fire(url, payloads, connections=CONNECTIONS)
        webhook = cpu_ms_per(runs, cpu_seconds(pid) - before)
        send = asyncio.run(aiohttp_send(url, body, runs))
    return {"ack": ack, "generator": load, "webhook": webhook, "send": send}


def rawhttp_get(url: str) -> str:
    import httpx

    return httpx.get(url, timeout=5.0, trust_env=False).text


async def aiohttp_send(url: str, body: bytes, runs: int) -> float:
    """The client side of the reply's POST: aiohttp on one keep-alive session, as the service sends."""
    import aiohttp

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100)) as session:

        async def post() -> None:
            async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as answer:
                await answer.read()

        return await per_call(post, runs)


async def langchain_floor(runs: int) -> float:
    """One chat-model call through LangChain on its own lightest fake model."""
    from langchain_core.language_models.fake_chat_models import FakeListChatModel
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

    model = FakeListChatModel(responses=["好的，明天下午三点提醒你开会。"])
    prompt = [
        SystemMessage("你是团队助手。" * 40),
        HumanMessage("你好"),
        AIMessage("你好！"),
        HumanMessage("明天开会"),
    ]
    return await per_call(lambda: model.ainvoke(prompt), runs)


async def database_floor(runs: int) -> dict[str, float]:
    """One write transaction and one read on SQLite (WAL, synchronous=NORMAL), and one hand-off to a
    database thread and back."""
    with tempfile.TemporaryDirectory(prefix="dinghook-floor-") as folder:
        conn = sqlite3.connect(Path(folder) / "floor.db", isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, scope TEXT, body TEXT)")
        conn.execute("CREATE INDEX t_scope ON t (scope, id)")
        counter = iter(range(10**9))

        def write() -> None:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO t (scope, body) VALUES (?, ?)", (f"s{next(counter) % 50}", "你好" * 40))
            conn.execute("COMMIT")

        def read() -> None:
            conn.execute(
                "SELECT id, body FROM t WHERE scope = ? ORDER BY id DESC LIMIT 21", ("s1",)
            ).fetchall()

        async def direct(work: Callable[[], None]) -> None:
            work()

        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(max_workers=1) as lane:

            async def hop() -> None:
                await loop.run_in_executor(lane, int)

            figures = {
                "write": await per_call(lambda: direct(write), runs),
                "read": await per_call(lambda: direct(read), runs),
                "hop": await per_call(hop, runs),
            }
        conn.close()
    return figures


def measure(runs: int) -> dict[str, Any]:
    http = http_floor(runs)
    model = asyncio.run(langchain_floor(runs))
    database = asyncio.run(database_floor(runs))
    steps = {
        "callback request and ack (uvicorn + FastAPI)": http["ack"],
        "load generator, per request": http["generator"],
        "fake session webhook, per reply": http["webhook"],
        "2 LangChain chat-model calls (answer, fact extraction)": 2 * model,
        "the reply's POST (aiohttp client)": http["send"],
        "3 SQLite write transactions (inbox, reply, sent + turn)": 3 * database["write"],
        "1 SQLite read (the history window)": database["read"],
        "4 hand-offs to a database thread": 4 * database["hop"],
    }
    total = sum(steps.values())
    return {
        "cores": cpu_count(),
        "budget_ms": BUDGET_MS,
        "steps_ms": steps,
        "floor_ms": total,
        "ceiling_per_s": cpu_count() * 1000 / total if total else 0.0,
    }


def render(result: dict[str, Any]) -> str:
    lines = [
        f"DingHook floor: CPU per answered message through the libraries alone, {result['cores']} cores",
        "",
    ]
    for name, ms in result["steps_ms"].items():
        lines.append(f"  {ms:6.3f} ms  {name}")
    lines += [
        f"  {result['floor_ms']:6.3f} ms  in all, before any code of DingHook's",
        "",
        f"budget for 1,000 answered messages a second: {result['budget_ms']:.1f} ms a message;"
        f" these steps alone allow at most {result['ceiling_per_s']:,.0f}/s on {result['cores']} cores",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=5000, help="calls per step (default 5000)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
    result = measure(args.runs)
    print(json.dumps(result, ensure_ascii=False, indent=2) if args.json else render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
