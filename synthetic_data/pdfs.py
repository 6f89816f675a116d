"""Real PDFs for tests, generated with reportlab (and, for the broken ones, by damaging real output).

For tests and benchmarks: `from synthetic_data.pdfs import make_text_pdf`.
"""

from __future__ import annotations

import re
import zlib
from pathlib import Path

from pypdf import PdfWriter
from reportlab.lib import pdfencrypt
from reportlab.lib.pagesizes import A4
from reportlab.lib.utils import simpleSplit
from reportlab.pdfgen import canvas

ENGLISH_TEXT = (
    "The committee met on Tuesday to review the results of the first quarter. Most of the members "
    "agreed that the new process had worked well, but some of them were worried about the cost of "
    "the project and asked for a more detailed report before the next meeting. The chair said that "
    "she would prepare it with the help of the finance team and share it with everyone by Friday."
)
PORTUGUESE_TEXT = (
    "A comissão reuniu-se na terça-feira para analisar os resultados do primeiro trimestre. A maioria "
    "dos membros concordou que o novo processo funcionou bem, mas alguns estavam preocupados com o "
    "custo do projeto e pediram um relatório mais detalhado antes da próxima reunião. A presidente "
    "disse que o prepararia com a ajuda da equipa financeira e que o partilharia com todos até sexta."
)
GERMAN_TEXT = (
    "Der Ausschuss trat am Dienstag zusammen, um die Ergebnisse des ersten Quartals zu prüfen. Die "
    "meisten Mitglieder waren sich einig, dass das neue Verfahren gut funktioniert hatte, aber einige "
    "machten sich Sorgen über die Kosten des Projekts und baten vor der nächsten Sitzung um einen "
    "ausführlicheren Bericht. Die Vorsitzende sagte, sie werde ihn mit dem Finanzteam vorbereiten."
)


