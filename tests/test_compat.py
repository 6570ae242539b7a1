"""The aiortc/aioice internals camcast relies on are checked at startup: a library that changed
stops the server with one clear line, exit 2."""

from __future__ import annotations

import pytest
from aiortc import RTCRtpSender

from camcast import cli
from camcast.webrtc.compat import missing_internals


def test_the_installed_stack_has_everything() -> None:
    assert missing_internals() == []


def test_a_missing_internal_stops_startup_with_one_line(monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delattr(RTCRtpSender, "_retransmit")
    assert cli.main(["--check", "--source", "testpattern"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "RTCRtpSender._retransmit" in err and "aiortc 1." in err
