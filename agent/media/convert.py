"""The child process that turns a document into text: `python -m agent.media.convert KIND MAX_CHARS MB`.

It reads the file's bytes on stdin and writes one JSON object on stdout:
`{"text", "pages", "unit", "complete"}` or `{"problem": reason, "detail"}`. It limits its own address
space to MB megabytes before importing a parser, and the parent kills it at FILE_CONVERT_SECONDS: a
crafted PDF can make this process fail, never the service. Nothing is written to disk.
"""

from __future__ import annotations

import io
import json
import os
import re
import sys
from collections.abc import Iterator
from html.parser import HTMLParser
from typing import Any

_BLANK_LINES = re.compile(r"\n{3,}")
_CONTROLS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # NUL and friends: parsers emit them
_MAX_SHEET_ROWS = 5000


class _Problem(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def _pdf(data: bytes) -> tuple[Iterator[str], int, str]:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            try:  # an owner password only: readable without one
                opened = bool(reader.decrypt(""))
            except Exception:  # a missing AES dependency or a wrong key: not readable
                opened = False
            if not opened:
                raise _Problem("encrypted", "the PDF needs a password")
        pages = len(reader.pages)
    except PdfReadError as exc:
        raise _Problem("broken", f"the PDF does not open: {type(exc).__name__}") from None
    return (page.extract_text() or "" for page in reader.pages), pages, "页"


def _docx(data: bytes) -> tuple[Iterator[str], int, str]:
    from docx import Document

    document = Document(io.BytesIO(data))

    def parts() -> Iterator[str]:
        for paragraph in document.paragraphs:
            yield paragraph.text
        for table in document.tables:
            for row in table.rows:
                yield " | ".join(cell.text.strip() for cell in row.cells)

    return parts(), 0, ""


def _xlsx(data: bytes) -> tuple[Iterator[str], int, str]:
    from openpyxl import load_workbook  # type: ignore[import-untyped]

    book = load_workbook(io.BytesIO(data), read_only=True, data_only=True)

    def parts() -> Iterator[str]:
        for sheet in book.worksheets:
            yield f"## {sheet.title}"
            for number, row in enumerate(sheet.iter_rows(values_only=True)):
                if number >= _MAX_SHEET_ROWS:
                    yield f"…（其余行略去，只读前 {_MAX_SHEET_ROWS} 行）"
                    break
                cells = ["" if value is None else str(value) for value in row]
                while cells and not cells[-1]:
                    cells.pop()
                if cells:
                    yield ", ".join(cells)

    return parts(), len(book.worksheets), "个工作表"


def _pptx(data: bytes) -> tuple[Iterator[str], int, str]:
    from pptx import Presentation

    deck = Presentation(io.BytesIO(data))

    def parts() -> Iterator[str]:
        for number, slide in enumerate(deck.slides, 1):
            yield f"## 第 {number} 页"
            for shape in slide.shapes:
                if shape.has_text_frame:
                    yield shape.text_frame.text
                if getattr(shape, "has_table", False):
                    for row in shape.table.rows:
                        yield " | ".join(cell.text.strip() for cell in row.cells)

    return parts(), len(deck.slides), "页"


def _decoded(data: bytes) -> str:
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    return data.decode("utf-8", errors="replace")


class _HtmlText(HTMLParser):
    _SKIP = frozenset({"script", "style", "template", "noscript"})
    _BLOCK = frozenset(
        {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "section", "article"}
    )

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self.skipping += 1
        elif tag in self._BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP and self.skipping:
            self.skipping -= 1

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.parts.append(data)


def _html(data: bytes) -> tuple[Iterator[str], int, str]:
    parser = _HtmlText()
    parser.feed(_decoded(data))
    parser.close()
    return iter(["".join(parser.parts)]), 0, ""


def _text(data: bytes) -> tuple[Iterator[str], int, str]:
    return iter([_decoded(data)]), 0, ""


_CONVERTERS = {"pdf": _pdf, "docx": _docx, "xlsx": _xlsx, "pptx": _pptx, "html": _html, "text": _text}


def convert(kind: str, data: bytes, max_chars: int) -> dict[str, Any]:
    """The document's text, read until `max_chars` (and a little more, to know it was cut)."""
    try:
        parts, count, unit = _CONVERTERS[kind](data)
        collected: list[str] = []
        size = 0
        complete = True
        for part in parts:
            part = part.strip()
            if not part:
                continue
            collected.append(part)
            size += len(part) + 1
            if size > max_chars:
                complete = False
                break
    except _Problem as problem:
        return {"problem": problem.reason, "detail": str(problem)}
    except MemoryError:
        return {"problem": "too_hard", "detail": "over the memory limit"}
    except Exception as exc:  # any other parser failure is a damaged file to the person
        said = f"{exc} {getattr(exc, 'error_log', '')}".lower()
        if "memory" in said:  # lxml reports a failed allocation as a syntax error (ERR_NO_MEMORY)
            return {"problem": "too_hard", "detail": "over the memory limit"}
        return {"problem": "broken", "detail": f"{kind} does not open: {type(exc).__name__}"}
    whole = "\n".join(collected).encode("utf-8", "replace").decode("utf-8")  # lone surrogates: "?"
    text = _BLANK_LINES.sub("\n\n", _CONTROLS.sub("", whole)).strip()
    if not text:
        return {"problem": "empty", "detail": "no text in the document (scanned pages or empty)"}
    return {
        "text": text[:max_chars],
        "pages": count,
        "unit": unit,
        "complete": complete and len(text) <= max_chars,
    }


def _limit_memory(megabytes: int) -> None:
    import resource

    limit = megabytes * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def main() -> None:
    kind, max_chars, megabytes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    data = sys.stdin.buffer.read()
    _limit_memory(megabytes)
    os.nice(10)  # the service's event loop (acks) goes first on a busy machine
    result = convert(kind, data, max_chars)
    sys.stdout.write(json.dumps(result, ensure_ascii=False))


if __name__ == "__main__":
    main()
