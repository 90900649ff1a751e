"""The prompt's token budget over a long conversation, and what the rolling summary costs the reply.

Run from the repository root:

    python bench/prompt_budget.py              # 200 turns, default HISTORY_TOKENS / PROMPT_TOKEN_BUDGET
    python bench/prompt_budget.py --turns 400

Through the real assistant (mock mode, SQLite in a temporary folder, the real prompts) with a scripted chat
model whose answers are ~120 tokens, like a real model's. Prints the prompt's tokens (cl100k_base) at
turns 1, 10, 50, 100, 200; the character estimate against the tokenizer; the reply's latency with the
summary on and off while every fold takes SLOW_FOLD_SECONDS (the reply must not pay it); the tokenizer's
cost per message. Asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from langchain_core.language_models import BaseChatModel  # noqa: E402
from langchain_core.messages import AIMessage, BaseMessage  # noqa: E402
from langchain_core.outputs import ChatGeneration, ChatResult  # noqa: E402

from agent.assembly import open_agent  # noqa: E402
from agent.messages import IncomingMessage  # noqa: E402
from agent.model.context import estimate_tokens  # noqa: E402
from agent.model.mock_memory import MockSummaryModel  # noqa: E402
from agent.model.scripted import RecordingChatModel  # noqa: E402
from agent.model.tokens import count_messages, count_tokens, message_text, tokenizer_name  # noqa: E402
from agent.settings.config import Settings  # noqa: E402

SLOW_FOLD_SECONDS = 0.2
ANSWER = (
    "好的，我们来梳理一下：第一，先和客户确认需求范围与验收标准；第二，把任务拆到每个人，写清截止时间；"
    "第三，每天站会同步进度与风险，有阻塞当天解决。汇报材料建议包括进度表、风险清单和下一步计划。"
)
QUESTIONS = [
    "项目代号 P{n:03d} 的进度怎么样？我们下周要向客户汇报，需要准备哪些材料？",
    "P{n:03d} 的测试环境又挂了，能帮我想想可能是什么原因吗？",
    "帮我写一段给客户的邮件，说明 P{n:03d} 延期两天的原因。",
]


class SlowSummary(BaseChatModel):
    """The mock summariser, SLOW_FOLD_SECONDS slower: a real model's summary takes time."""

    @property
    def _llm_type(self) -> str:
        return "slow-summary"

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
        raise NotImplementedError

    async def _agenerate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
        await asyncio.sleep(SLOW_FOLD_SECONDS)
        text = MockSummaryModel().answer(messages)
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])


def _message(n: int) -> IncomingMessage:
    return IncomingMessage(
        message_id=f"budget-{n}", conversation_id="cid-budget", is_group=False, person_id="corp:budget",
        sender_id="budget", sender_staff_id="budget", sender_nick="王小丽",
        text=QUESTIONS[n % len(QUESTIONS)].format(n=n),
    )  # fmt: skip


async def converse(
    turns: int, summary_tokens: int, folder: Path
) -> tuple[list[list[BaseMessage]], list[float]]:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        force_mock_openai=True,
        database_path=folder / f"budget-{summary_tokens}.db",
        rate_limit_per_minute=0,
        summary_tokens=summary_tokens,
    )
    model = RecordingChatModel(responses=[ANSWER] * turns)
    seconds: list[float] = []
    async with open_agent(settings, memory=False, model=model, summary_model=SlowSummary()) as agent:
        assistant = agent.assistant
        for n in range(1, turns + 1):
            message = _message(n)
            started = time.perf_counter()
            reply = await assistant.reply(message)
            await assistant.remember(message, reply)  # what the dispatcher awaits; the fold is not
            seconds.append(time.perf_counter() - started)
            await asyncio.sleep(SLOW_FOLD_SECONDS * 1.5)  # a person's pace: the fold finishes in between
        await agent.summaries.settle()
    return model.prompts, seconds


def _ms(values: list[float], q: float) -> str:
    ordered = sorted(values)
    return f"{ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1000:.1f}"


async def run(turns: int) -> None:
    defaults = Settings(_env_file=None, force_mock_openai=True)  # type: ignore[call-arg]
    print(
        f"DingHook prompt budget: {turns} turns, HISTORY_TURNS={defaults.history_turns}, "
        f"HISTORY_TOKENS={defaults.history_tokens}, PROMPT_TOKEN_BUDGET={defaults.prompt_token_budget}, "
        f"SUMMARY_TOKENS={defaults.summary_tokens}; tokens counted with {tokenizer_name()}"
    )
    with tempfile.TemporaryDirectory(prefix="dingbot-budget-") as folder:
        prompts, with_summary = await converse(turns, defaults.summary_tokens, Path(folder))
        _, without = await converse(turns, 0, Path(folder))
    tokens = [count_messages(p) for p in prompts]
    marks = [n for n in (1, 10, 50, 100, 200, 400) if n <= turns]
    print("\nprompt tokens per turn (system + memories + summary + history + message):")
    for n in marks:
        prompt = prompts[n - 1]
        summary = "<conversation_summary>" in message_text(prompt[0])
        history = (len(prompt) - 2) // 2
        print(
            f"  turn {n:>3}: {tokens[n - 1]:>5} tokens, {history} turns of history, "
            f"summary: {'yes' if summary else 'no'}"
        )
    full = tokens[min(len(tokens), 20) - 1 :]
    print(
        f"  after the window fills (turn 20 on): min {min(full)}, max {max(full)}, "
        f"mean {statistics.mean(full):.0f}"
    )

    texts = [message_text(m) for p in prompts for m in p]
    exact = sum(count_tokens(t) for t in texts)
    estimate = sum(estimate_tokens(t) for t in texts)
    print(
        f"\ncharacter estimate vs cl100k_base over {len(texts)} messages: {estimate / exact:.2f}× "
        f"({estimate} vs {exact})"
    )

    print(
        "\nreply latency (reply + remember, as the dispatcher awaits it), "
        f"every fold {SLOW_FOLD_SECONDS * 1000:.0f} ms:"
    )
    print(f"  summary on : p50 {_ms(with_summary, 0.5)} ms, p95 {_ms(with_summary, 0.95)} ms")
    print(f"  summary off: p50 {_ms(without, 0.5)} ms, p95 {_ms(without, 0.95)} ms")

    sample = [message_text(m) for m in prompts[-1]]
    started = time.perf_counter()
    for _ in range(200):
        for text in sample:
            count_tokens(text)
    per = (time.perf_counter() - started) / (200 * len(sample)) * 1e6
    print(
        f"\ntokenizer cost: {per:.0f} µs per message "
        f"({sum(len(t) for t in sample) // len(sample)} characters on average)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=200)
    args = parser.parse_args()
    asyncio.run(run(args.turns))


if __name__ == "__main__":
    main()
