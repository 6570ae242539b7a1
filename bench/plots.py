"""PNG plots with matplotlib (Agg): lines with error bars, and CDFs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


@dataclass(frozen=True)
class Series:
    label: str
    x: Sequence[float]
    y: Sequence[float]  # medians over repeats
    low: Sequence[float] | None = None  # spread, drawn as error bars
    high: Sequence[float] | None = None
    color: str | None = None  # the same series keeps its colour across charts


@dataclass(frozen=True)
class Samples:
    label: str
    values: Sequence[float]
    color: str | None = None
    dotted: bool = False


def line_plot(path: Path, title: str, xlabel: str, ylabel: str, series: Sequence[Series],
              hlines: Sequence[tuple[float, str]] = (), logx: bool = False) -> Path:
    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=110)
    for s in series:
        y = np.asarray(s.y, dtype=float)
        yerr = None
        if s.low is not None and s.high is not None:
            yerr = np.vstack([y - np.asarray(s.low, dtype=float), np.asarray(s.high, dtype=float) - y])
        ax.errorbar(s.x, y, yerr=yerr, marker="o", capsize=3, label=s.label, color=s.color)
    for value, label in hlines:
        ax.axhline(value, linestyle="--", color="grey", linewidth=1)
        ax.annotate(label, (0.01, value), xycoords=("axes fraction", "data"), va="bottom",
                    fontsize=8, color="grey")
    if logx:
        ax.set_xscale("log")
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def cdf_plot(path: Path, title: str, xlabel: str, samples: Sequence[Samples],
             vlines: Sequence[tuple[float, str]] = (), xmax: float | None = None,
             ylabel: str = "fraction of frames") -> Path:
    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=110)
    for sample in samples:
        v = np.sort(np.asarray(sample.values, dtype=float))
        if len(v) == 0:
            continue
        ax.step(v, np.arange(1, len(v) + 1) / len(v), where="post", label=f"{sample.label} (n={len(v)})",
                color=sample.color, linestyle=":" if sample.dotted else "-")
    for value, label in vlines:
        ax.axvline(value, linestyle="--", color="grey", linewidth=1)
        ax.text(value, 0.02, f" {label}", transform=ax.get_xaxis_transform(), fontsize=8, color="grey",
                rotation=90, va="bottom")
    if xmax is not None:
        ax.set_xlim(0, xmax)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
