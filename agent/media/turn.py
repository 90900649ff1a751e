"""One turn with attachments, written twice: for the model (each picture where it sat, a file's text in a
delimited block the system prompt calls data) and for the history (short marks: "[图片]", "[文件《…》]")."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from langchain_core.messages import BaseMessage, HumanMessage

from agent.media.documents import Document
from agent.media.pictures import Picture
from agent.media.problems import MediaProblem, MediaReason
from agent.media.reader import Received
from agent.prompts.loader import PromptSet

PICTURE_MARK = "\x00picture:{}\x00"  # where a picture goes in the rendered prompt: never in what people type
_MARK = re.compile(r"\x00picture:(\d+)\x00")
_CLOSING = re.compile(r"</\s*attached_document", re.IGNORECASE)
_UNSAFE_NAME = str.maketrans({'"': "'", "<": "‹", ">": "›", "\n": " ", "\r": " "})


@dataclass(frozen=True)
class MediaTurn:
    text: str  # for the model: the words with picture marks, document blocks before them
    history: str  # for the history and memory: the words with short marks
    pictures: list[Picture] = field(default_factory=list)
    documents: list[Document] = field(default_factory=list)


def _spliced(words: str, marks: list[tuple[int, str]]) -> str:
    out, last = [], 0
    for at, mark in sorted(marks, key=lambda m: m[0]):
        at = min(max(at, last), len(words))
        out.append(words[last:at])
        out.append(mark)
        last = at
    out.append(words[last:])
    return "".join(out).strip()


def document_block(prompts: PromptSet, document: Document, limit: int) -> str:
    """A file's text as the model reads it; its text cannot close the block early."""
    if document.pages:
        size = prompts.attachment(
            "size", pages=document.pages, unit=document.unit, chars=f"{document.chars:,}"
        )
    else:
        size = prompts.attachment("size_no_pages", chars=f"{document.chars:,}")
    text = _CLOSING.sub("<\\/attached_document", document.text)
    if not document.complete:
        text += "\n" + prompts.attachment("cut", limit=f"{limit:,}")
    name = document.name.translate(_UNSAFE_NAME)  # a name cannot end the tag or the block either
    return prompts.attachment("document", name=name, type=document.label, size=size, text=text)


def compose(
    words: str, received: Received, prompts: PromptSet, *, earlier: Document | None, limit: int
) -> MediaTurn:
    """The turn's two texts. `earlier`: the conversation's recent file, given again with a question."""
    model_marks: list[tuple[int, str]] = []
    history_marks: list[tuple[int, str]] = []
    pictures: list[Picture] = []
    documents: list[Document] = []
    for media, outcome in received.items:
        if media.kind == "picture" or isinstance(outcome, Picture):  # a picture sent as a file is a picture
            mark = prompts.attachment("picture")
            history_marks.append((media.at, mark))
            if isinstance(outcome, Picture):
                model_marks.append((media.at, PICTURE_MARK.format(len(pictures))))
                pictures.append(outcome)
            else:  # not seen: the model still knows a picture was there
                model_marks.append((media.at, mark))
            continue
        mark = prompts.attachment(
            "file", name=media.name or (outcome.label if isinstance(outcome, Document) else "")
        )
        history_marks.append((media.at, mark))
        model_marks.append((media.at, mark))
        if isinstance(outcome, Document):
            documents.append(outcome)
    model = _spliced(words, model_marks)
    if not words.strip():  # a picture or file with no words: what the person is taken to ask
        if pictures:
            model = f"{model}\n{prompts.attachment('picture_alone')}"
        elif documents:
            model = f"{model}\n{prompts.attachment('file_alone')}"
    blocks = [document_block(prompts, document, limit) for document in documents]
    if earlier is not None and not documents:
        blocks = [prompts.attachment("earlier"), document_block(prompts, earlier, limit)]
    text = "\n\n".join([*blocks, model]) if blocks else model
    return MediaTurn(
        text=text, history=_spliced(words, history_marks), pictures=pictures, documents=documents
    )


def unmark_pictures(text: str, mark: str) -> str:
    """The turn's text with each picture's place written as `mark` ("[图片]")."""
    return _MARK.sub(mark, text)


def with_pictures(messages: list[BaseMessage], pictures: list[Picture]) -> list[BaseMessage]:
    """The rendered prompt with the last human message made of content parts: text, then each picture
    where its mark sat (the OpenAI `image_url` part, a data URL), then the text after it."""
    if not pictures:
        return messages
    last = max(i for i, m in enumerate(messages) if isinstance(m, HumanMessage))
    content = messages[last].content
    assert isinstance(content, str)
    parts: list[str | dict[str, object]] = []
    position = 0
    for match in _MARK.finditer(content):
        number = int(match.group(1))
        if number >= len(pictures):  # not one of ours (the words are cleaned of NUL: cannot happen)
            continue
        before = content[position : match.start()].strip()
        if before:
            parts.append({"type": "text", "text": before})
        parts.append(pictures[number].content_part())
        position = match.end()
    after = content[position:].strip()
    if after:
        parts.append({"type": "text", "text": after})
    return [*messages[:last], HumanMessage(content=parts), *messages[last + 1 :]]


def problem_sentence(prompts: PromptSet, problem: MediaProblem, *, max_bytes: int, max_pixels: int) -> str:
    """The person's sentence for an attachment that was not read."""
    name = f"《{problem.name}》" if problem.name else prompts.media_reply("picture_name")
    limits = {
        MediaReason.TOO_LARGE: f"{max_bytes / 1024 / 1024:g} MB",
        MediaReason.TOO_MANY_PIXELS: f"{max_pixels / 10_000:g} 万",  # 3600 万
    }
    return prompts.media_reply(
        problem.reason.value,
        name=name,
        type=problem.type_label or "未知类型的文件",
        limit=limits.get(problem.reason, ""),
    )
