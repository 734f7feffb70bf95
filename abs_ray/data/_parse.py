"""Column parsing shared by the manifest and layout readers.

Every error names the source file and the offending row as a **1-based data row, header
excluded** (row 1 is the first line after the CSV header, or the first row of a DataFrame),
so a user can find the line with ``sed -n "$((row + 1))p" file.csv``.
"""

from __future__ import annotations

import pandas as pd

from abs_ray.errors import ManifestRowError

__all__ = ["parse_int_column", "parse_str_column", "require_columns", "row_error"]


def row_error(source: str, row: int, message: str) -> ManifestRowError:
    """A :class:`ManifestRowError` for ``row`` (0-based position, shown 1-based)."""
    return ManifestRowError(
        f"{source}: row {row + 1} (1-based data row, header excluded): {message}"
    )


def require_columns(columns: list[str] | pd.Index, required: tuple[str, ...], source: str) -> None:
    """Raise :class:`ManifestRowError` on the header row when required columns are missing."""
    missing = [c for c in required if c not in columns]
    if missing:
        raise ManifestRowError(
            f"{source}: header row: missing column(s) {missing}; required {list(required)}, "
            f"found {[str(c) for c in columns]}"
        )


def parse_int_column(
    values: pd.Series,
    column: str,
    source: str,
    *,
    nullable: bool = False,
    allowed: tuple[int, ...] | None = None,
    minimum: int | None = None,
) -> pd.Series:
    """Parse a column to nullable ``Int64``, naming the first bad row on failure.

    Accepts integers, integral floats and strings of integers; empty cells are missing.

    Args:
        values: (N,) column as read (object, str, int or float dtype).
        column: column name, for messages.
        source: file name or description, for messages.
        nullable: allow missing values (else a missing value is an error).
        allowed: when given, the only values accepted.
        minimum: when given, the smallest value accepted.

    Returns:
        (N,) ``Int64`` series with a fresh ``RangeIndex``.

    Raises:
        ManifestRowError: a value is not an integer, missing where required, or not allowed.

    >>> parse_int_column(pd.Series(["1", "0", 2]), "y", "m.csv").tolist()
    [1, 0, 2]
    >>> parse_int_column(pd.Series(["1", "x"]), "y", "m.csv")
    Traceback (most recent call last):
    ...
    abs_ray.errors.ManifestRowError: m.csv: row 2 (1-based data row, header excluded): column 'y' must be an integer, got 'x'
    """
    values = values.reset_index(drop=True)
    missing = values.isna() | values.map(lambda v: isinstance(v, str) and not v.strip())
    numbers = pd.to_numeric(values.where(~missing), errors="coerce")
    bad = ~missing & (
        numbers.isna() | (numbers % 1 != 0) | values.map(lambda v: isinstance(v, bool))
    )
    if bad.any():
        row = int(bad.to_numpy().nonzero()[0][0])
        raise row_error(source, row, f"column {column!r} must be an integer, got {values[row]!r}")
    if not nullable and missing.any():
        row = int(missing.to_numpy().nonzero()[0][0])
        raise row_error(source, row, f"column {column!r} must not be empty, got {values[row]!r}")
    out = numbers.astype("Float64").astype("Int64")
    if allowed is not None:
        wrong = out.notna() & ~out.isin(allowed)
        if wrong.any():
            row = int(wrong.to_numpy().nonzero()[0][0])
            raise row_error(
                source,
                row,
                f"column {column!r} must be one of {list(allowed)}, got {values[row]!r}",
            )
    if minimum is not None:
        wrong = out.notna() & (out < minimum)
        if wrong.any():
            row = int(wrong.to_numpy().nonzero()[0][0])
            raise row_error(
                source, row, f"column {column!r} must be >= {minimum}, got {values[row]!r}"
            )
    return out


def parse_str_column(
    values: pd.Series,
    column: str,
    source: str,
    *,
    nullable: bool = False,
    allowed: tuple[str, ...] | None = None,
) -> pd.Series:
    """Check a column holds non-empty strings; return it as pandas ``string`` dtype.

    Args:
        values: (N,) column as read.
        column: column name, for messages.
        source: file name or description, for messages.
        nullable: allow missing values (None, NaN, NA or an empty string).
        allowed: when given, the only values accepted.

    Returns:
        (N,) ``string`` series (missing values are ``pd.NA``) with a fresh ``RangeIndex``.

    Raises:
        ManifestRowError: a value is not a string, empty where required, or not allowed.

    >>> parse_str_column(pd.Series(["a", None]), "mask_uri", "m.csv", nullable=True).tolist()
    ['a', <NA>]
    """
    values = values.reset_index(drop=True)
    for row, value in enumerate(values.tolist()):
        is_missing = (
            value is None or value is pd.NA or (isinstance(value, float) and value != value)
        )
        if is_missing or (isinstance(value, str) and not value.strip()):
            if nullable:
                continue
            raise row_error(source, row, f"column {column!r} must not be empty, got {value!r}")
        if not isinstance(value, str):
            raise row_error(
                source,
                row,
                f"column {column!r} must be a string, got {type(value).__name__} {value!r}",
            )
        if allowed is not None and value not in allowed:
            raise row_error(
                source, row, f"column {column!r} must be one of {list(allowed)}, got {value!r}"
            )
    out = values.astype("string")
    return out.mask(out.str.strip() == "", pd.NA)
