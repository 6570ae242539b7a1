"""Split a multipart/x-mixed-replace body into its JPEGs, each one's bytes exactly as sent.

Cameras get the format wrong in many small ways, so the parser is lenient where that is safe:
the boundary may come with or without the leading "--" (and quoted, or missing from the header:
then the first "--" line of the body names it); parts may lack headers, or Content-Length (then
the part ends at the next boundary line); a Content-Length that does not frame a whole JPEG
(SOI..EOI) is not trusted either, the boundary decides. What it does not tolerate: a part that is
not a JPEG, or more than `max_part` bytes without a boundary (so a garbage stream cannot eat memory).
"""

from __future__ import annotations

SOI = b"\xff\xd8"
EOI = b"\xff\xd9"
MAX_PART_BYTES = 20 * 1024 * 1024
MAX_HEADER_BYTES = 64 * 1024
_LONGEST_DELIMITER_TAIL = 80  # past the boundary token, a delimiter line holds only "--" and blanks


class MultipartError(Exception):
    """The body is not a multipart stream of JPEGs; the message says what was wrong."""


def boundary_of(content_type: str) -> str | None:
    """The boundary parameter of a Content-Type, unquoted; None when it has none."""
    for param in content_type.split(";")[1:]:
        name, _, value = param.strip().partition("=")
        if name.strip().lower() == "boundary":
            value = value.strip().strip('"').strip()
            return value or None
    return None


class MultipartJpegParser:
    """Feed it bytes as they arrive (`feed`), take whole JPEGs out (`next_jpeg`)."""

    _SEEK, _HEADERS, _BODY = range(3)

    def __init__(self, boundary: str | None, max_part: int = MAX_PART_BYTES) -> None:
        # Only the token is matched: any run of dashes before it (the "--" the RFC asks for, none,
        # or the ones a camera put into the header's value as well) starts a delimiter line.
        token = boundary.lstrip("-").encode("latin-1") if boundary else b""
        self._token: bytes | None = token or None
        self._max_part = max_part
        self._buf = bytearray()
        self._state = self._SEEK
        self._length: int | None = None  # the part's Content-Length while it is trusted
        self._scan_from = 0  # where the search for the part's closing boundary resumes
        self.ended = False  # the closing delimiter ("--boundary--") arrived
        self.parts = 0

    @property
    def boundary(self) -> str | None:
        return self._token.decode("latin-1") if self._token else None

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> None:
        self._buf += data

    def next_jpeg(self) -> bytes | None:
        """The next whole JPEG, or None until more bytes are fed (or for good, once `ended`)."""
        while not self.ended:
            if self._state == self._SEEK:
                if not self._seek():
                    return None
            elif self._state == self._HEADERS:
                if not self._headers():
                    return None
            else:
                return self._body()
        return None

    # -- states ----------------------------------------------------------------------------------
    def _seek(self) -> bool:
        """Consume up to and including the next delimiter line; False when it is not here yet."""
        if self._token is None and not self._learn_boundary():
            self._check_size("no multipart boundary line")
            return False
        found = self._find_delimiter(0)
        if found is None or found == -1:
            self._check_size("no multipart boundary")
            return False
        _, line_end, closing = found
        del self._buf[:line_end]
        if closing:
            self.ended = True
        else:
            self._state = self._HEADERS
        return True

    def _headers(self) -> bool:
        buf = self._buf
        length: int | None = None
        pos = 0
        while True:
            if buf.startswith(SOI, pos):  # no (or no more) headers: the JPEG follows at once
                break
            newline = buf.find(b"\n", pos)
            if newline == -1:
                if len(buf) > MAX_HEADER_BYTES:
                    raise MultipartError(f"part headers longer than {MAX_HEADER_BYTES} bytes")
                return False
            line = bytes(buf[pos:newline]).strip()
            pos = newline + 1
            if not line:
                break
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                try:
                    length = int(value.strip())
                except ValueError:
                    length = None  # a bad length is as good as none: the boundary decides
        del buf[:pos]
        self._start_body(length if length is not None and length >= 0 else None)
        return True

    def _start_body(self, length: int | None) -> None:
        if length is not None and length > self._max_part:
            raise MultipartError(f"part of {length} bytes is larger than the limit of {self._max_part}")
        self._state = self._BODY
        self._length = length
        self._scan_from = 0

    def _body(self) -> bytes | None:
        buf = self._buf
        # Stray blank lines before the picture (a JPEG starts with 0xFF, never CR or LF).
        skip = 0
        while skip < len(buf) and buf[skip] in b"\r\n":
            skip += 1
        if skip:
            del buf[:skip]
            self._scan_from = max(0, self._scan_from - skip)
        if len(buf) < 2:
            return None
        if not buf.startswith(SOI):
            raise MultipartError(f"part {self.parts + 1} is not a JPEG (starts with {bytes(buf[:8])!r})")
        if self._length is not None:
            if len(buf) < self._length:
                return None
            if buf[: self._length].endswith(EOI):
                return self._take(self._length, self._length)
            self._length = None  # the length does not frame the picture: find the boundary instead
        found = self._find_delimiter(self._scan_from)
        if found is None or found == -1:
            self._check_size("part without a boundary")
            # A delimiter line that is still arriving starts after the last newline we have.
            self._scan_from = max(0, buf.rfind(b"\n"))
            return None
        line_start = found[0]
        end = line_start
        while end > 0 and buf[end - 1] in b"\r\n":  # the line break belongs to the delimiter
            end -= 1
        return self._take(end, line_start)

    def _take(self, end: int, consumed: int) -> bytes:
        with memoryview(self._buf) as view:
            jpeg = bytes(view[:end])  # one copy, not a slice and then a copy of it
        del self._buf[:consumed]
        self._state = self._SEEK
        self.parts += 1
        return jpeg

    # -- helpers ---------------------------------------------------------------------------------
    def _check_size(self, what: str) -> None:
        if len(self._buf) > self._max_part:
            raise MultipartError(f"{what} in {len(self._buf)} bytes (limit {self._max_part})")

    def _learn_boundary(self) -> bool:
        """No boundary in the header: the first line that starts with "--" is the delimiter."""
        pos = 0
        while (newline := self._buf.find(b"\n", pos)) != -1:
            line = bytes(self._buf[pos:newline]).strip()
            pos = newline + 1
            token = line.lstrip(b"-")
            if line.startswith(b"--") and token:
                self._token = token
                return True
        return False

    def _find_delimiter(self, start: int) -> tuple[int, int, bool] | int | None:
        """(line start, line end, closing) of the first delimiter line at or after `start`;
        -1 when a line that may be one has not fully arrived; None when there is none."""
        assert self._token is not None
        buf, token = self._buf, self._token
        hit = buf.find(token, start)
        while hit != -1:
            line_start = hit
            while line_start > 0 and buf[line_start - 1] == 0x2D:  # "-"
                line_start -= 1
            if line_start == 0 or buf[line_start - 1] == 0x0A:
                tail_start = hit + len(token)
                newline = buf.find(b"\n", tail_start, tail_start + _LONGEST_DELIMITER_TAIL)
                if newline == -1 and len(buf) - tail_start < _LONGEST_DELIMITER_TAIL:
                    return -1
                if newline != -1:
                    tail = bytes(buf[tail_start:newline]).strip()
                    if tail in (b"", b"--"):
                        return line_start, newline + 1, tail == b"--"
            hit = buf.find(token, hit + 1)
        return None
