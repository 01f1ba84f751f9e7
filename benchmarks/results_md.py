"""Sections of ``benchmarks/results.md`` that scripts other than ``accuracy.py`` own, each between its own markers."""

from __future__ import annotations

from pathlib import Path

TABLE = Path(__file__).resolve().parent / "results.md"


def write_section(section: str, begin: str, end: str, table: Path = TABLE) -> None:
    """Put ``section`` (which starts with ``begin`` and ends with ``end``) in place of the old one, or append it."""
    text = table.read_text() if table.exists() else ""
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + section.rstrip("\n") + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    table.write_text(text)
