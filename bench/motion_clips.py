"""Labelled clips for the motion detector: frames that look like a compressed camera, and where objects are.

A clip is a static textured scene (smoothed noise at several scales plus shapes), lit by a gain that
can drift slowly (a sinusoidal swing of +-A over a period) or jump (a light switched on or off), with
textured objects that enter from an edge, cross at a speed, may stop for a while and leave. Each
frame gets sensor noise (Gaussian, from a bank of noise fields cropped at random offsets: cheap and
never the same twice in practice) and a JPEG round trip at the clip's quality. Only the frames at the
detector's sample times are rendered, at 640x480 as the camera gives them.

Labels are motion segments: from the moment half of an object is inside the picture to the moment it
stops or is less than half inside again; an object that stops and moves on has a second segment from
the end of its stop. Everything comes from a seed, so a clip is the same on every run.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import cv2
import numpy as np

WIDTH, HEIGHT = 640, 480
PICTURE = WIDTH * HEIGHT
BUCKETS: tuple[tuple[float, float], ...] = ((0.5, 1.0), (1.0, 2.0), (2.0, 5.0), (5.0, 10.0))  # % of picture
SPEEDS: dict[str, float] = {"slow": 15.0, "walk": 6.0, "run": 2.5}  # seconds to cross the picture
NOISE_LEVELS: tuple[float, ...] = (2.0, 5.0, 10.0)  # sensor noise, standard deviation in 8-bit levels
_NOISE_BANK = 12
_NOISE_MARGIN = 32


@dataclass(frozen=True)
class ObjectPass:
    """One object's trip through the picture: in from an edge at `t0`, across, perhaps a stop, out."""

    area_pct: float  # of the picture, the object's own pixels (an ellipse), not its box
    aspect: float  # height / width
    speed: str  # a key of SPEEDS
    axis: str  # "h": enters from the left or right; "v": from the bottom or top
    direction: int  # +1: left to right / top to bottom; -1 the other way
    lane: float  # 0..1, where it runs across the other axis
    t0: float  # seconds into the clip when its leading edge reaches the picture
    stop_at: float = -1.0  # 0..1 of the way across where it stops; < 0: no stop
    stop_s: float = 0.0
    seed: int = 0

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of its ellipse in pixels, so that the ellipse covers area_pct."""
        area = self.area_pct / 100.0 * PICTURE
        h = math.sqrt(4.0 * area * self.aspect / math.pi)
        return max(2, round(area * 4.0 / math.pi / h)), max(2, round(h))

    def _travel(self) -> float:
        w, h = self.size
        return (WIDTH + w) if self.axis == "h" else (HEIGHT + h)

    def _speed_px(self) -> float:
        return (WIDTH if self.axis == "h" else HEIGHT) / SPEEDS[self.speed]

    def distance(self, t: float) -> float | None:
        """How far (pixels) its leading edge is past the picture's edge at t; None before/after."""
        dt = t - self.t0
        if dt < 0:
            return None
        v = self._speed_px()
        travel = self._travel()
        if self.stop_at >= 0:
            stop_d = self.stop_at * travel
            stop_t = stop_d / v
            if dt >= stop_t:
                dt = stop_t if dt < stop_t + self.stop_s else dt - self.stop_s
        d = dt * v
        return None if d > travel else d

    def box(self, t: float) -> tuple[int, int, int, int] | None:
        """Top-left (x, y) and (w, h) of the object at t, in picture pixels (may stick out)."""
        d = self.distance(t)
        if d is None:
            return None
        w, h = self.size
        if self.axis == "h":
            y = round(self.lane * (HEIGHT - h))
            x = round(d - w) if self.direction > 0 else round(WIDTH - d)
        else:
            x = round(self.lane * (WIDTH - w))
            y = round(d - h) if self.direction > 0 else round(HEIGHT - d)
        return x, y, w, h

    def visible(self, t: float) -> float:
        """Fraction of its box inside the picture at t."""
        b = self.box(t)
        if b is None:
            return 0.0
        x, y, w, h = b
        iw = max(0, min(x + w, WIDTH) - max(x, 0))
        ih = max(0, min(y + h, HEIGHT) - max(y, 0))
        return iw * ih / (w * h)

    def end(self) -> float:
        stop = self.stop_s if self.stop_at >= 0 else 0.0
        return self.t0 + self._travel() / self._speed_px() + stop

    def segments(self, step: float = 0.01) -> list[tuple[float, float, str]]:
        """Labelled motion: (start, end, kind) with kind "enter" or "resume" (after a stop)."""
        out: list[tuple[float, float, str]] = []
        stop_t0 = stop_t1 = -1.0
        if self.stop_at >= 0:
            stop_t0 = self.t0 + self.stop_at * self._travel() / self._speed_px()
            stop_t1 = stop_t0 + self.stop_s
        inside = [t for t in np.arange(self.t0, self.end() + step, step) if self.visible(float(t)) >= 0.5]
        if not inside:
            return out
        t_in, t_out = float(inside[0]), float(inside[-1])
        if stop_t0 > t_in:
            out.append((t_in, stop_t0, "enter"))
            if stop_t1 < t_out:
                out.append((stop_t1, t_out, "resume"))
        else:
            out.append((t_in, t_out, "enter"))
        return out


