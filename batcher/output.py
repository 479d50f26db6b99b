"""One way to print results: a rich table for people, JSON for machines."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table


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


def print_table(
    rows: Sequence[Mapping[str, Any]], title: str | None = None, columns: Sequence[str] = ()
) -> None:
    """Rows as a table on stdout; `columns` picks and orders them (default: the first row's)."""
    console = Console(soft_wrap=False)
    if not rows:
        console.print(f"{title}: nothing to show" if title else "nothing to show")
        return
    columns = list(columns) or list(rows[0].keys())
    table = Table(title=title)
    for column in columns:
        numeric = isinstance(rows[0].get(column), int | float | Decimal)
        table.add_column(column, justify="right" if numeric else "left")
    for row in rows:
        table.add_row(*("" if row.get(c) is None else str(row.get(c)) for c in columns))
    console.print(table)
