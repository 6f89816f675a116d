"""The control plane's ISO timestamps, read and shown the same way everywhere in the UI."""

from __future__ import annotations

from datetime import UTC, datetime


def parse(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    # The control plane writes UTC; a bare timestamp is read as UTC too.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def clock(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def shown(text: str | None) -> str | None:
    """An API timestamp as a table shows it; anything unparsable as it came."""
    moment = parse(text)
    return clock(moment) if moment else text


def elapsed(since: datetime, now: datetime) -> str:
    seconds = max(0, int((now - since).total_seconds()))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {seconds:02d} s"
    return f"{seconds} s"
