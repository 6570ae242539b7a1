"""An MJPEG client that stops taking data without a reset is dropped after the stall limit."""

from __future__ import annotations

import asyncio
import time

from camcast.frames import JpegPart
from camcast.mjpeg import MjpegClient


async def test_a_client_that_takes_nothing_is_dropped_after_the_stall_limit() -> None:
    accepted: asyncio.Queue[asyncio.StreamWriter] = asyncio.Queue()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accepted.put(writer)

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    # A real TCP peer that connects and never reads: its socket fills up, as a vanished host's would.
    _, silent_writer = await asyncio.open_connection("127.0.0.1", port)
    server_side = await accepted.get()
    client = MjpegClient(server_side.transport, 0.0, chunked=False, stall_limit=0.5)  # type: ignore[arg-type]
    payload = bytes(256 * 1024)
    part = JpegPart(payload, payload, payload, 1, 0)
    started = time.monotonic()
    skipped = 0
    while not server_side.transport.is_closing() and time.monotonic() - started < 20:
        if client.send(part, time.monotonic()) < 0:
            skipped += 1
        await asyncio.sleep(0.02)
    assert server_side.transport.is_closing(), "a client that took nothing for 0.5 s was kept"
    assert skipped > 0 and client.dropped == skipped
    silent_writer.close()
    server.close()
    await server.wait_closed()
