"""Preprocess throughput against the design's plain extraction loop, cold and after adding one PDF.

    .venv/bin/python -m bench.preprocess_bench [--documents 40] [--pages 10] [--workers 0] [--repeat 3]

Generates a mixed corpus of N PDFs (reportlab): prose pages with a running header and page-number
footer, table pages (one text object per cell) and two-column pages in an embedded TrueType font,
in a temporary folder, then times, in one process:
  plain loop   the design notebook's cell 2: PdfReader + extract_text per page, concatenated, one process
  engines      each engine alone on every file, one process: pypdf (read_with_pypdf), pdfium
               (read_with_pdfium); raw page text, no cleaning, no isolation
  ours         pdf_text.build.build_snapshot (pdfium first, isolated workers, cleaning, manifest), cold
               cache, with one worker and with --workers (0 = all available cores)
and the cost of a re-run after one more PDF is uploaded: ours (cache: one extraction) against the
plain loop (which re-reads everything). Each figure is the best of --repeat runs (shared machines
are noisy; configurations run interleaved); "pages/s" is pages in the output per second of wall
time, "extracted" the pages actually parsed, "CPU s" the CPU time of the run including its workers.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import resource
import tempfile
import time
from pathlib import Path

from pypdf import PdfReader
from reportlab.lib.pagesizes import A4
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen import canvas

from aks_jobs.capacity import choose_workers
from aks_jobs.pdf_text.build import Options, build_snapshot
from aks_jobs.pdf_text.extract import read_with_pypdf
from aks_jobs.pdf_text.pdfium_pages import read_with_pdfium
from synthetic_data.pdfs import ENGLISH_TEXT, make_text_pdf

SENTENCES = [sentence.strip() + "." for sentence in ENGLISH_TEXT.split(".") if sentence.strip()]


def make_laid_out_pdf(path: Path, pages: int, rng: random.Random) -> None:
    """Table pages (a text object per cell) and two-column pages in Vera, a TrueType font reportlab
    ships and embeds: what reports and papers look like to an extractor."""
    pdfmetrics.registerFont(TTFont("Vera", "Vera.ttf"))
    pdf = canvas.Canvas(str(path), pagesize=A4, invariant=1)
    words = " ".join(SENTENCES).split()
    for number in range(pages):
        if number % 2 == 0:
            pdf.setFont("Helvetica", 8)
            for row in range(50):
                for column in range(6):
                    pdf.drawString(40 + column * 90, 780 - row * 14, f"{rng.choice(words)} {rng.randint(0, 99999)}")
        else:
            pdf.setFont("Vera", 9)
            for column in range(2):
                for line in range(60):
                    pdf.drawString(40 + column * 270, 790 - line * 12.5, " ".join(rng.choices(words, k=7)))
        pdf.showPage()
    pdf.save()


def make_corpus(folder: Path, documents: int, pages: int, seed: int = 0) -> None:
    """Half prose documents, half laid-out ones (tables, columns, embedded font)."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(documents):
        path = folder / f"document_{index:04d}.pdf"
        if index % 2:
            make_laid_out_pdf(path, pages, rng)
            continue
        body = [" ".join(rng.choices(SENTENCES, k=12)) for _ in range(pages)]
        make_text_pdf(path, body, header=f"Benchmark corpus, document {index}", footer="Page {page} of {pages}")


def engine_alone(read, pdf_dir: Path) -> int:
    """Pages read by one engine over every PDF in the folder, one process, raw text only."""
    return sum(len(read(path.read_bytes()).texts) for path in sorted(pdf_dir.glob("*.pdf")))


def plain_loop(pdf_dir: Path, output: Path) -> int:
    """The seed notebook's cell 2, kept as written (minus the print); returns pages read."""
    all_text, pages = "", 0
    for filename in os.listdir(pdf_dir):
        if filename.endswith(".pdf"):
            filepath = os.path.join(pdf_dir, filename)
            try:
                reader = PdfReader(filepath)
                for page in reader.pages:
                    all_text += page.extract_text() + "\n"
                    pages += 1
            except Exception as e:  # noqa: BLE001 - as in the notebook
                print(f"Could not read {filename}: {e}")
    output.mkdir(parents=True, exist_ok=True)
    with open(output / "combined_documents.txt", "w", encoding="utf-8") as f:
        f.write(all_text)
    return pages


