"""Real pictures and documents the tests send to the bot, made on the spot with the libraries that write
them (Pillow, reportlab, python-docx, openpyxl, python-pptx, pypdf): nothing binary is committed."""

from __future__ import annotations

import io
import zipfile

from PIL import Image


def picture(width: int = 1280, height: int = 720, kind: str = "PNG", **save: object) -> bytes:
    image = Image.new("RGB", (width, height), (30, 120, 200))
    for x in range(0, width, max(1, width // 8)):  # some structure, so encoders have work to do
        image.paste((240, 240, 240), (x, 0, min(width, x + 4), height))
    out = io.BytesIO()
    image.save(out, kind, **save)
    return out.getvalue()


def photo_with_gps(width: int = 800, height: int = 600) -> bytes:
    """A JPEG carrying EXIF: a camera serial, GPS coordinates and orientation 6 (turned 90° on display)."""
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to display
    exif[0xA431] = "SERIAL-12345"  # BodySerialNumber
    exif[0x8825] = {1: "N", 2: (39.0, 54.0, 26.0), 3: "E", 4: (116.0, 23.0, 29.0)}  # GPSInfo
    return picture(width, height, "JPEG", exif=exif)


def pixel_bomb(megapixels: int = 40) -> bytes:
    """A PNG of `megapixels` million pixels that compresses to a few kilobytes."""
    width = 8000
    image = Image.new("1", (width, megapixels * 1_000_000 // width))
    out = io.BytesIO()
    image.save(out, "PNG", optimize=True)
    return out.getvalue()


def pdf(pages: list[str]) -> bytes:
    """A real PDF with one line of Chinese text per page (reportlab's built-in CID font)."""
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.cidfonts import UnicodeCIDFont
    from reportlab.pdfgen import canvas

    pdfmetrics.registerFont(UnicodeCIDFont("STSong-Light"))
    out = io.BytesIO()
    sheet = canvas.Canvas(out)
    for text in pages:
        sheet.setFont("STSong-Light", 12)
        for number, line in enumerate(text.splitlines()):
            sheet.drawString(72, 760 - 16 * number, line)
        sheet.showPage()
    sheet.save()
    return out.getvalue()


def encrypted_pdf(password: str = "secret") -> bytes:
    from reportlab.pdfgen import canvas

    out = io.BytesIO()
    sheet = canvas.Canvas(out, encrypt=password)
    sheet.drawString(72, 760, "confidential")
    sheet.showPage()
    sheet.save()
    return out.getvalue()


def blank_pdf() -> bytes:
    from pypdf import PdfWriter

    writer = PdfWriter()
    writer.add_blank_page(612, 792)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def endless_pdf(pages: int = 2000, operations: int = 4000) -> bytes:
    """A small PDF (tens of KB) whose every page shares one content stream of `operations` text-showing
    operators that show nothing: a converter works through them all, page after page, for minutes."""
    from pypdf import PdfWriter
    from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject

    writer = PdfWriter()
    stream = DecodedStreamObject()
    stream.set_data(b"BT /F1 12 Tf 72 700 Td () Tj ET\n" * operations)
    shared = writer._add_object(stream.flate_encode())
    font = writer._add_object(
        DictionaryObject(
            {
                NameObject("/Type"): NameObject("/Font"),
                NameObject("/Subtype"): NameObject("/Type1"),
                NameObject("/BaseFont"): NameObject("/Helvetica"),
            }
        )
    )
    resources = DictionaryObject({NameObject("/Font"): DictionaryObject({NameObject("/F1"): font})})
    for _ in range(pages):
        page = writer.add_blank_page(612, 792)
        page[NameObject("/Contents")] = shared
        page[NameObject("/Resources")] = resources
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def docx(paragraphs: list[str], table: list[list[str]] | None = None) -> bytes:
    from docx import Document

    document = Document()
    for text in paragraphs:
        document.add_paragraph(text)
    if table:
        grid = document.add_table(rows=len(table), cols=len(table[0]))
        for r, row in enumerate(table):
            for c, value in enumerate(row):
                grid.cell(r, c).text = value
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def xlsx(sheets: dict[str, list[list[object]]]) -> bytes:
    from openpyxl import Workbook  # type: ignore[import-untyped]

    book = Workbook()
    book.remove(book.active)
    for title, rows in sheets.items():
        sheet = book.create_sheet(title)
        for row in rows:
            sheet.append(row)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def pptx(slides: list[tuple[str, str]]) -> bytes:
    from pptx import Presentation

    deck = Presentation()
    for title, body in slides:
        slide = deck.slides.add_slide(deck.slide_layouts[1])
        slide.shapes.title.text = title
        slide.placeholders[1].text = body
    out = io.BytesIO()
    deck.save(out)
    return out.getvalue()


def plain_zip() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("readme.txt", "hello")
    return out.getvalue()


def ballooning_docx(paragraphs: int = 1_500_000) -> bytes:
    """A Word file of a few hundred KB whose document.xml unpacks to ~50 MB of tiny paragraphs: parsed
    into a tree it needs far more memory than the file's size suggests (a zip-bomb-shaped document)."""
    base = docx(["x"])
    body = b"<w:p><w:r><w:t>a</w:t></w:r></w:p>" * paragraphs
    out = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(base)) as source,
        zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target,
    ):
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename == "word/document.xml":
                start = data.index(b"<w:body>") + len(b"<w:body>")
                data = data[:start] + body + data[start:]
            target.writestr(item, data)
    return out.getvalue()
