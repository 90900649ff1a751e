"""A file's type from its bytes, never from its name: the name is what the sender chose to call it."""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass

_TEXT_SAMPLE = 64 * 1024


@dataclass(frozen=True)
class FileType:
    kind: str  # "png", "jpeg", "webp", "gif", "pdf", "docx", "xlsx", "pptx", "text", "html", or unsupported
    label: str  # for people: "PNG", "PDF", "Word"... and for unsupported ones what it is ("ZIP 压缩包")
    readable: bool  # a picture or document the bot reads

    @property
    def is_picture(self) -> bool:
        return self.kind in PICTURES


PICTURES = frozenset({"png", "jpeg", "webp", "gif"})
DOCUMENTS = frozenset({"pdf", "docx", "xlsx", "pptx", "text", "html"})

_OOXML = {"word/document.xml": ("docx", "Word"), "xl/workbook.xml": ("xlsx", "Excel"),
          "ppt/presentation.xml": ("pptx", "PowerPoint")}  # fmt: skip


def _ooxml(data: bytes) -> FileType:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = set(archive.namelist())  # the central directory only: nothing is decompressed
    except (zipfile.BadZipFile, ValueError, OSError):
        return FileType("broken_zip", "损坏的压缩文件", readable=False)
    for member, (kind, label) in _OOXML.items():
        if member in names:
            return FileType(kind, label, readable=True)
    return FileType("zip", "ZIP 压缩包", readable=False)


def _looks_textual(data: bytes) -> str | None:
    """The encoding a file of text is in (UTF-8, else GB18030, common on Chinese Windows), or None."""
    sample = data[:_TEXT_SAMPLE]
    if b"\x00" in sample:
        return None
    for encoding in ("utf-8", "gb18030"):
        try:
            sample.decode(encoding)
        except UnicodeDecodeError as exc:
            if exc.start >= len(sample) - 4:  # a character cut by the sample's end
                return encoding
            continue
        return encoding
    return None


def sniff(data: bytes, name: str = "") -> FileType:
    """What the bytes are. `name` only tells text kinds apart (CSV and Markdown are both plain text)."""
    head = data[:16]
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return FileType("png", "PNG", readable=True)
    if head.startswith(b"\xff\xd8\xff"):
        return FileType("jpeg", "JPEG", readable=True)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return FileType("webp", "WebP", readable=True)
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return FileType("gif", "GIF", readable=True)
    if data[:1024].lstrip().startswith(b"%PDF-") or b"%PDF-" in data[:1024]:
        return FileType("pdf", "PDF", readable=True)
    if head.startswith(b"PK\x03\x04"):
        return _ooxml(data)
    if head.startswith(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"):  # OLE2: old .doc/.xls, or encrypted Office
        return FileType("ole", "旧版或加密的 Office 文件", readable=False)
    if head.startswith(b"MZ") or head.startswith(b"\x7fELF"):
        return FileType("program", "可执行程序", readable=False)
    if head[4:8] == b"ftyp" or head.startswith(b"\x1a\x45\xdf\xa3") or head[8:12] == b"AVI ":
        return FileType("video", "视频或音频", readable=False)
    if head.startswith((b"Rar!", b"7z\xbc\xaf", b"\x1f\x8b", b"BZh")):
        return FileType("archive", "压缩包", readable=False)
    encoding = _looks_textual(data)
    if encoding is not None:
        start = data[:2048].lstrip().lower()
        if start.startswith((b"<!doctype html", b"<html")) or name.lower().endswith((".html", ".htm")):
            return FileType("html", "HTML", readable=True)
        suffix = name.lower().rsplit(".", 1)[-1] if "." in name else ""
        label = {"md": "Markdown", "markdown": "Markdown", "csv": "CSV"}.get(suffix, "文本")
        return FileType("text", label, readable=True)
    return FileType("unknown", "未知类型的文件", readable=False)
