"""Small Markdown helpers shared by the generated documents (docs/configuration.md's
configuration table, sweep reports, docs/results.md)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A GitHub-flavoured Markdown table; cells are ``str(value)``, ``None`` is empty,
    a ``|`` inside a cell is escaped."""
    def cell(value: object) -> str:
        return "" if value is None else str(value).replace("|", "\\|")
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def code(text: str) -> str:
    """``text`` as an inline code span that shows it verbatim: fenced by one backtick
    more than its longest run of backticks, with a space inside each fence when the
    text starts or ends with a backtick (CommonMark strips one such space)."""
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _block_pattern(start: str, end: str) -> re.Pattern:
    return re.compile(re.escape(start) + r"\n(.*?)" + re.escape(end), re.S)


def generated_block(text: str, start: str, end: str) -> str | None:
    """The text between the marker lines ``start`` and ``end`` (None without them)."""
    found = _block_pattern(start, end).search(text)
    return found.group(1) if found else None


def replace_generated_block(text: str, start: str, end: str, content: str) -> str:
    """``text`` with what lies between the markers replaced by ``content``.

    Raises:
        ValueError: the markers are not in ``text``.
    """
    if generated_block(text, start, end) is None:
        raise ValueError(f"markers {start} ... {end} not found")
    return _block_pattern(start, end).sub(lambda _: f"{start}\n{content}{end}", text, count=1)
