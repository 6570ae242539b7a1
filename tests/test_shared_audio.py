"""The shared Opus encode's lifetime: a listener who comes while it winds down still hears."""

from __future__ import annotations

import asyncio
import time

from camcast.audio import SharedAudio
from camcast.frames import now_us
from camcast.sources.audio_pcm import Deliver
from camcast.sources.audio_tone import ToneSource
from support.waiting import eventually


class SlowToStop:
    """The tone, with a stop that takes as long as an ALSA device's can (a read to finish)."""

    description = "tone, slow to stop"
    has_sound = True

    def __init__(self) -> None:
        self.tone = ToneSource()
        self.stopping = False

    def start(self, deliver: Deliver) -> None:
        self.stopping = False
        self.tone.start(deliver)

    def stop(self) -> None:
        self.stopping = True
        time.sleep(0.5)
        self.tone.stop()


async def test_a_listener_arriving_while_the_encoder_winds_down_gets_a_new_one() -> None:
    source = SlowToStop()
    audio = SharedAudio("default", "tone", now_us(), source=source)  # type: ignore[arg-type]
    audio.start()
    try:
        with audio.packets.subscribe(maxsize=10) as first:
            await asyncio.wait_for(first.get(), 5)
        # Nobody listens: after its linger the encoder stops, slowly.
        await eventually(lambda: source.stopping, 10, "the encoder winding down")
        with audio.packets.subscribe(maxsize=10) as second:
            packet = await asyncio.wait_for(second.get(), 5)
        assert packet.captured_us > now_us() - 1_000_000
        assert audio.starts == 2
    finally:
        await audio.close()