def cpu_seconds() -> float:
    """User + system CPU of this process and of its finished children (the extraction workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def measure(configs: dict[str, tuple], repeat: int) -> dict[str, tuple[int, float, float]]:
    """Per config: (value, best wall seconds, CPU seconds of that run).

    Configs run interleaved, round after round, so a burst of load from other processes hits them
    alike; each config's fastest round is kept.
    """
    best: dict[str, tuple[int, float, float]] = {}
    for attempt in range(repeat):
        for label, (function, make_args) in configs.items():
            args = make_args(attempt)
            cpu, started = cpu_seconds(), time.perf_counter()
            value = function(*args)
            wall, cpu = time.perf_counter() - started, cpu_seconds() - cpu
            if label not in best or wall < best[label][1]:
                best[label] = (value, wall, cpu)
    return best


def ours(inputs: Path, output: Path, workers: int) -> int:
    """Pages extracted by this run (cached documents are not re-read)."""
    result = build_snapshot(inputs, output, options=Options(workers=workers))
    return sum(entry.pages for entry in result.entries if not entry.cached)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--documents", type=int, default=40)
    parser.add_argument("--pages", type=int, default=10)
    parser.add_argument("--workers", type=int, default=0, help="workers for the parallel run (0 = all cores)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; each figure is its fastest round")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    workers = choose_workers(args.workers, Options().memory_mb)
    total = args.documents * args.pages

    with tempfile.TemporaryDirectory() as temporary:
        root = Path(temporary)
        inputs = root / "inputs"
        started = time.perf_counter()
        make_corpus(inputs, args.documents, args.pages)
        print(
            f"generated {args.documents} PDFs x {args.pages} pages in {time.perf_counter() - started:.1f} s; "
            f"{os.cpu_count()} CPUs, {workers} workers, best of {args.repeat}"
        )

        def fresh(name: str):
            return lambda attempt: (inputs, root / f"{name}_{attempt}")

        cold = measure(
            {
                "plain loop (design cell 2), 1 process": (plain_loop, fresh("plain")),
                "engine alone: pypdf, 1 process": (lambda i, o: engine_alone(read_with_pypdf, i), fresh("pypdf")),
                "engine alone: pdfium, 1 process": (lambda i, o: engine_alone(read_with_pdfium, i), fresh("pdfium")),
                "ours, cold cache, 1 worker": (lambda i, o: ours(i, o, 1), fresh("ours1")),
                f"ours, cold cache, {workers} workers": (lambda i, o: ours(i, o, workers), fresh("oursn")),
            },
            args.repeat,
        )
        warm = [root / f"warm_{attempt}" for attempt in range(args.repeat)]
        for output in warm:
            ours(inputs, output, workers)
        make_corpus(root / "one_more", 1, args.pages, seed=1)
        (root / "one_more" / "document_0000.pdf").rename(inputs / "document_new.pdf")
        again = measure(
            {
                "re-run +1 PDF: plain loop (re-reads all)": (plain_loop, fresh("plain_again")),
                "re-run +1 PDF: ours (cache, 1 extraction)": (
                    lambda i, o: ours(i, o, workers),
                    lambda attempt: (inputs, warm[attempt]),
                ),
            },
            args.repeat,
        )
        rows = [(label, total, *figures) for label, figures in cold.items()]
        rows += [(label, total + args.pages, *figures) for label, figures in again.items()]

    width = max(len(row[0]) for row in rows)
    print(f"\n{'run':<{width}}  {'pages':>6}  {'extracted':>9}  {'seconds':>8}  {'pages/s':>8}  {'CPU s':>6}")
    for label, pages, extracted, seconds, cpu in rows:
        print(f"{label:<{width}}  {pages:>6}  {extracted:>9}  {seconds:>8.2f}  {pages / seconds:>8.0f}  {cpu:>6.2f}")
    seconds = {row[0]: row[3] for row in rows}
    plain, parallel = seconds["plain loop (design cell 2), 1 process"], seconds[f"ours, cold cache, {workers} workers"]
    print(
        f"\ncold: ours with {workers} workers {plain / parallel:.1f}x the plain loop's pages/s; pdfium alone "
        f"{seconds['engine alone: pypdf, 1 process'] / seconds['engine alone: pdfium, 1 process']:.1f}x pypdf alone"
    )
    plain_again, incremental = rows[-2][3], rows[-1][3]
    print(
        f"re-run after one upload: ours {incremental:.2f} s vs plain loop {plain_again:.2f} s "
        f"({plain_again / incremental:.0f}x faster)"
    )


if __name__ == "__main__":
    main()
