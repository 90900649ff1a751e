"""Long-term memory: search latency at 1k and 10k stored memories, and add throughput.

Run from the repository root:

    python bench/memory_search.py                 # 1k and 10k memories, 100 people
    python bench/memory_search.py --sizes 1000 --people 50 --queries 200
    python bench/memory_search.py --chroma        # on a Chroma server (started here), as replicas use

Uses the real store (mem0 + embedded Qdrant in a temporary folder) and the embedder mock mode uses
(the bundled offline USE model), as the service does. Prints figures; asserts nothing about timing.
Targets: search p95 <= 20 ms at 10k; <= 25 ms added to a reply at p50 (recall includes the query embedding).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from agent.memory.embeddings import LocalEmbeddings  # noqa: E402
from agent.memory.service import MemoryService  # noqa: E402
from agent.messages import IncomingMessage  # noqa: E402
from agent.model.mock_memory import MockExtractionModel  # noqa: E402
from agent.prompts.loader import load_prompts  # noqa: E402
from agent.settings.config import Settings  # noqa: E402
from agent.storage.database import Database  # noqa: E402

TOPICS = ["喜欢", "不喜欢", "对{}过敏", "住在{}", "在{}工作", "每周去{}", "养了一只{}", "正在学习{}"]
THINGS = [
    "花生",
    "猫",
    "篮球",
    "杭州",
    "北京",
    "游泳",
    "Python",
    "咖啡",
    "日语",
    "登山",
    "海鲜",
    "狗",
    "吉他",
    "围棋",
]
QUESTIONS = ["我能吃什么零食？", "周末适合做什么？", "推荐一本书", "我住在哪里？", "帮我安排一下健身计划"]


def fact(rng: random.Random) -> str:
    topic = rng.choice(TOPICS)
    thing = rng.choice(THINGS)
    return (
        "用户"
        + (topic.format(thing) if "{}" in topic else topic + thing)
        + f"（第{rng.randint(1, 999)}次提到）"
    )


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def message(person: int, text: str) -> IncomingMessage:
    return IncomingMessage(
        message_id="bench", conversation_id=f"cid-{person}", is_group=False, person_id=f"corp:p{person}",
        sender_id=f"s{person}", sender_staff_id=f"p{person}", sender_nick=f"用户{person}", text=text,
    )  # fmt: skip


async def run(sizes: list[int], people: int, queries: int, chroma_url: str | None = None) -> None:
    rng = random.Random(7)
    with tempfile.TemporaryDirectory(prefix="dingbot-bench-") as folder:
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None,
            force_mock_openai=True,
            database_path=Path(folder) / "bench.db",
            memory_top_k=5,
            chroma_url=chroma_url,
        )
        database = Database(settings.database_path)
        await database.open()
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
        stored = 0
        where = f"a Chroma server ({chroma_url}), cached per person" if chroma_url else "embedded Qdrant"
        print(
            f"DingHook memory bench: {where} + USE embedder, {people} people, "
            f"Python {sys.version.split()[0]}, 2 cores shared with nothing else"
        )
        for size in sorted(sizes):
            started = time.perf_counter()
            batch = size - stored
            for _ in range(batch):
                person = rng.randrange(people)
                where = {"chat": "direct", "conversation_id": f"cid-{person}"}
                await service._on_thread(lambda p=person, w=where, s=store: s.add(fact(rng), f"corp:p{p}", w))
            elapsed = time.perf_counter() - started
            stored = size
            print(
                f"\n{size} memories stored (added {batch} in {elapsed:.1f} s: {batch / elapsed:.0f} adds/s)"
            )
            await service.close()  # reopen, as after a restart: the index is preloaded from the store
            t0 = time.perf_counter()
            await service.open()
            print(f"  open with {size} memories (incl. index preload): {time.perf_counter() - t0:.2f} s")
            store = service._store
            assert store is not None
            recall_ms: list[float] = []
            for _ in range(queries):
                person = rng.randrange(people)
                t0 = time.perf_counter()
                await service.recall(message(person, rng.choice(QUESTIONS)))
                recall_ms.append((time.perf_counter() - t0) * 1000)
            print(
                "  recall (embed query + search, as a reply pays it): "
                f"p50 {statistics.median(recall_ms):.1f} ms, "
                f"p95 {pct(recall_ms, 95):.1f} ms, max {max(recall_ms):.1f} ms over {queries} queries"
            )
            vector = LocalEmbeddings().embed_query("我能吃什么零食？")

            async def searches(s: Any = store, v: list[float] = vector) -> list[float]:
                timings = []
                for _ in range(queries):
                    person = rng.randrange(people)
                    t0 = time.perf_counter()
                    await service._on_thread(
                        lambda p=person: s.search_vector(v, [{"user_id": f"corp:p{p}"}], 5)
                    )
                    timings.append((time.perf_counter() - t0) * 1000)
                return timings

            search_ms = await searches()
            print(
                f"  search only (vector given): p50 {statistics.median(search_ms):.1f} ms, "
                f"p95 {pct(search_ms, 95):.1f} ms   target p95 <= 20 ms"
            )
            if chroma_url:  # what a replica pays while it cannot trust its cache: the server's own search
                store.cache_trusted = False
                server_ms = await searches()
                store.cache_trusted = True
                print(
                    f"  search on the server (cache not trusted): p50 {statistics.median(server_ms):.1f} ms, "
                    f"p95 {pct(server_ms, 95):.1f} ms"
                )
        await service.close()
        await database.close()


def run_on_chroma(memories: int, people: int = 100, queries: int = 200) -> None:
    """The bench on a Chroma server started for it (bench/replicas.py calls this)."""
    from bench.processes import chroma_server

    with (
        tempfile.TemporaryDirectory(prefix="dingbot-bench-chroma-") as folder,
        chroma_server(Path(folder)) as url,
    ):
        asyncio.run(run([memories], people, queries, url))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--people", type=int, default=100)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--chroma", action="store_true", help="on a Chroma server instead of embedded Qdrant")
    args = parser.parse_args()
    if args.chroma:
        for size in args.sizes:
            run_on_chroma(size, args.people, args.queries)
    else:
        asyncio.run(run(args.sizes, args.people, args.queries))


if __name__ == "__main__":
    main()
