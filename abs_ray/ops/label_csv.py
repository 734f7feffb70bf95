"""The published hand-label CSV: one ``G x G`` foreground patch grid per image.

Format (as released by the method's authors)::

    info,mask
    001.Black_footed_Albatross/Black_Footed_Albatross_0046_18.jpg,0000011110000...

- header exactly ``info,mask``;
- ``info``: the image key (any non-empty string; commas and quotes are CSV-quoted);
- ``mask``: exactly ``G**2`` characters ``'0'``/``'1'`` in row-major order, **1 = foreground**
  (see :mod:`abs_ray.ops.patches` for the convention).

Blank lines are ignored. Every malformed record raises :class:`LabelFormatError` naming its
1-based line number in the text (the header is line 1).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch

from abs_ray.errors import ConfigError, LabelFormatError

__all__ = ["PatchLabel", "format_patch_label_csv", "parse_patch_label_csv"]

HEADER = ("info", "mask")


@dataclass(frozen=True, eq=False)
class PatchLabel:
    """One hand-labelled image.

    Attributes:
        info: the image key, non-empty.
        grid: ``(G, G)`` float32 tensor with values in ``{0, 1}``, 1 = foreground.

    Two labels are equal when their ``info`` strings and grids are equal.

    Example:
        >>> label = PatchLabel("a.jpg", torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
        >>> label.mask_string
        '1000'
    """

    info: str
    grid: torch.Tensor

    @property
    def mask_string(self) -> str:
        """The grid as the CSV's row-major string of ``'0'``/``'1'``."""
        return "".join("1" if v else "0" for v in self.grid.flatten().tolist())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PatchLabel):
            return NotImplemented
        return (
            self.info == other.info
            and self.grid.shape == other.grid.shape
            and torch.equal(self.grid.cpu(), other.grid.cpu())
        )

    __hash__ = None  # type: ignore[assignment]  # holds a tensor: not hashable


def _mask_to_grid(mask: str, grid: int) -> torch.Tensor:
    data = torch.frombuffer(bytearray(mask, "ascii"), dtype=torch.uint8)
    return (data == ord("1")).to(torch.float32).reshape(grid, grid)


def parse_patch_label_csv(text: str, grid: int | None = None) -> list[PatchLabel]:
    """Parse the ``info,mask`` hand-label CSV.

    Args:
        text: the whole CSV file as a string (a leading UTF-8 BOM is tolerated).
        grid: patches per side ``G``; when ``None`` it is inferred from the first record's
            mask length, which must then be a perfect square.

    Returns:
        One :class:`PatchLabel` per record, in file order; each ``grid`` is ``(G, G)``
        float32 in ``{0, 1}``, 1 = foreground.

    Raises:
        ConfigError: if ``grid`` is given but is not a positive int.
        LabelFormatError: on a missing or wrong header, a record that does not have exactly
            two fields, an empty ``info``, a duplicate ``info``, a mask of the wrong length
            (or, when inferring, a length that is not a perfect square), or a mask character
            other than ``'0'``/``'1'``. The message names the 1-based line number.

    Example:
        >>> labels = parse_patch_label_csv("info,mask\\na.jpg,1000\\n")
        >>> labels[0].info, labels[0].grid
        ('a.jpg', tensor([[1., 0.],
                [0., 0.]]))
    """
    if grid is not None and (isinstance(grid, bool) or not isinstance(grid, int) or grid < 1):
        raise ConfigError(f"grid must be a positive int or None, got {grid!r}")
    if not isinstance(text, str):
        raise LabelFormatError(f"patch-label CSV must be text (str), got {type(text).__name__}")
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff")))
    labels: list[PatchLabel] = []
    first_line: dict[str, int] = {}
    header_seen = False
    last_line = 0
    for row in reader:
        line = last_line + 1  # the line this record starts on
        last_line = reader.line_num
        if not row:  # blank line
            continue
        if not header_seen:
            if tuple(row) != HEADER:
                raise LabelFormatError(
                    f"line {line}: header must be {','.join(HEADER)!r}, got {','.join(row)!r}"
                )
            header_seen = True
            continue
        if len(row) != 2:
            raise LabelFormatError(
                f"line {line}: expected 2 fields (info,mask), got {len(row)}: {row!r}"
            )
        info, mask = row
        if not info.strip():
            raise LabelFormatError(f"line {line}: empty info (image key)")
        if grid is None:
            side = math.isqrt(len(mask))
            if len(mask) == 0 or side * side != len(mask):
                raise LabelFormatError(
                    f"line {line}: mask length {len(mask)} is not a perfect square G*G, "
                    "cannot infer the grid"
                )
            grid = side
        if len(mask) != grid * grid:
            raise LabelFormatError(
                f"line {line}: mask must have {grid * grid} characters (grid {grid}x{grid}), "
                f"got {len(mask)}"
            )
        bad = next((i for i, c in enumerate(mask) if c not in "01"), None)
        if bad is not None:
            raise LabelFormatError(
                f"line {line}: mask may contain only '0' and '1', got {mask[bad]!r} "
                f"at position {bad}"
            )
        if info in first_line:
            raise LabelFormatError(
                f"line {line}: duplicate info {info!r} (first on line {first_line[info]})"
            )
        first_line[info] = line
        labels.append(PatchLabel(info=info, grid=_mask_to_grid(mask, grid)))
    if not header_seen:
        raise LabelFormatError(f"line 1: missing header {','.join(HEADER)!r} (empty text)")
    return labels


