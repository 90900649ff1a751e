"""The console under a full database (issue #17): how long the overview and the conversations pages take to
render with 100k messages and 10k memories stored, and whether someone browsing slows the acks.

Run from the repository root:

    python bench/console.py                       # 100k messages over 7 days, 10k memories
    python bench/console.py --messages 20000 --memories 1000 --json

It fills a database the way the service does (each message: an inbox row, its sent reply in the outbox, a
human and an AI turn in the history, 2,000 conversations, spread over --days) and the memory store (mem0 +
embedded Qdrant + the offline embedder, --memories facts for 500 people), starts the real service on it
(`python -m dingbot.server`, mock mode, CONSOLE_PASSWORD) with a stand-in session webhook, logs in and:

1. renders /console (the overview), /console/conversations and a person's page --renders times each, one
   after another: p50/p95 of the time to the whole page;
2. samples acks of plain text callbacks at --ack-rate per second from a separate process, first alone, then
   while a client loads the overview and the conversations page in turn, --browse-rate pages a second (a
   person clicking; 0: back to back, as fast as they answer): ack p50/p99 for both.

Goals are printed beside the figures, not asserted: page p95 <= 150 ms; ack p99 while browsing within 5 ms
of the baseline's. Exit code 0 when every page rendered with 200; 2 when the bench could not run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.fake_webhook import fake_webhook
from bench.media import AckSampler
from bench.processes import run_bench, scratch, start_service
from bench.report import percentile
from bench.settings import BENCH_SECRET, HOST

GOAL_PAGE_P95_MS = 150.0
GOAL_ACK_EXTRA_MS = 5.0
PASSWORD = "bench console password"
CONVERSATIONS = 2000
PEOPLE = 500
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


async def _fill(database_path: Path, messages: int, memories: int, days: float) -> None:
    from agent.memory.embeddings import LocalEmbeddings
    from agent.memory.service import MemoryService
    from agent.model.mock_memory import MockExtractionModel
    from agent.prompts.loader import load_prompts
    from agent.settings.config import Settings
    from agent.storage.connection import transaction
    from agent.storage.database import Database
    from bench.memory_search import fact

    settings = Settings(_env_file=None, force_mock_openai=True, database_path=database_path)  # type: ignore[call-arg]
    database = Database(database_path)
    await database.open()
    rng = random.Random(17)
    now = time.time()
    span = days * 86400

    def rows(conn: Any) -> None:
        inbox, outbox, history = [], [], []
        for n in range(messages):
            at = now - span * (1 - n / messages)  # oldest first, evenly
            person = f"corp:p{n % PEOPLE}"
            conversation = f"cid{n % CONVERSATIONS:05d}=="
            msg_id = f"bench-msg-{n:07d}"
            inbox.append((msg_id, "done", at, at + 0.4, person))
            outbox.append((msg_id, 0, "reply", person, "sent", 1, at + 0.5, at + 0.3, at + 0.5))
            scope = f"{conversation}\x1f{person}"
            history.append((scope, person, "human", f"第 {n} 条消息：帮我看看这个问题", at))
            history.append((scope, person, "ai", f"这是第 {n} 条回复。", at + 0.5))
        with transaction(conn):
            conn.executemany(
                "INSERT INTO inbox (msg_id, state, received_at, updated_at, person_id) "
                "VALUES (?, ?, ?, ?, ?)",
                inbox,
            )
            conn.executemany(
                "INSERT INTO outbox (msg_id, part, channel, person_id, state, attempts, next_attempt_at, "
                "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                outbox,
            )
            conn.executemany(
                "INSERT INTO history (scope, person_id, role, content, created_at) VALUES (?, ?, ?, ?, ?)",
                history,
            )

    await database.run(rows)
    service = MemoryService(
        settings,
        prompts=load_prompts(settings.prompts_dir),
        extraction_model=MockExtractionModel(),
        embeddings=LocalEmbeddings(),
        database=database,
    )
    await service.open()
    store = service._store
    assert store is not None
    for n in range(memories):
        person = f"corp:p{n % PEOPLE}"
        where = {"chat": "direct", "conversation_id": f"cid{n % CONVERSATIONS:05d}=="}
        await service._on_thread(lambda p=person, w=where, s=store: s.add(fact(rng), p, w))
    await service.close()
    await database.close()


def _log_in(client: httpx.Client) -> None:
    form = client.get("/console/login")
    found = _CSRF.search(form.text)
    if found is None:
        raise RuntimeError("the console's login page has no form: is CONSOLE_PASSWORD set?")
    answer = client.post("/console/login", data={"password": PASSWORD, "csrf": found.group(1)})
    if answer.status_code != 303:
        raise RuntimeError(f"login failed: HTTP {answer.status_code}")


def _render_times(client: httpx.Client, path: str, times: int) -> tuple[list[float], int]:
    spent, failures = [], 0
    for _ in range(times):
        started = time.perf_counter()
        response = client.get(path)
        spent.append((time.perf_counter() - started) * 1000)
        failures += response.status_code != 200
    return spent, failures


def _stats(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0, "p50": 0.0, "p95": 0.0, "p99": 0.0}
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "p99": percentile(values, 99),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        room = scratch(stack, "dinghook-console-")
        started = time.perf_counter()
        asyncio.run(_fill(room.folder / "bench.db", args.messages, args.memories, args.days))
        filled_s = time.perf_counter() - started
        webhook_port = stack.enter_context(fake_webhook())
        webhook = f"http://{HOST}:{webhook_port}"
        service = start_service(
            stack,
            room,
            {
                "FORCE_MOCK_OPENAI": "1",
                "SECRET": BENCH_SECRET,
                "CONSOLE_PASSWORD": PASSWORD,
                "RATE_LIMIT_PER_MINUTE": "0",
            },
        )
        client = stack.enter_context(httpx.Client(base_url=service, timeout=30, trust_env=False))
        _log_in(client)
        pages = {
            "overview": "/console",
            "conversations": "/console/conversations",
            "person": "/console/people/view?person=corp%3Ap7",
        }
        for path in pages.values():  # warm: templates compiled, the first query planned
            client.get(path)
        renders: dict[str, list[float]] = {}
        failures = 0
        for name, path in pages.items():
            renders[name], failed = _render_times(client, path, args.renders)
            failures += failed
        url = f"{service}/dingtalk/callback"
        with AckSampler(url, webhook, "alone", args.ack_rate) as alone:
            time.sleep(args.seconds)
        stop = threading.Event()
        browsed: list[float] = []

        def browse() -> None:
            with httpx.Client(base_url=service, timeout=30, trust_env=False, cookies=client.cookies) as own:
                while not stop.is_set():
                    for path in (pages["overview"], pages["conversations"]):
                        began = time.perf_counter()
                        own.get(path)
                        browsed.append((time.perf_counter() - began) * 1000)
                        if args.browse_rate > 0:  # a person reads between clicks; 0: as fast as it answers
                            stop.wait(max(0.0, 1 / args.browse_rate - (time.perf_counter() - began)))

        browser = threading.Thread(target=browse, daemon=True)
        with AckSampler(url, webhook, "browsing", args.ack_rate) as during:
            browser.start()
            time.sleep(args.seconds)
            stop.set()
        browser.join(30)
    return {
        "messages": args.messages,
        "memories": args.memories,
        "days": args.days,
        "fill_s": round(filled_s, 1),
        "pages_ms": {name: _stats(values) for name, values in renders.items()},
        "page_failures": failures,
        "ack_ms_alone": _stats(alone.latencies),
        "ack_ms_browsing": _stats(during.latencies),
        "pages_while_acking": len(browsed),
        "browse_rate": args.browse_rate,
    }


def render(result: dict[str, Any]) -> str:
    lines = [
        f"database: {result['messages']:,} messages over {result['days']:g} days, "
        f"{result['memories']:,} memories (filled in {result['fill_s']} s)"
    ]
    for name, stats in result["pages_ms"].items():
        lines.append(
            f"{name:>13}: p50 {stats['p50']:.1f} ms, p95 {stats['p95']:.1f} ms (n={stats['n']}; "
            f"goal p95 <= {GOAL_PAGE_P95_MS:g} ms)"
        )
    alone, browsing = result["ack_ms_alone"], result["ack_ms_browsing"]
    lines.append(f"acks alone: p50 {alone['p50']:.1f} ms, p99 {alone['p99']:.1f} ms (n={alone['n']})")
    lines.append(
        f"acks while someone browses ({result['pages_while_acking']} pages, "
        f"{result['browse_rate'] or 'as fast as they come'}/s): p50 {browsing['p50']:.1f} ms, "
        f"p99 {browsing['p99']:.1f} ms (n={browsing['n']}); p99 {browsing['p99'] - alone['p99']:+.1f} ms "
        f"(goal <= +{GOAL_ACK_EXTRA_MS:g} ms)"
    )
    if result["page_failures"]:
        lines.append(f"{result['page_failures']} page loads did not answer 200")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--memories", type=int, default=10_000)
    parser.add_argument("--days", type=float, default=7.0, help="the messages are spread over this many days")
    parser.add_argument("--renders", type=int, default=50, help="loads of each page")
    parser.add_argument("--ack-rate", type=float, default=20.0, help="text callbacks per second alongside")
    parser.add_argument("--seconds", type=float, default=15.0, help="how long each ack sample runs")
    parser.add_argument(
        "--browse-rate",
        type=float,
        default=2.0,
        help="pages per second the browsing client loads (0: flat out)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    return run_bench(lambda: run(args), render, lambda r: r["page_failures"] == 0, as_json=args.json)


if __name__ == "__main__":
    sys.exit(main())