def _prepare(path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


_FONT, _SIZE, _LEADING = "Helvetica", 11, 14
_LEFT, _TOP, _BOTTOM = 72, A4[1] - 90, 60


def make_text_pdf(
    path: Path,
    pages: list[str],
    header: str | None = None,
    footer: str | None = None,
    *,
    encrypt: pdfencrypt.StandardEncryption | str | None = None,
) -> Path:
    """One PDF page per string. Lines are wrapped to the page width; "\\n" starts a new line.

    header/footer are drawn on every page; "{page}" and "{pages}" in them are filled in.
    """
    path = _prepare(path)
    pdf = canvas.Canvas(str(path), pagesize=A4, encrypt=encrypt, invariant=1)
    width = A4[0] - 2 * _LEFT
    for number, body in enumerate(pages, start=1):
        fill = {"page": number, "pages": len(pages)}
        pdf.setFont(_FONT, _SIZE)
        if header is not None:
            pdf.drawString(_LEFT, A4[1] - 50, header.format(**fill))
        text = pdf.beginText(_LEFT, _TOP)
        text.setFont(_FONT, _SIZE, _LEADING)
        for line in body.split("\n"):
            for wrapped in simpleSplit(line, _FONT, _SIZE, width) or [""]:
                text.textLine(wrapped)
        pdf.drawText(text)
        if footer is not None:
            pdf.drawString(_LEFT, _BOTTOM - 20, footer.format(**fill))
        pdf.showPage()
    pdf.save()
    return path


def make_encrypted_pdf(
    path: Path, pages: list[str], user_password: str, owner_password: str = "owner", *, aes: bool = False
) -> Path:
    """An encrypted PDF; user_password="" gives one that opens without a password.

    RC4-128 by default (reportlab); aes=True re-encrypts with AES-256 via pypdf, which needs the
    'cryptography' package to read.
    """
    if not aes:
        encryption = pdfencrypt.StandardEncryption(user_password, ownerPassword=owner_password, strength=128)
        return make_text_pdf(path, pages, encrypt=encryption)
    make_text_pdf(path, pages)
    writer = PdfWriter(clone_from=str(path))
    writer.encrypt(user_password, owner_password, algorithm="AES-256")
    writer.write(str(path))
    return path


def make_image_only_pdf(path: Path, pages: int = 2) -> Path:
    """Pages with only drawn shapes (what a scan looks like to a text extractor): no text at all."""
    path = _prepare(path)
    pdf = canvas.Canvas(str(path), pagesize=A4, invariant=1)
    for number in range(pages):
        pdf.setFillGray(0.2 + 0.1 * number)
        pdf.rect(72, 300, 400, 300, fill=1)
        pdf.circle(300, 200, 60, fill=1)
        pdf.showPage()
    pdf.save()
    return path


def make_truncated_pdf(path: Path, pages: list[str], keep: float = 0.6) -> Path:
    """A real PDF cut off after `keep` of its bytes, like an interrupted upload."""
    path = _prepare(path)
    make_text_pdf(path, pages)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def make_heavy_pdf(path: Path, megabytes: float) -> Path:
    """One page whose content stream inflates to `megabytes` of text-drawing operators.

    The file stays small (the stream compresses ~100x) but pypdf must decompress and parse all of it,
    which makes it slow and memory hungry: the tool for tripping the time and memory limits.
    """
    path = _prepare(path)
    # Each line below the last: pdfium drops text drawn over identical text (it keeps text off the page).
    operator = b"(All work and no play makes Jack a dull boy.) Tj 0 -12 Td\n"
    lines = operator * int(megabytes * 2**20 / len(operator))
    content = zlib.compress(b"BT /F1 10 Tf 72 700 Td\n" + lines + b"ET\n", 6)
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(content) + content + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    path.write_bytes(bytes(out))
    return path


def make_corrupt_pdf(path: Path, pages: list[str]) -> Path:
    """A real PDF with a run of its middle bytes zeroed, like a damaged disk or a bad transfer."""
    path = _prepare(path)
    make_text_pdf(path, pages)
    data = path.read_bytes()
    middle = len(data) // 2
    path.write_bytes(data[:middle] + b"\x00" * 500 + data[middle + 500 :])
    return path


def make_damaged_page_pdf(path: Path, pages: list[str], page: int, junk: bytes = b"\xff" * 30) -> Path:
    """A real PDF whose `page`-th (1-based) content stream starts with junk: that page cannot be decoded.

    The default junk makes pypdf raise on that page; b"!" * 30 decodes to zeros instead, which pypdf
    reports as a repair and turns into an empty page.
    """
    path = Path(path)
    make_text_pdf(path, pages)
    data = path.read_bytes()
    # reportlab writes page content streams in page order, after the (non-stream) page objects.
    starts = [match.end() for match in re.finditer(rb"/Length \d+\s*>>\s*stream\r?\n", data)]
    start = starts[page - 1]
    path.write_bytes(data[:start] + junk + data[start + len(junk) :])
    return path


def make_shifted_pdf(path: Path, pages: list[str]) -> Path:
    """A real PDF with a line inserted after the header, so every offset in its xref table is wrong.

    Readers (pypdf included) repair this by scanning the file; the text is all there.
    """
    path = Path(path)
    make_text_pdf(path, pages)
    data = path.read_bytes()
    end_of_header = data.index(b"\n") + 1
    path.write_bytes(data[:end_of_header] + b"% a line that moves every object\n" + data[end_of_header:])
    return path


def make_rootless_pdf(path: Path, pages: list[str]) -> Path:
    """A real PDF whose trailer lost its /Root entry: pdfium refuses it, pypdf finds the catalog anyway."""
    path = make_text_pdf(path, pages)
    path.write_bytes(path.read_bytes().replace(b"/Root", b"/Rxxx"))
    return path


def make_scanned_text_pdf(path: Path, lines: list[str], pages: int = 1) -> Path:
    """Pages whose only content is an image of `lines` of text (what a scanner produces): no text layer."""
    from PIL import Image, ImageDraw, ImageFont  # only the OCR tests need it
    from reportlab.lib.utils import ImageReader
    from reportlab.pdfbase.ttfonts import TTFont

    path = _prepare(path)
    # Vera ships with reportlab, so every machine that runs the tests has this font.
    font = ImageFont.truetype(TTFont("Vera", "Vera.ttf").face.filename, 48)
    image = Image.new("L", (2400, 200 + 90 * len(lines)), 255)  # ~300 dpi across an A4 width
    draw = ImageDraw.Draw(image)
    for number, line in enumerate(lines):
        draw.text((120, 100 + 90 * number), line, font=font, fill=0)
    pdf = canvas.Canvas(str(path), pagesize=A4, invariant=1)
    width = A4[0] - 2 * 36
    for _ in range(pages):
        pdf.drawImage(
            ImageReader(image),
            36,
            A4[1] - 72 - width * image.height / image.width,
            width=width,
            height=width * image.height / image.width,
        )
        pdf.showPage()
    pdf.save()
    return path
