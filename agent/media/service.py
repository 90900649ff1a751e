"""The assistant's side of attachments: read what a message carries, decide whether the model is shown
pictures (MODEL_SUPPORTS_IMAGES, and a refusal `auto` learned), keep a file for the conversation's next
questions, and write the turn for the model and for the history."""

from __future__ import annotations

import logging
import re
from dataclasses import replace

from agent.errors import ModelError, ModelErrorKind
from agent.media.context import FileContext
from agent.media.reader import MAX_PICTURES, MediaReader, MediaSource, Received
from agent.media.turn import MediaTurn, compose, problem_sentence, unmark_pictures
from agent.messages import ContentKind, IncomingMessage
from agent.observe import Observer
from agent.prompts.loader import PromptSet
from agent.settings.choices import ImageSupport
from agent.settings.config import Settings

log = logging.getLogger(__name__)

# How endpoints word "this model takes no image input" — OpenAI and Azure ("image_url is only supported by
# certain models"), vLLM ("... is not a multimodal model"), Ollama and others ("does not support images")
# — and not "this picture is bad" ("Invalid image", "image too large"): one bad picture must not turn
# pictures off for everyone.
_NO_IMAGES = re.compile(
    r"only supported by certain models|not (?:a )?multi-?modal|"
    r"(?:does not|doesn't|do not|cannot|can't|unable to) (?:support|accept|process|handle) "
    r"(?:image|vision|multi-?modal)|"
    r"(?:image|vision|multi-?modal)(?: input| content| inputs)? (?:is |are )?not supported|"
    r"不支持(?:图片|图像|多模态|视觉)",
    re.IGNORECASE,
)


class MediaService:
    def __init__(
        self,
        settings: Settings,
        source: MediaSource | None,
        files: FileContext | None,
        observer: Observer | None = None,
    ) -> None:
        self.settings = settings
        self.reader = MediaReader(settings, source, observer)
        self.files = files  # None: no file context (FILE_CONTEXT_MINUTES=0, or tools without a database)
        self.images_refused = False  # `auto` learned that the endpoint takes no pictures (for this process)

    @property
    def sees_pictures(self) -> bool:
        support = self.settings.model_supports_images
        return support is ImageSupport.TRUE or (support is ImageSupport.AUTO and not self.images_refused)

    async def turn(
        self, message: IncomingMessage, scope: str, prompts: PromptSet
    ) -> tuple[MediaTurn | None, str]:
        """The turn to answer (None: a plain text turn) and the sentences about what could not be read."""
        earlier = await self.files.recent(scope) if self.files is not None else None
        if message.kind is not ContentKind.MEDIA:
            if earlier is None:
                return None, ""
            return compose(
                message.text, Received(), prompts, earlier=earlier, limit=self.settings.file_max_chars
            ), ""
        sees = self.sees_pictures
        received = await self.reader.read(message, pictures=sees)
        notes = [
            problem_sentence(
                prompts,
                problem,
                max_bytes=self.settings.media_max_bytes,
                max_pixels=self.settings.image_max_pixels,
            )
            for problem in received.problems
        ]
        unseen = any(outcome is None for _, outcome in received.items)  # pictures, or sent as files
        if unseen and not sees:
            notes.append(prompts.media_reply("images_unsupported"))
        elif unseen:  # past MAX_PICTURES
            notes.append(prompts.media_reply("too_many_pictures", limit=MAX_PICTURES))
        for document in received.documents[-1:]:  # the conversation's next questions may ask about it
            if self.files is not None:
                await self.files.keep(scope, message.person_id, document, message.arrived_at)
        turn = compose(message.text, received, prompts, earlier=earlier, limit=self.settings.file_max_chars)
        return turn, "\n".join(dict.fromkeys(notes))

    @staticmethod
    def without_pictures(turn: MediaTurn, prompts: PromptSet) -> MediaTurn:
        """The same turn for a model that cannot see: each picture a mark, the words and files kept."""
        return replace(turn, text=unmark_pictures(turn.text, prompts.attachment("picture")), pictures=[])

    def refuses_pictures(self, error: ModelError) -> bool:
        """Whether a failed answer with pictures is the endpoint saying it takes none; `auto` remembers."""
        if error.kind is not ModelErrorKind.BAD_REQUEST or error.context_exceeded:
            return False
        if not _NO_IMAGES.search(f"{error.said} {error.cause}"):
            return False
        if self.settings.model_supports_images is ImageSupport.AUTO and not self.images_refused:
            self.images_refused = True
            log.warning(
                "the model endpoint refused a picture: %s. Pictures are not sent again until restart; set "
                "VISION_MODEL to a model that takes images, or MODEL_SUPPORTS_IMAGES=false to stop trying",
                error.said[:200] or error.cause,
            )
        return True
