"""The frame stamp: 64 cells across the top 16 rows, cell i = bit 63-i of the capture time in µs."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from camcast.encoding.jpeg import encode_jpeg
from camcast.frames import now_us
from camcast.stamp import STAMP_CELLS, STAMP_ROWS, read_stamp, write_stamp

VALUES = [0, 1, 1 << 63, (1 << 64) - 1, 0x5555_5555_5555_5555, 1_700_000_000_123_456]


def _noise(height: int, width: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), np.uint8)


@pytest.mark.parametrize("value", VALUES)
@pytest.mark.parametrize("width", [64, 320, 640, 1000, 1920])
def test_round_trip(value: int, width: int) -> None:
    image = _noise(48, width, value % 1000)
    write_stamp(image, value)
    assert read_stamp(image) == value


def test_layout_matches_the_contract() -> None:
    value = now_us()
    image = _noise(480, 640, 1)
    below = image[STAMP_ROWS:].copy()
    write_stamp(image, value)
    cell = 640 // STAMP_CELLS
    for i in range(STAMP_CELLS):
        bit = value >> (63 - i) & 1
        block = image[:STAMP_ROWS, i * cell : (i + 1) * cell]
        assert (block == (255 if bit else 0)).all(), f"cell {i}"
    assert (image[STAMP_ROWS:] == below).all(), "the stamp must not touch the rest of the picture"


def test_gray_images() -> None:
    image = np.full((32, 320), 77, np.uint8)
    write_stamp(image, 123_456_789)
    assert read_stamp(image) == 123_456_789


@pytest.mark.parametrize("quality", [30, 80, 100])
@pytest.mark.parametrize("size", [(320, 240), (640, 480), (1280, 720)])
def test_survives_jpeg(quality: int, size: tuple[int, int]) -> None:
    width, height = size
    value = now_us()
    image = _noise(height, width, quality)
    write_stamp(image, value)
    decoded = cv2.imdecode(np.frombuffer(encode_jpeg(image, quality), np.uint8), cv2.IMREAD_COLOR)
    assert read_stamp(decoded) == value


def test_survives_scaling_by_a_browser() -> None:
    # A viewer may show the picture scaled; the cell centres still read right.
    value = now_us()
    image = _noise(480, 640, 3)
    write_stamp(image, value)
    for width, height in [(320, 240), (1280, 960), (700, 525)]:
        scaled = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
        assert read_stamp(scaled) == value, (width, height)
