"""Long-term memory quality: does the right fact reach the prompt when a person asks about it later?

Run from the repository root:

    python bench/memory_recall.py              # both runs (facts alone; with near-miss distractors)
    python bench/memory_recall.py --misses     # and list every question whose fact missed the top 3

Through the bot's own path, in mock mode: each fact is said in a one-to-one message and learned (the mock
extraction → the guard → mem0 with the offline embedder); each question is asked later in a new
conversation and recalled (MemoryService.recall); the chat prompt is rendered with what came back, and
the fact's rank is its place among the memories in that prompt. Data: bench/data/memory_recall.yaml.

Prints recall@1, recall@3 and MRR (ranks past 10 count 0) for the dev and held-out splits, Chinese and
English questions apart, and the recall latency. Asserts nothing: the figures go in the note and in
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from agent.memory.embeddings import LocalEmbeddings  # noqa: E402
from agent.memory.service import MemoryService  # noqa: E402
from agent.messages import IncomingMessage  # noqa: E402
from agent.model.mock_memory import MockExtractionModel  # noqa: E402
from agent.prompts.library import PromptLibrary  # noqa: E402
from agent.settings.config import Settings  # noqa: E402
from agent.storage.database import Database  # noqa: E402

DATA = REPO_ROOT / "bench" / "data" / "memory_recall.yaml"
PERSON = "corp:recall-bench"
DEPTH = 10  # memories recalled per question: ranks past this count as a miss (reciprocal rank 0)


@dataclass
class Fact:
    id: str
    say: str
    ask: list[str]
    split: str = "dev"
    memories: list[str] = field(default_factory=list)  # what was stored from `say`


@dataclass
class Outcome:
    fact: Fact
    question: str
    rank: int | None  # 1-based place among the prompt's memories; None: not there
    seconds: float

    @property
    def english(self) -> bool:
        return self.question.isascii()


def load(path: Path = DATA) -> tuple[list[Fact], list[str]]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    facts = [Fact(**item) for item in data["facts"]]
    return facts, list(data.get("distractors") or [])


def _message(number: int, text: str, conversation: str) -> IncomingMessage:
    return IncomingMessage(
        message_id=f"recall-{number}",
        conversation_id=conversation,
        is_group=False,
        person_id=PERSON,
        sender_id="recall-bench",
        sender_staff_id="recall-bench",
        sender_nick="小林",
        text=text,
    )


def rank_in_prompt(system: str, memories: list[str], wanted: list[str]) -> int | None:
    """The place of the first of `wanted` among `memories`, read from the rendered prompt's order."""
    placed = sorted((system.find(text), text) for text in memories if system.find(text) >= 0)
    for place, (_, text) in enumerate(placed, start=1):
        if text in wanted:
            return place
    return None


async def measure(facts: list[Fact], distractors: list[str], folder: Path) -> list[Outcome]:
    """Tell everything, then ask every question; one outcome per question."""
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        force_mock_openai=True,
        database_path=folder / "recall.db",
        memory_top_k=DEPTH,
        memory_max_chars=20000,
    )
    database = Database(settings.database_path)
    await database.open()
    prompts = PromptLibrary(settings.prompts_dir)
    service = MemoryService(
        settings,
        prompts=prompts,
        extraction_model=MockExtractionModel(),
        embeddings=LocalEmbeddings(),
        database=database,
    )
    await service.open()
    try:
        told = [(fact, fact.say) for fact in facts] + [(None, text) for text in distractors]
        for number, (fact, text) in enumerate(told):
            message = _message(number, text, "cid-told")
            before = {text for _, text in await service.list_memories(message)}
            await service.learn(message)
            after = [text for _, text in await service.list_memories(message)]
            if fact is not None:
                fact.memories = [text for text in after if text not in before]
        outcomes = []
        for fact in facts:
            for question in fact.ask:
                message = _message(len(outcomes), question, f"cid-ask-{len(outcomes)}")
                started = time.perf_counter()
                memories = await service.recall(message)
                seconds = time.perf_counter() - started
                rendered = prompts.defaults.chat.format_messages(
                    bot_name="小钉",
                    now="",
                    timezone="Asia/Shanghai",
                    speaker_nick="小林",
                    chat_place="",
                    memories=prompts.defaults.render_memories(memories),
                    summary="",
                    history=[],
                    text=question,
                )
                system = str(rendered[0].content)
                outcomes.append(
                    Outcome(fact, question, rank_in_prompt(system, memories, fact.memories), seconds)
                )
        return outcomes
    finally:
        await service.close()
        await database.close()


def figures(outcomes: list[Outcome]) -> dict[str, float]:
    if not outcomes:
        return {"n": 0, "r1": 0.0, "r3": 0.0, "mrr": 0.0}
    n = len(outcomes)
    return {
        "n": n,
        "r1": sum(o.rank == 1 for o in outcomes) / n,
        "r3": sum(o.rank is not None and o.rank <= 3 for o in outcomes) / n,
        "mrr": sum(1 / o.rank for o in outcomes if o.rank) / n,
    }


def _line(label: str, outcomes: list[Outcome]) -> str:
    f = figures(outcomes)
    return f"  {label:<22} n={f['n']:>3}  recall@1 {f['r1']:.2f}  recall@3 {f['r3']:.2f}  MRR {f['mrr']:.2f}"


def report(title: str, outcomes: list[Outcome], misses: bool) -> None:
    print(f"\n{title}")
    for split in ("dev", "heldout"):
        part = [o for o in outcomes if o.fact.split == split]
        if not part:
            continue
        print(_line(f"{split}", part))
        print(_line(f"{split} · 中文 questions", [o for o in part if not o.english]))
        print(_line(f"{split} · English questions", [o for o in part if o.english]))
    print(_line("all", outcomes))
    ms = sorted(o.seconds * 1000 for o in outcomes)
    print(f"  recall latency: p50 {statistics.median(ms):.1f} ms, p95 {ms[int(0.95 * (len(ms) - 1))]:.1f} ms")
    lost = [f.id for f in {o.fact.id: o.fact for o in outcomes}.values() if not f.memories]
    if lost:
        print(f"  facts that stored nothing (count as misses): {', '.join(lost)}")
    if misses:
        for o in outcomes:
            if o.rank is None or o.rank > 3:
                print(f"    miss [{o.fact.split}] {o.fact.id}: {o.question!r} → rank {o.rank}")


async def run(misses: bool, only: str | None) -> dict[str, Any]:
    facts, distractors = load()
    facts = [f for f in facts if only in (None, f.split)]
    print(
        f"DingHook memory recall: {len(facts)} facts "
        f"({sum(f.split == 'heldout' for f in facts)} held out), "
        f"{sum(len(f.ask) for f in facts)} questions, {len(distractors)} distractors; mock mode, "
        f"offline USE embedder, embedded Qdrant"
    )
    results: dict[str, Any] = {}
    for title, told in (("facts alone", []), ("with near-miss distractors told too", distractors)):
        with tempfile.TemporaryDirectory(prefix="dingbot-recall-") as folder:
            fresh = [f for f in load()[0] if only in (None, f.split)]
            outcomes = await measure(fresh, told, Path(folder))
        report(title, outcomes, misses)
        results[title] = outcomes
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--misses", action="store_true", help="list the questions whose fact missed the top 3"
    )
    parser.add_argument("--split", choices=["dev", "heldout"], help="only this split's facts")
    args = parser.parse_args()
    asyncio.run(run(args.misses, args.split))


if __name__ == "__main__":
    main()
