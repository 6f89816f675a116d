"""PDF text extraction and cleaning for the preprocess step.

inputs    the files in the input folder, with sizes and sha256
extract   pypdf reading of one file: raw page texts, or why it cannot be read
clean     text cleaning rules (Unicode, hyphenation, whitespace, headers/footers)
language  is the text mostly English?
document  one PDF -> cleaned text, status and messages (the unit that is isolated and cached)
isolate   worker processes with time and memory limits
cache     earlier results keyed by sha256 and extraction code version
manifest  manifest entries, totals and the documents digest
snapshot  exclusive, timestamped writing of snapshot + manifest
build     the whole step: folder -> snapshot
summary   the end-of-run table
"""
