"""The frame stamp: capture time as 64 black/white cells in the top 16 rows (README, "Frame stamp")."""

from __future__ import annotations

import numpy as np

STAMP_ROWS = 16
STAMP_CELLS = 64
_BIT_WEIGHTS = np.array([1 << (63 - i) for i in range(STAMP_CELLS)], dtype=np.uint64)


def _cell_of_column(width: int) -> np.ndarray:
    return (np.arange(width) * STAMP_CELLS) // width


def write_stamp(image: np.ndarray, time_us: int) -> None:
    """Draw `time_us` into the top band of a BGR (or gray) image, in place."""
    bits = (np.uint64(time_us) & _BIT_WEIGHTS) != 0
    row = np.where(bits[_cell_of_column(image.shape[1])], 255, 0).astype(image.dtype)
    if image.ndim == 3:
        image[:STAMP_ROWS] = row[None, :, None]
    else:
        image[:STAMP_ROWS] = row[None, :]


def read_stamp(image: np.ndarray) -> int:
    """Read the stamp back from a BGR or gray picture: microseconds since the epoch."""
    gray = image if image.ndim == 2 else image.mean(axis=2)
    width = gray.shape[1]
    cell = width / STAMP_CELLS
    band = gray[STAMP_ROWS // 4 : STAMP_ROWS * 3 // 4]
    value = 0
    for i in range(STAMP_CELLS):
        x0 = int(i * cell + cell / 4)
        x1 = max(x0 + 1, int((i + 1) * cell - cell / 4))
        if band[:, x0:x1].mean() > 128:
            value |= 1 << (63 - i)
    return value
