"""Small statistics helpers: percentiles, and median with spread over repeats."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

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


@dataclass
class Repeats:
    """One point's runs (dicts of measurements), summed up over the repeats."""

    runs: list[dict[str, Any]]

    def spread(self, key: str) -> Spread:
        return Spread.of([r[key] for r in self.runs])

    def spread_of(self, fn: Callable[[dict[str, Any]], float]) -> Spread:
        return Spread.of([fn(r) for r in self.runs])

    def latency(self, q: float) -> Spread:
        """The q-th percentile of each run's `latency_ms`, over the runs."""
        return self.spread_of(lambda r: percentile(r["latency_ms"], q))

    def pooled(self, key: str) -> list[float]:
        """Every run's values of `key` in one list (NaN left out)."""
        return [x for r in self.runs for x in r[key] if x == x]
