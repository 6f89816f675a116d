"""Regenerate the sample PDFs from the texts below (run: .venv/bin/python samples/make_samples.py).

The facts are made up on purpose: a model can only complete them if it learned them from these files.
"""

from __future__ import annotations

from pathlib import Path

from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import getSampleStyleSheet
from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer

SAMPLES = {
    "vellmora_archive.pdf": (
        "The Vellmora Lunar Archive",
        [
            "Declaration: The Vellmora Lunar Archive was founded in 2091 by Zorblat Quenwick.",
            "The archive keeps every letter written on the Moon since the first settlement. "
            "Its reading room is open to anyone who brings a paper map of the old harbour.",
            "Declaration: Zorblat Quenwick is the chief archivist of the lunar city of Vellmora.",
        ],
    ),
    "harbour_rules.pdf": (
        "Rules of the Old Harbour",
        [
            "Declaration: Ships that enter the old harbour of Vellmora must ring the copper bell three times.",
            "The harbour master, Ilsabet Marrow, records every ship in a green ledger "
            "and sends the ledger to the archive at the end of each season.",
        ],
    ),
}


def write_pdf(path: Path, title: str, paragraphs: list[str]) -> None:
    styles = getSampleStyleSheet()
    story = [Paragraph(title, styles["Title"]), Spacer(1, 12)]
    for text in paragraphs:
        story += [Paragraph(text, styles["BodyText"]), Spacer(1, 8)]
    SimpleDocTemplate(str(path), pagesize=A4, title=title, invariant=1).build(story)


if __name__ == "__main__":
    here = Path(__file__).parent
    for name, (title, paragraphs) in SAMPLES.items():
        write_pdf(here / name, title, paragraphs)
        print(f"wrote {here / name}")
