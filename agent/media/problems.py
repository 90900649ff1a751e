"""Why a picture or file could not be read: one reason, one sentence for the person (replies.yaml
`media`), and a detail for the log that never holds a download code, URL or the file's contents."""

from __future__ import annotations

import enum


class MediaReason(enum.StrEnum):
    NO_CREDENTIALS = "no_credentials"  # the app's AppKey/AppSecret are not configured: nothing can be fetched
    TOO_LARGE = "too_large"  # over MEDIA_MAX_BYTES
    EXPIRED = "expired"  # the download code or URL is no longer valid
    UNREACHABLE = "unreachable"  # DingTalk's file service failed or could not be reached
    UNSUPPORTED = "unsupported"  # a type the bot does not read (zip, exe, video...)
    BROKEN = "broken"  # damaged or truncated: does not decode
    TOO_MANY_PIXELS = "too_many_pixels"  # a picture over IMAGE_MAX_PIXELS (a decompression bomb, or huge)
    ENCRYPTED = "encrypted"  # a password-protected document
    EMPTY = "empty"  # a document with no text in it (a scanned PDF, an empty file)
    TOO_HARD = "too_hard"  # conversion went over its time or memory limit


class MediaProblem(Exception):
    """A picture or file that cannot be read. `detail` is for the log: safe, short, English."""

    def __init__(self, reason: MediaReason, detail: str, *, name: str = "", type_label: str = "") -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail
        self.name = name  # the file's name as sent, for the person's sentence
        self.type_label = type_label  # what it turned out to be ("ZIP 压缩包"), for the person's sentence
