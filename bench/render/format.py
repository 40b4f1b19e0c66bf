"""Formatting helpers every renderer shares: numbers, percentages, millions, markdown tables."""

from __future__ import annotations

import pandas as pd


def missing(value) -> bool:
    """Whether a cell has no value (``None`` or a pandas/NumPy NaN)."""
    return value is None or pd.isna(value)


def pct(value, digits: int = 1) -> str:
    return "" if missing(value) else f"{100 * value:.{digits}f} %"


def number(value, digits: int = 0) -> str:
    return "" if missing(value) else f"{value:,.{digits}f}"


def millions(value) -> str:
    return "" if missing(value) else f"{value / 1e6:.2f} M"


def half_range(spread) -> str:
    """A timed repeats' relative spread (max - min over median) as `` ±N %`` (half of it), or nothing."""
    return "" if missing(spread) else f" ±{100 * spread / 2:.0f} %"


def first_line(error) -> str:
    """An error's first line, cut to 200 characters (tracebacks stay in the logs)."""
    return error.splitlines()[0][:200] if error else ""


def table(rows: list[dict]) -> str:
    """A GitHub markdown table with the rows' keys as headers; ``_no rows_`` when empty.

    Numbers are kept as written: the renderers have already formatted every cell.
    """
    from tabulate import tabulate

    return tabulate(rows, headers="keys", tablefmt="github", disable_numparse=True) if rows else "_no rows_"


def distinct(frame: pd.DataFrame, column: str) -> str:
    """The column's distinct non-empty values, sorted and comma-separated, or ``unknown``."""
    return ", ".join(sorted({str(v) for v in frame[column].dropna() if str(v)})) or "unknown"


def commands_line(frame: pd.DataFrame) -> list[str]:
    """The records' distinct command lines as one bullet, or no line where none was stamped."""
    commands = sorted({c for c in frame["command"].dropna() if c})
    return ["- Command(s): " + "; ".join(f"`{c}`" for c in commands)] if commands else []
