"""Label cells → numbers, with every value that is not a usable number counted per column.

A cell is *missing* when it is empty (``None``, ``""``, blanks): that is a song without that
label. Anything else that does not give a usable number is *invalid*: text (``lots``), NaN,
±inf, a number too large for a float (``1e400``), a negative count, a boolean. Invalid cells
are treated as missing too, but they are counted, and :meth:`CellParser.report` says how many
per column, with examples, so a malformed export never trains silently on fewer labels.

Thousands separators (``1,234``, ``12,345,678``) are read as numbers in count columns only,
where a comma cannot be a decimal point (a count is a whole number); in score columns a comma
stays invalid (``3,5`` may mean 3.5 or 35).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from apexmusic.errors import DataError

MAX_EXAMPLES = 3
_GROUPED = re.compile(r"[+]?\d{1,3}(?:,\d{3})+")


@dataclass
class InvalidCells:
    """How many cells of one column were invalid, and the first few distinct ones."""

    count: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, value: Any) -> None:
        self.count += 1
        shown = repr(value)[:40]
        if len(self.examples) < MAX_EXAMPLES and shown not in self.examples:
            self.examples.append(shown)


class CellParser:
    """Parses cells column by column and remembers the invalid ones."""

    def __init__(self) -> None:
        self.invalid: dict[str, InvalidCells] = {}

    def count(self, value: Any, column: str) -> float:
        """A non-negative count (plays, likes); NaN when missing or invalid."""
        number = self._number(value, column, counts=True)
        if number < 0:
            self._bad(value, column)
            return math.nan
        return number

    def score(self, value: Any, column: str) -> float:
        """Any finite number (range checks are the caller's); NaN when missing or invalid."""
        return self._number(value, column, counts=False)

    def bad(self, value: Any, column: str) -> None:
        """Count a cell the caller found unusable (e.g. an unparseable time)."""
        self._bad(value, column)

    def report(self) -> str:
        """One line: ``plays 3 (e.g. 'lots', 'nan', '-5'); likes 1 (e.g. 'inf')``; '' when none."""
        return "; ".join(
            f"{column} {cells.count} (e.g. {', '.join(cells.examples)})"
            for column, cells in self.invalid.items()
        )

    def check(self, source: str, strict: bool) -> None:
        """Under ``strict``, any invalid cell is a DataError naming ``source``."""
        text = self.report()
        if text and strict:
            raise DataError(f"{source}: invalid label values: {text} (--strict)")

    @property
    def n_invalid(self) -> int:
        return sum(cells.count for cells in self.invalid.values())

    def _number(self, value: Any, column: str, counts: bool) -> float:
        if value is None or (isinstance(value, str) and not value.strip()):
            return math.nan
        number = _as_float(value, counts)
        if number is None or not math.isfinite(number):
            self._bad(value, column)
            return math.nan
        return number

    def _bad(self, value: Any, column: str) -> None:
        self.invalid.setdefault(column, InvalidCells()).add(value)


def _as_float(value: Any, counts: bool) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        try:
            return float(value)
        except OverflowError:  # an int beyond float range
            return None
    if not isinstance(value, str):
        return None
    text = value.strip()
    if counts and _GROUPED.fullmatch(text):
        text = text.replace(",", "")
    try:
        return float(text)
    except ValueError:
        return None
