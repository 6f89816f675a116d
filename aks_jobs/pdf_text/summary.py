"""The short end-of-run report: one totals table, then every document that needs attention."""

from __future__ import annotations

from collections import Counter

from aks_jobs.pdf_text.build import BuildResult
from aks_jobs.pdf_text.manifest import totals


def format_summary(result: BuildResult) -> str:
    counts = totals(result.entries)
    row = {
        "documents": f"{counts.documents:,}",
        "ok": f"{counts.ok:,}",
        "warning": f"{counts.warning:,}",
        "error": f"{counts.error:,}",
        "pages": f"{counts.pages:,}",
        "chars": f"{counts.chars:,}",
        "seconds": f"{result.seconds:.1f}",
        "cache hits": f"{result.cache_hits:,}",
        "extracted": f"{result.extracted:,}",
        "workers": f"{result.workers}",
    }
    widths = {key: max(len(key), len(value)) for key, value in row.items()}
    lines = [
        "  ".join(key.rjust(widths[key]) for key in row),
        "  ".join(value.rjust(widths[key]) for key, value in row.items()),
    ]
    kinds = Counter(entry.kind for entry in result.entries if entry.kind and entry.chars)
    if kinds:
        lines.append("")
        lines.append("document kinds (documents): " + ", ".join(f"{k} ({n})" for k, n in sorted(kinds.items())))
    attention = [entry for entry in result.entries if entry.status != "ok"]
    if attention:
        lines.append("")
        lines.append("documents that need attention:")
        for entry in attention:
            for message in entry.messages:
                lines.append(f"  {entry.status:7}  {entry.name}: {message}")
    if result.snapshot:
        lines.append("")
        lines.append(f"snapshot: {result.snapshot.text}")
        lines.append(f"manifest: {result.snapshot.manifest}")
    return "\n".join(lines)
