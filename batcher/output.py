"""One way to print results: a rich table for people, JSON for machines."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import orjson


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def to_json(data: Any) -> str:
    """JSON text for machines (Decimal money as exact strings)."""
    return orjson.dumps(
        data, default=_default, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS
    ).decode()


def print_json(data: Any) -> None:
    sys.stdout.write(to_json(data) + "\n")


WIDE = 400  # --wide tables are as wide as their content, never cut to the terminal


def print_table(
    rows: Sequence[Mapping[str, Any]],
    title: str | None = None,
    columns: Sequence[str] = (),
    *,
    wide: bool = False,
) -> None:
    """Rows as a table on stdout; `columns` picks and orders them (default: the first row's).

    A cell never breaks inside a word (a column is at least as wide as its longest word):
    a table wider than the terminal wraps between words. `wide` ignores the terminal width.
    """
    from rich.console import Console  # here: `batcher --help` and --json never need rich
    from rich.table import Table

    console = Console(soft_wrap=False, width=WIDE if wide else None)
    if not rows:
        console.print(f"{title}: nothing to show" if title else "nothing to show")
        return
    columns = list(columns) or list(rows[0].keys())
    cells = [["" if row.get(c) is None else str(row.get(c)) for c in columns] for row in rows]
    table = Table(title=title)
    for i, column in enumerate(columns):
        numeric = isinstance(rows[0].get(column), int | float | Decimal)
        longest = max(len(word) for text in [column, *(r[i] for r in cells)] for word in
                      [*text.split(), ""])  # fmt: skip
        table.add_column(column, justify="right" if numeric else "left", min_width=longest)
    for row in cells:
        table.add_row(*row)
    console.print(table)
