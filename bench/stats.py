"""Small statistics helpers: percentiles, and median with spread over repeats."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), or NaN for no values."""
    if len(values) == 0:
        return float("nan")
    return float(np.percentile(np.asarray(values, dtype=float), q))


@dataclass(frozen=True)
class Spread:
    """The median of repeated measurements and their range (min-max)."""

    median: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        finite = [v for v in values if v == v]  # drop NaN
        if not finite:
            return cls(float("nan"), float("nan"), float("nan"), 0)
        return cls(float(np.median(finite)), min(finite), max(finite), len(finite))

    def fmt(self, digits: int = 2, spread: bool = True) -> str:
        if self.n == 0:
            return "-"
        text = f"{self.median:.{digits}f}"
        if spread and self.n > 1:
            text += f" ({self.low:.{digits}f}-{self.high:.{digits}f})"
        return text
