"""What every source provides."""

from __future__ import annotations

from typing import Protocol

import numpy as np


class SourceError(Exception):
    """The source cannot be opened or has failed; the message says why."""


class Source(Protocol):
    """A blocking frame producer, read from its own capture thread."""

    description: str
    stamps: bool  # True when the frame stamp is drawn on every frame

    def open(self) -> None:
        """Open the device/file/stream; raise SourceError if it cannot be opened."""

    def read(self) -> np.ndarray | None:
        """Block until the next frame (paced at the source's rate); None when the source failed."""

    def close(self) -> None:
        """Release the device; safe to call twice."""
