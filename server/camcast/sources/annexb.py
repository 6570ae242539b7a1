"""H.264 bitstream plumbing for passthrough: Annex B access units with their parameter sets.

WebRTC (RFC 6184 packetization mode 1) and camcast's recorder take Annex B access units with SPS
and PPS in front of every IDR. Cameras send Annex B over RTSP but often leave the parameter sets
to the SDP; MP4 files hold length-prefixed (AVCC) units and keep the sets in the avcC box.
"""

from __future__ import annotations

START = b"\x00\x00\x00\x01"
NAL_IDR, NAL_SPS, NAL_PPS = 5, 7, 8


def split_annexb(data: bytes) -> list[bytes]:
    """The NAL units of an Annex B buffer (start codes of 3 or 4 bytes). bytes.find does the
    scanning in C: a per-byte loop in Python costs milliseconds per HD access unit."""
    units: list[bytes] = []
    start = data.find(b"\x00\x00\x01")
    while start >= 0:
        begin = start + 3
        nxt = data.find(b"\x00\x00\x01", begin)
        if nxt < 0:
            units.append(data[begin:])
            break
        end = nxt - 1 if data[nxt - 1] == 0 else nxt  # a 4-byte start code's leading zero
        units.append(data[begin:end])
        start = nxt
    return [u for u in units if u]


def is_annexb(data: bytes) -> bool:
    return data.startswith(b"\x00\x00\x01") or data.startswith(START)


def avcc_units(data: bytes, length_size: int = 4) -> list[bytes]:
    """The NAL units of a length-prefixed (AVCC) buffer; raises ValueError when it is not one."""
    units: list[bytes] = []
    i, n = 0, len(data)
    while i < n:
        if i + length_size > n:
            raise ValueError("truncated AVCC length")
        size = int.from_bytes(data[i:i + length_size], "big")
        i += length_size
        if size == 0 or i + size > n:
            raise ValueError("bad AVCC unit length")
        units.append(data[i:i + size])
        i += size
    return units


def parameter_sets(extradata: bytes | None) -> tuple[list[bytes], int]:
    """SPS/PPS units from a stream's extradata (avcC box or Annex B) and the AVCC length size."""
    if not extradata:
        return [], 4
    if is_annexb(extradata):
        return [u for u in split_annexb(extradata) if u[0] & 0x1F in (NAL_SPS, NAL_PPS)], 4
    if len(extradata) < 7 or extradata[0] != 1:
        return [], 4
    length_size = (extradata[4] & 0x03) + 1
    units: list[bytes] = []
    i = 6
    count = extradata[5] & 0x1F
    for _ in range(count):
        size = int.from_bytes(extradata[i:i + 2], "big")
        units.append(extradata[i + 2:i + 2 + size])
        i += 2 + size
    if i < len(extradata):
        count = extradata[i]
        i += 1
        for _ in range(count):
            size = int.from_bytes(extradata[i:i + 2], "big")
            units.append(extradata[i + 2:i + 2 + size])
            i += 2 + size
    return [u for u in units if u], length_size


def profile_level_id(units: list[bytes]) -> str | None:
    """The SDP profile-level-id (6 hex digits) of the first SPS among `units`."""
    for unit in units:
        if unit and unit[0] & 0x1F == NAL_SPS and len(unit) >= 4:
            return unit[1:4].hex()
    return None


class AccessUnits:
    """Turns a stream's packets into Annex B access units with SPS/PPS before every IDR."""

    def __init__(self, extradata: bytes | None) -> None:
        self.parameter_sets, self._length_size = parameter_sets(extradata)
        # The container decides, not each packet: a length prefix of 256..511 bytes reads like
        # an Annex B start code. An avcC box (version 1) means length-prefixed packets.
        self._avcc = bool(extradata) and not is_annexb(extradata or b"") and (extradata or b"")[0] == 1

    def convert(self, data: bytes) -> tuple[bytes, bool]:
        """(Annex B access unit, whether it holds an IDR)."""
        units = avcc_units(data, self._length_size) if self._avcc else split_annexb(data)
        kinds = [u[0] & 0x1F for u in units]
        if NAL_SPS in kinds and NAL_PPS in kinds:
            # In-band sets win: a camera may change them (new size) without telling the SDP.
            self.parameter_sets = [u for u in units if u[0] & 0x1F in (NAL_SPS, NAL_PPS)]
        keyframe = NAL_IDR in kinds
        if keyframe and not (NAL_SPS in kinds and NAL_PPS in kinds):
            units = self.parameter_sets + [u for u in units if u[0] & 0x1F not in (NAL_SPS, NAL_PPS)]
        return b"".join(START + u for u in units), keyframe

    @property
    def parameters(self) -> bytes:
        return b"".join(START + u for u in self.parameter_sets)
