"""The assistant: an LCEL chain (prompt | chat model | output parser) fed with history.

No HTTP and no DingTalk here: it takes an IncomingMessage and returns a Reply.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

from agent.commands import CommandRunner, parse_command
from agent.errors import ModelError, ModelErrorKind
from agent.formatting import has_structure, title_of
from agent.limits import Limiter, RateLimiter
from agent.media.service import MediaService
from agent.media.turn import MediaTurn, with_pictures
from agent.memory.history import HistoryStore, Turn
from agent.memory.service import MemoryService
from agent.memory.summary import Summaries
from agent.messages import ContentKind, IncomingMessage, Reply
from agent.model.answer import AnswerStream, Chain, ModelAnswer, ask
from agent.model.context import ContextWindow
from agent.model.errors import classify_model_error
from agent.model.health import ModelHealth
from agent.model.tokens import count_messages
from agent.model.usage import UsageBook, on_behalf_of
from agent.observe import NoObserver, Observer
from agent.prompts.library import PromptLibrary
from agent.prompts.loader import PromptSet
from agent.remembering import Remembering
from agent.settings.config import Settings
from agent.tools.loop import ToolsUsedError, run_agent
from agent.tools.toolbox import Toolbox, ToolWatcher

log = logging.getLogger(__name__)


class Assistant:
    def __init__(
        self,
        *,
        settings: Settings,
        prompts: PromptLibrary,
        model: BaseChatModel,
        history: HistoryStore,
        memory: MemoryService | None = None,
        summaries: Summaries | None = None,
        usage: UsageBook | None = None,
        clock: Callable[[], datetime] | None = None,
        observer: Observer | None = None,
        limiter: Limiter | None = None,
        toolbox: Toolbox | None = None,
        media: MediaService | None = None,
        vision_model: BaseChatModel | None = None,
    ) -> None:
        self.settings = settings
        self.prompts = prompts
        self.model = model
        self.history = history
        self.memory = memory
        self.summaries = summaries  # the rolling summary of what left the window (agent/memory/summary.py)
        self.usage = usage  # tokens per person (/usage)
        self._chains: weakref.WeakKeyDictionary[PromptSet, Chain] = weakref.WeakKeyDictionary()
        self.observer: Observer = observer or NoObserver()
        self.health = ModelHealth(settings, self.observer)  # the model endpoint's state, for /readyz
        self.context = ContextWindow(settings)  # how much of the conversation fits the model
        self.limiter: Limiter = limiter or RateLimiter(settings.rate_limit_per_minute)
        self._clock = clock or (lambda: datetime.now(settings.timezone))
        self.toolbox = toolbox  # tools the model may call (reminders, MCP); None: it only talks
        self.media = media or MediaService(settings, None, None)  # pictures and files (agent/media)
        self.vision_model = vision_model or model  # VISION_MODEL: for turns with pictures
        # A model class without tool calling (a scripted fake) only talks.
        self._binds_tools = type(model).bind_tools is not BaseChatModel.bind_tools

    def history_scope(self, message: IncomingMessage) -> str:
        if message.is_group and self.settings.group_shared_context:
            return message.group_history_key
        return message.history_key

    def _human_entry(self, message: IncomingMessage, text: str | None = None) -> str:
        """How the person's words are given to the model and kept in history: marked as spoken for a voice
        message (chat.yaml `spoken`), with the nick when a group shares one history. `text`: the words as
        a turn with attachments writes them (agent/media/turn.py)."""
        if text is None:
            text = message.text
        if message.original_type == "audio":
            text = self.prompts_for(message).spoken.format(text=text)
        if message.is_group and self.settings.group_shared_context:
            return f"{message.sender_nick}: {text}"
        return text

    def prompts_for(self, message: IncomingMessage) -> PromptSet:
        """The prompts in use for this message's conversation (its group's overrides, else the defaults),
        reloaded first when a file in the prompts folder changed."""
        return self.prompts.for_conversation(message.conversation_id)

    def _chain(self, prompts: PromptSet) -> Chain:
        """prompt | model, built once per loaded prompt version."""
        chain = self._chains.get(prompts)
        if chain is None:
            chain = self._chains[prompts] = prompts.chat | self.model
        return chain

    async def build_inputs(
        self,
        message: IncomingMessage,
        memories: list[str] | None = None,
        prompts: PromptSet | None = None,
        turn: MediaTurn | None = None,
    ) -> dict[str, Any]:
        """The variables the chat prompt is rendered with (`turn`: the message's attachments, read)."""
        prompts = prompts or self.prompts_for(message)
        scope = self.history_scope(message)
        if self.summaries:
            turns, summary = await self.summaries.window_and_text(scope)
        else:
            turns, summary = await self.history.recent(scope), ""
        history: list[BaseMessage] = []
        for earlier in turns:
            history.extend([HumanMessage(earlier.human), AIMessage(earlier.ai)])
        return {
            "bot_name": self.settings.bot_name,
            "now": prompts.render_now(self._clock()),
            "timezone": self.settings.bot_timezone,
            "speaker_nick": message.sender_nick or message.sender_id[-6:],
            "chat_place": prompts.render_chat_place(
                is_group=message.is_group, conversation_title=message.conversation_title
            ),
            "memories": prompts.render_memories(memories or []),
            "summary": prompts.render_summary(summary),
            "history": history,
            "text": self._human_entry(message, turn.text if turn else None),
        }

    async def reply(
        self,
        message: IncomingMessage,
        *,
        recalled: list[str] | None = None,
        stream: AnswerStream | None = None,
        watcher: ToolWatcher | None = None,
    ) -> Reply:
        """Answer one message. Never raises for model failures: the person gets a clear notice.

        `recalled` gives the long-term memories to use instead of asking the memory service (prompt
        regression cases script them). With `stream` the model's answer is streamed (`astream`) and
        `stream` sees it grow; commands and canned replies never reach it. `watcher` sees tool calls."""
        prompts = self.prompts_for(message)
        on_behalf_of.set(message.person_id)  # every model call from here on counts as theirs (/usage)
        if not await self.limiter.allow(message.person_id):
            return Reply(
                prompts.reply("rate_limited", limit=str(self.settings.rate_limit_per_minute)),
                canned=True,
            )
        if message.kind is ContentKind.EMPTY:
            return Reply(prompts.reply("empty", bot_name=self.settings.bot_name))
        if message.kind is ContentKind.UNSUPPORTED:
            if message.original_type == "audio":  # a voice message DingTalk heard no words in
                return Reply(prompts.reply("unheard"), canned=True)
            return Reply(prompts.unsupported_reply(message.original_type))
        command = parse_command(message.text) if message.kind is ContentKind.TEXT else None
        if command is not None:
            runner = CommandRunner(
                prompts=prompts,
                history=self.history,
                memory=self.memory,
                bot_name=self.settings.bot_name,
                reminders=self.toolbox.reminders if self.toolbox else None,
                usage=self.usage,
            )
            return await runner.run(command, message, self.history_scope(message))

        note = ""
        if len(message.text) > self.settings.max_message_chars:
            note = prompts.reply("truncated", limit=str(self.settings.max_message_chars)) + "\n"
            message = self._clipped(message)
        turn, unread = await self.media.turn(message, self.history_scope(message), prompts)
        if unread:
            note = f"{unread}\n{note}"
        if turn is not None and not (turn.pictures or turn.documents or message.text.strip()):
            # nothing of it could be read: only why (never an empty message)
            return Reply(unread or prompts.reply("empty", bot_name=self.settings.bot_name), canned=True)
        recall_started = time.perf_counter()
        if recalled is not None:
            memories = recalled
        else:
            memories = await self.memory.recall(message) if self.memory else []
            if self.memory:
                self.observer.memory_recall(time.perf_counter() - recall_started)
        seen = sum(picture.tokens for picture in turn.pictures) if turn is not None else 0
        inputs = self._fitted(prompts, await self.build_inputs(message, memories, prompts, turn), seen)
        heard = self._human_entry(message, turn.history) if turn is not None else ""
        started = time.perf_counter()
        try:
            answered = await self._ask(prompts, inputs, stream, message, watcher, turn)
            if not answered.text:
                raise ModelError(ModelErrorKind.UNKNOWN, "the model returned an empty answer", "retry")
        except ToolsUsedError as acted:
            # The tools did act (a reminder set): say what they did rather than only that it failed.
            log.warning(
                "model call failed after tool calls: %s. Fix: %s (answering with the tools' results)",
                acted.cause,
                acted.fix,
            )
            self.observer.model_call(time.perf_counter() - started, acted.kind.value)
            told = await self.health.answer_failed(acted)  # the endpoint's state, operators' alert
            if acted.results:
                return Reply("\n".join(acted.results), heard=heard)
            return Reply(prompts.model_error_reply(acted.kind, operators_told=told), failed=True)
        except Exception as exc:
            error = exc if isinstance(exc, ModelError) else classify_model_error(exc, self.settings)
            log.debug("model call failure detail", exc_info=True)
            self.observer.model_call(time.perf_counter() - started, error.kind.value)
            log.warning(
                "model call failed after %.0f ms: %s. Fix: %s",
                (time.perf_counter() - started) * 1000,
                error.cause,
                error.fix,
            )
            if turn is not None and turn.pictures and self.media.refuses_pictures(error):
                return await self._answer_blind(message, memories, prompts, turn, note, watcher)
            told = await self.health.answer_failed(error)
            if error.context_exceeded:  # even the new message alone is too long, or nothing fits
                return Reply(prompts.reply("context_too_long"), failed=True)
            return Reply(prompts.model_error_reply(error.kind, operators_told=told), failed=True)
        self.observer.model_call(time.perf_counter() - started, None)
        self.health.answered()
        answer = answered.text
        log.info("model answered in %.0f ms (%d chars)", (time.perf_counter() - started) * 1000, len(answer))
        log.debug("model answer: %s", answer)
        if answered.truncated:  # cut at MAX_TOKENS: said so, never sent as if it were whole
            log.warning("model answer cut at MAX_TOKENS=%d (finish_reason=length)", self.settings.max_tokens)
            self.observer.answer_truncated()
            answer += "\n\n" + prompts.reply("answer_truncated")
        structured = has_structure(answer)
        title = (title_of(answer) or prompts.reply("markdown_title")) if structured else ""
        return Reply(note + answer, markdown=structured, title=title, heard=heard)

    async def _answer_blind(
        self,
        message: IncomingMessage,
        memories: list[str],
        prompts: PromptSet,
        turn: MediaTurn,
        note: str,
        watcher: ToolWatcher | None,
    ) -> Reply:
        """The endpoint takes no pictures: say so, and answer the words and files without them."""
        refusal = prompts.media_reply("images_unsupported")
        if not message.text.strip() and not turn.documents:
            return Reply(note + refusal, canned=True)
        blind = self.media.without_pictures(turn, prompts)
        inputs = self._fitted(prompts, await self.build_inputs(message, memories, prompts, blind))
        try:
            answered = await self._ask(prompts, inputs, None, message, watcher, blind)
        except Exception as exc:  # the endpoint failing now too: the person still hears why
            log.warning("model call failed after a refused picture: %s", type(exc).__name__)
            return Reply(note + refusal, canned=True)
        self.health.answered()
        heard = self._human_entry(message, turn.history)
        return Reply(f"{note}{refusal}\n\n{answered.text}", heard=heard)

    def _fitted(self, prompts: PromptSet, inputs: dict[str, Any], pictures: int = 0) -> dict[str, Any]:
        """The recent turns that fit the model's context beside the system prompt, the new message (and
        the `pictures` tokens of its pictures) and MAX_TOKENS of answer: a long answer earlier never makes
        the next message too long."""
        if not inputs["history"]:
            return inputs
        fixed = prompts.chat.format_messages(**{**inputs, "history": []})
        history = self.context.fit(fixed, inputs["history"], self.settings.max_tokens + pictures)
        if budget := self.settings.prompt_token_budget:  # PROMPT_TOKEN_BUDGET: fewer of the oldest turns
            spent = count_messages(fixed) + pictures + count_messages(history)
            while history and spent > budget:
                spent -= count_messages(history[:2])
                history = history[2:]
        if len(history) < len(inputs["history"]):
            log.info(
                "history: %d of %d turns fit the context", len(history) // 2, len(inputs["history"]) // 2
            )
        return {**inputs, "history": history}

    async def _ask(
        self,
        prompts: PromptSet,
        inputs: dict[str, Any],
        stream: AnswerStream | None,
        message: IncomingMessage,
        watcher: ToolWatcher | None,
        turn: MediaTurn | None = None,
    ) -> ModelAnswer:
        """One answer; when the endpoint says the prompt is longer than its context (its tokenizer counts
        more than the estimate), once more with what fits its stated limit, else with no history."""
        try:
            return await self._answer(prompts, inputs, stream, message, watcher, turn)
        except ModelError as error:
            if not error.context_exceeded:
                raise
            self.context.learn_from(error.said)
            shorter = self._fitted(prompts, inputs) if self.context.learned else {**inputs, "history": []}
            log.warning("the model refused the prompt as too long for its context: retrying once, shorter")
            return await self._answer(prompts, shorter, stream, message, watcher, turn)

    async def _answer(
        self,
        prompts: PromptSet,
        inputs: dict[str, Any],
        stream: AnswerStream | None,
        message: IncomingMessage,
        watcher: ToolWatcher | None,
        turn: MediaTurn | None = None,
    ) -> ModelAnswer:
        """The model's answer: with tools, through the agent loop; without, prompt | model. Pictures go
        to VISION_MODEL (else the model) as content parts of the person's message."""
        retries = self.settings.openai_max_retries
        tools = self.toolbox.for_message(message, prompts) if self.toolbox and self._binds_tools else []
        pictures = turn.pictures if turn is not None else []
        model = self.vision_model if pictures else self.model
        if not tools:
            if not pictures:
                return await ask(
                    self._chain(prompts), inputs, stream, classify=self._classify, retries=retries
                )
            messages = with_pictures(prompts.chat.format_messages(**inputs), pictures)
            return await ask(model, messages, stream, classify=self._classify, retries=retries)
        assert self.toolbox is not None
        return await run_agent(
            model,
            with_pictures(prompts.chat.format_messages(**inputs), pictures),
            tools,
            toolbox=self.toolbox,
            prompts=prompts,
            max_steps=self.settings.agent_max_steps,
            classify=self._classify,
            retries=retries,
            stream=stream,
            watcher=watcher,
        )

    def _classify(self, exc: BaseException) -> ModelError:
        return classify_model_error(exc, self.settings)

    def _clipped(self, message: IncomingMessage) -> IncomingMessage:
        """MAX_MESSAGE_CHARS: the model, history and memory see at most this much of a message."""
        return replace(message, text=message.text[: self.settings.max_message_chars])

    def learns_from(self, message: IncomingMessage, reply: Reply) -> bool:
        """Whether `remember` keeps this exchange: model answers to words, pictures and files, not notices
        or commands."""
        kinds = (ContentKind.TEXT, ContentKind.MEDIA)
        return message.kind in kinds and not reply.failed and not reply.canned

    def remembering(self, message: IncomingMessage, reply: Reply) -> Remembering | None:
        """What the reply leaves behind once sent (agent/remembering.py): None for notices and commands.
        Neither the turn nor the learning happens for what a later "/forget all" of theirs came after."""
        if not self.learns_from(message, reply):
            return None
        message = self._clipped(message)
        turn = Turn(reply.heard or self._human_entry(message), reply.text)
        scope = self.history_scope(message)
        return Remembering(message, turn, scope, self.history, self.summaries, self.memory)

    async def remember(self, message: IncomingMessage, reply: Reply) -> None:
        """After the reply went out: keep the turn in short-term history and, in the background, learn
        long-term facts from what the person said."""
        if (remembering := self.remembering(message, reply)) is not None:
            await remembering.finish()