@dataclass(frozen=True)
class Clip:
    """A labelled clip: its scene, light, noise, compression and objects, all from `seed`."""

    name: str
    kind: str  # objects | noise | ramp | switch
    seed: int
    duration: float
    noise: float
    jpeg_quality: int
    ramp_amplitude: float = 0.0  # gain swings 1 +- this
    ramp_period: float = 0.0  # seconds of a swing from one extreme to the other
    switches: tuple[tuple[float, float], ...] = ()  # (t, gain from then on): a light switched
    passes: tuple[ObjectPass, ...] = field(default_factory=tuple)

    def gain(self, t: float) -> float:
        g = 1.0
        for t_switch, level in self.switches:
            if t >= t_switch:
                g = level
        if self.ramp_period > 0:
            g *= 1.0 + self.ramp_amplitude * math.sin(math.pi * t / self.ramp_period)
        return g


def scene(rng: np.random.Generator) -> np.ndarray:
    """A static textured background: smoothed noise at three scales, shapes, a little optical blur."""
    img = np.zeros((HEIGHT, WIDTH, 3), np.float32)
    for scale, weight in ((96, 1.0), (24, 0.6), (6, 0.35)):
        small = rng.normal(0.0, 1.0, (HEIGHT // scale + 2, WIDTH // scale + 2, 3)).astype(np.float32)
        big = cv2.resize(small, (WIDTH + 2 * scale, HEIGHT + 2 * scale), interpolation=cv2.INTER_CUBIC)
        img += weight * big[scale:scale + HEIGHT, scale:scale + WIDTH]
    img = (img - img.mean()) / (img.std() + 1e-6) * 35.0 + rng.uniform(90, 150, 3).astype(np.float32)
    out = np.clip(img, 0, 255).astype(np.uint8)
    for _ in range(30):
        colour = tuple(int(c) for c in rng.integers(10, 245, 3))
        x, y = int(rng.integers(0, WIDTH)), int(rng.integers(0, HEIGHT))
        kind = rng.integers(0, 3)
        if kind == 0:
            w, h = (int(v) for v in rng.integers(10, 160, 2))
            cv2.rectangle(out, (x, y), (x + w, y + h), colour, -1 if rng.random() < 0.6 else 2)
        elif kind == 1:
            cv2.circle(out, (x, y), int(rng.integers(5, 60)), colour, -1 if rng.random() < 0.6 else 2)
        else:
            x2, y2 = int(rng.integers(0, WIDTH)), int(rng.integers(0, HEIGHT))
            cv2.line(out, (x, y), (x2, y2), colour, int(rng.integers(1, 5)))
    return cv2.GaussianBlur(out, (3, 3), 0)


def sprite(p: ObjectPass) -> tuple[np.ndarray, np.ndarray]:
    """The object's picture (textured: a colour, blotches and stripes) and its elliptical mask."""
    rng = np.random.default_rng(p.seed)
    w, h = p.size
    base = rng.uniform(20, 235, 3).astype(np.float32)
    blotch = cv2.resize(rng.normal(0, 1, (max(2, h // 8), max(2, w // 8), 3)).astype(np.float32), (w, h),
                        interpolation=cv2.INTER_CUBIC)
    stripes = np.sin(np.arange(h, dtype=np.float32)[:, None, None] * rng.uniform(0.2, 0.8)) * 18.0
    img = np.clip(base + blotch * 30.0 + stripes, 0, 255).astype(np.uint8)
    mask = np.zeros((h, w), np.uint8)
    cv2.ellipse(mask, (w // 2, h // 2), (max(1, w // 2), max(1, h // 2)), 0, 0, 360, 255, -1)
    return img, mask


def _paste(frame: np.ndarray, img: np.ndarray, mask: np.ndarray, x: int, y: int) -> None:
    h, w = mask.shape
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, WIDTH), min(y + h, HEIGHT)
    if x0 >= x1 or y0 >= y1:
        return
    sub = (slice(y0 - y, y1 - y), slice(x0 - x, x1 - x))
    region = frame[y0:y1, x0:x1]
    np.copyto(region, img[sub], where=mask[sub][:, :, None] > 0)


class NoiseBank:
    """Sensor noise: a few Gaussian fields, each frame a random one at a random offset."""

    def __init__(self, sigma: float, rng: np.random.Generator) -> None:
        shape = (_NOISE_BANK, HEIGHT + _NOISE_MARGIN, WIDTH + _NOISE_MARGIN, 3)
        fields = rng.normal(0.0, sigma, shape).round()
        self._plus = np.clip(fields, 0, 255).astype(np.uint8)
        self._minus = np.clip(-fields, 0, 255).astype(np.uint8)
        self._rng = rng

    def apply(self, frame: np.ndarray) -> np.ndarray:
        k = int(self._rng.integers(0, _NOISE_BANK))
        dy, dx = (int(v) for v in self._rng.integers(0, _NOISE_MARGIN, 2))
        window = (k, slice(dy, dy + HEIGHT), slice(dx, dx + WIDTH))
        return cv2.subtract(cv2.add(frame, self._plus[window]), self._minus[window])


def frames(clip: Clip, fps: float) -> Iterator[tuple[int, np.ndarray]]:
    """(t_us, 640x480 BGR frame) at the sample times 0, 1/fps, ... of the clip."""
    rng = np.random.default_rng(clip.seed)
    background = scene(rng)
    noise = NoiseBank(clip.noise, rng)
    sprites = [sprite(p) for p in clip.passes]
    params = [cv2.IMWRITE_JPEG_QUALITY, clip.jpeg_quality]
    for k in range(int(clip.duration * fps)):
        t = k / fps
        picture = background.copy()
        for p, (img, mask) in zip(clip.passes, sprites, strict=True):
            b = p.box(t)
            if b is not None:
                _paste(picture, img, mask, b[0], b[1])
        gain = clip.gain(t)
        if gain != 1.0:
            picture = cv2.convertScaleAbs(picture, alpha=gain)
        ok, jpeg = cv2.imencode(".jpg", noise.apply(picture), params)
        assert ok
        yield round(t * 1_000_000), cv2.imdecode(jpeg, cv2.IMREAD_COLOR)


def contrasts(clip: Clip, width: int = 160) -> list[float]:
    """Each object's contrast as a small grey copy shows it: the mean absolute grey-level difference
    between the scene with the object half way through its trip and without it, over the object's
    pixels, both averaged down to `width` and lightly blurred (in full light, no noise)."""
    background = scene(np.random.default_rng(clip.seed))
    height = round(HEIGHT * width / WIDTH)

    def small(picture: np.ndarray) -> np.ndarray:
        grey = cv2.cvtColor(cv2.resize(picture, (width, height), interpolation=cv2.INTER_AREA),
                            cv2.COLOR_BGR2GRAY)
        return cv2.GaussianBlur(grey, (5, 5), 0).astype(np.float32)

    plain = small(background)
    out = []
    for p in clip.passes:
        img, mask = sprite(p)
        w, h = p.size
        x = (WIDTH - w) // 2 if p.axis == "h" else round(p.lane * (WIDTH - w))
        y = round(p.lane * (HEIGHT - h)) if p.axis == "h" else (HEIGHT - h) // 2
        with_object = background.copy()
        _paste(with_object, img, mask, x, y)
        where = np.zeros((HEIGHT, WIDTH), np.uint8)
        where[y:y + h, x:x + w] = mask
        inside = cv2.resize(where, (width, height), interpolation=cv2.INTER_AREA) > 127
        out.append(float(np.abs(small(with_object) - plain)[inside].mean()) if inside.any() else 0.0)
    return out


def object_clips(per_bucket: int, per_clip: int, seed: int, gap: float = 12.0,
                 lead: float = 8.0) -> list[Clip]:
    """Clips with `per_bucket` object passes in each size bucket, `per_clip` a clip, one at a time
    (`gap` s between one leaving and the next entering, longer than the tracker's quiet period), with
    speeds, directions, stops, noise levels, JPEG qualities and slow light ramps spread over them."""
    rng = np.random.default_rng(seed)
    speeds = list(SPEEDS)
    specs = []
    for lo, hi in BUCKETS:
        for i in range(per_bucket):
            area = float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
            stop = i % 4 == 3  # a quarter stop for a while, longer than the quiet period
            specs.append(dict(area_pct=area, aspect=float(rng.uniform(0.6, 2.2)), speed=speeds[i % 3],
                              axis="h" if rng.random() < 0.75 else "v",
                              direction=1 if rng.random() < 0.5 else -1, lane=float(rng.uniform(0.05, 0.95)),
                              stop_at=float(rng.uniform(0.35, 0.6)) if stop else -1.0,
                              stop_s=float(rng.uniform(10.0, 20.0)) if stop else 0.0,
                              seed=int(rng.integers(0, 2**31))))
    order = rng.permutation(len(specs))
    clips = []
    for c, first in enumerate(range(0, len(specs), per_clip)):
        t = lead
        passes = []
        for j in order[first:first + per_clip]:
            p = ObjectPass(t0=t, **specs[j])
            passes.append(p)
            t = p.end() + gap
        ramp = c % 2 == 1
        clips.append(Clip(f"objects-{c:02d}", "objects", int(rng.integers(0, 2**31)), duration=t,
                          noise=NOISE_LEVELS[c % len(NOISE_LEVELS)], jpeg_quality=int(rng.integers(30, 71)),
                          ramp_amplitude=0.3 if ramp else 0.0,
                          ramp_period=float(rng.uniform(20, 60)) if ramp else 0.0, passes=tuple(passes)))
    return clips


def empty_clips(kind: str, hours: float, clip_minutes: float, seed: int,
                levels: tuple[float, ...] = NOISE_LEVELS) -> list[Clip]:
    """Clips with nothing moving: "noise" (sensor noise and JPEG only) or "ramp" (plus slow light
    swings of +-30 % over 20-60 s), `hours` in all, cycling through the noise `levels`."""
    rng = np.random.default_rng(seed)
    count = max(1, round(hours * 60.0 / clip_minutes))
    out = []
    for c in range(count):
        ramp = kind == "ramp"
        out.append(Clip(f"{kind}-{c:02d}", kind, int(rng.integers(0, 2**31)), duration=clip_minutes * 60.0,
                        noise=levels[c % len(levels)], jpeg_quality=int(rng.integers(30, 71)),
                        ramp_amplitude=0.3 if ramp else 0.0,
                        ramp_period=float(rng.uniform(20, 60)) if ramp else 0.0))
    return out


def switch_clips(count: int, seed: int, every: float = 30.0, switches: int = 4) -> list[Clip]:
    """Clips where a light is switched on and off (gain 0.6 <-> 1.0 in one frame) every `every` s,
    nothing else moving; what the detector makes of a global change is measured on these."""
    rng = np.random.default_rng(seed)
    out = []
    for c in range(count):
        times = tuple((every * (i + 1), 1.0 if i % 2 == 0 else 0.6) for i in range(switches))
        out.append(Clip(f"switch-{c:02d}", "switch", int(rng.integers(0, 2**31)),
                        duration=every * (switches + 1), noise=NOISE_LEVELS[c % len(NOISE_LEVELS)],
                        jpeg_quality=int(rng.integers(30, 71)), switches=((0.0, 0.6), *times)))
    return out
