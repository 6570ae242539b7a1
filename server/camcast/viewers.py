"""Who is watching: viewer counts by kind, with one log line per connect and disconnect."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger("camcast.viewers")


class Viewers:
    def __init__(self, camera: str = "default") -> None:
        self.camera = camera
        self.current: Counter[str] = Counter()
        self.total: Counter[str] = Counter()
        self.bytes_sent: Counter[str] = Counter()

    @contextmanager
    def watching(self, kind: str, who: str) -> Iterator[None]:
        self.join(kind, who)
        try:
            yield
        finally:
            self.leave(kind, who)

    def join(self, kind: str, who: str) -> None:
        self.current[kind] += 1
        self.total[kind] += 1
        log.info("%s viewer connected: %s (%d watching %s)", kind, who, self.current[kind], self.camera,
                 extra={"event": "viewer_joined", "kind": kind, "viewer": who, "camera": self.camera})

    def leave(self, kind: str, who: str) -> None:
        self.current[kind] -= 1
        log.info("%s viewer disconnected: %s (%d watching %s)", kind, who, self.current[kind], self.camera,
                 extra={"event": "viewer_left", "kind": kind, "viewer": who, "camera": self.camera})

    def sent(self, kind: str, nbytes: int) -> None:
        """Count bytes written to viewers of `kind` (for /metrics)."""
        self.bytes_sent[kind] += nbytes

    def by_kind(self) -> dict[str, int]:
        return {kind: self.current.get(kind, 0) for kind in ("webrtc", "mjpeg")} | {
            k: v for k, v in self.current.items() if k not in ("webrtc", "mjpeg")
        }
