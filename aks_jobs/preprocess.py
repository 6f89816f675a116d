"""Preprocess step: a folder of uploaded PDFs -> a new, immutable text snapshot and its manifest.

    python aks_jobs/preprocess.py --input INPUTS --output PROCESSED [--snapshot-ref DIR] [--cache DIR] [--timeout-s 120]
                                  [--memory-mb 2048] [--workers 0] [--max-document-chars N]
                                  [--max-corpus-chars N] [--max-chars-per-byte F]

Writes PROCESSED/combined_data_<UTC yyyymmdd_HHMMSS>.txt and PROCESSED/combined_data_<same>.manifest.json
(never overwriting one), and with --snapshot-ref DIR names that snapshot in DIR/snapshot.json (what this run
made, for the train step and the control plane); logs one line per document to stderr and prints a summary table.
Exits 1 only when no document produced text.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from aks_jobs.cli_args import bounded
from aks_jobs.pdf_text.build import Options, build_snapshot
from aks_jobs.pdf_text.summary import format_summary
from pipeline_contracts.snapshot_ref import write_ref


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(
            "Extract the text of every *.pdf under --input (recursively, any letter case) with pypdf, clean it, "
            "and write a new timestamped snapshot plus a manifest saying what happened to each document. "
            "Broken documents get an error in the manifest and never stop the others."
        ),
        epilog=(
            "Writes OUTPUT/combined_data_<UTC yyyymmdd_HHMMSS>.txt and OUTPUT/combined_data_<same>.manifest.json; "
            "an existing snapshot is never overwritten. Exits 1 only when no document produced text."
        ),
    )
    parser.add_argument("--input", type=Path, required=True, metavar="DIR", help="folder of uploaded documents")
    parser.add_argument("--output", type=Path, required=True, metavar="DIR", help="folder that receives the snapshot")
    parser.add_argument(
        "--snapshot-ref",
        type=Path,
        metavar="DIR",
        help="folder that receives snapshot.json naming the snapshot this run wrote (the pipeline's own record of it)",
    )
    parser.add_argument(
        "--cache",
        type=Path,
        metavar="DIR",
        help="earlier extraction results keyed by sha256, reused when a document is unchanged (default: OUTPUT/cache)",
    )
    parser.add_argument(
        "--timeout-s",
        type=bounded(float, at_least=0.001),
        default=120.0,
        metavar="SECONDS",
        help="wall-clock limit per document; a document over it is stopped and reported (default: %(default)g)",
    )
    parser.add_argument(
        "--memory-mb",
        type=bounded(int, at_least=1),
        default=2048,
        metavar="MB",
        help="memory (address space) one extraction may add to its process (default: %(default)s)",
    )
    parser.add_argument(
        "--workers",
        type=bounded(int, at_least=0),
        default=0,
        metavar="N",
        help="documents extracted at once; 0 = one per available CPU within the container's CPU and memory "
        "limits (default: %(default)s)",
    )
    defaults = Options()
    parser.add_argument(
        "--max-document-chars",
        type=bounded(int, above=0),
        default=defaults.max_document_chars,
        metavar="N",
        help="text kept per document; a longer text is cut with a warning (default: %(default)s)",
    )
    parser.add_argument(
        "--max-corpus-chars",
        type=bounded(int, above=0),
        default=defaults.max_corpus_chars,
        metavar="N",
        help="text in one snapshot; documents that would pass it are left out with an error (default: %(default)s)",
    )
    parser.add_argument(
        "--max-chars-per-byte",
        type=bounded(float, above=0),
        default=defaults.max_chars_per_byte,
        metavar="F",
        help="characters of text per byte of PDF; a document over it (a decompression bomb) gives no text "
        "(default: %(default)g)",
    )
    args = parser.parse_args(argv)
    if not args.input.is_dir():
        parser.error(f"--input {args.input} is not a folder: pass the folder that holds the uploaded PDFs")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    options = Options(
        timeout_s=args.timeout_s,
        memory_mb=args.memory_mb,
        workers=args.workers,
        max_document_chars=args.max_document_chars,
        max_corpus_chars=args.max_corpus_chars,
        max_chars_per_byte=args.max_chars_per_byte,
    )
    result = build_snapshot(args.input, args.output, args.cache, options)
    print(format_summary(result))
    if result.snapshot is not None and args.snapshot_ref is not None:
        write_ref(args.snapshot_ref, result.snapshot.text.name)
    if not result.has_text:
        print(
            f"error: no document produced text ({len(result.entries)} document(s) under {args.input}), so no "
            "snapshot was written and there is nothing to train on; fix or replace the documents listed above.",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