def format_patch_label_csv(labels: Iterable[PatchLabel]) -> str:
    """Write labels as the ``info,mask`` CSV (``\\n`` line endings, minimal quoting).

    ``parse_patch_label_csv(format_patch_label_csv(labels)) == labels`` for every valid list.

    Args:
        labels: :class:`PatchLabel` records, all with the same ``(G, G)`` grid of ``{0, 1}``
            values and distinct non-empty ``info``.

    Returns:
        The CSV text, header included, ending with a newline.

    Raises:
        LabelFormatError: if a record is not a :class:`PatchLabel`, has an empty or duplicate
            ``info``, a grid that is not square 2-D, values other than 0/1, or a grid size
            different from the first record's. The message names the 0-based record index.

    Example:
        >>> label = PatchLabel("a,b.jpg", torch.tensor([[0.0, 1.0], [1.0, 1.0]]))
        >>> print(format_patch_label_csv([label]), end="")
        info,mask
        "a,b.jpg",0111
    """
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(HEADER)
    seen: set[str] = set()
    side: int | None = None
    for index, label in enumerate(labels):
        if not isinstance(label, PatchLabel):
            raise LabelFormatError(
                f"record {index}: expected PatchLabel, got {type(label).__name__}"
            )
        if not isinstance(label.info, str) or not label.info.strip():
            raise LabelFormatError(f"record {index}: empty info (image key)")
        if label.info in seen:
            raise LabelFormatError(f"record {index}: duplicate info {label.info!r}")
        seen.add(label.info)
        g = label.grid
        if not isinstance(g, torch.Tensor) or g.ndim != 2 or g.shape[0] != g.shape[1]:
            shape = tuple(g.shape) if isinstance(g, torch.Tensor) else type(g).__name__
            raise LabelFormatError(
                f"record {index} ({label.info!r}): grid must be (G, G), got {shape}"
            )
        if side is None:
            side = g.shape[0]
        elif g.shape[0] != side:
            raise LabelFormatError(
                f"record {index} ({label.info!r}): grid {g.shape[0]}x{g.shape[0]} differs from "
                f"the first record's {side}x{side}"
            )
        if not bool(((g == 0) | (g == 1)).all()):
            raise LabelFormatError(f"record {index} ({label.info!r}): grid values must be 0 or 1")
        writer.writerow((label.info, label.mask_string))
    return out.getvalue()
