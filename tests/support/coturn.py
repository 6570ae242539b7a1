"""Debian's coturn as a test's TURN server, with TURN REST API credentials (`use-auth-secret`).

    turn = start_coturn(workdir, "127.0.0.1", SECRET)                     # here, on a free port
    turn = start_coturn(workdir, "127.0.0.4", SECRET, side=lab.server)    # inside a namespace
    ...
    turn.stop()

It listens and relays on one loopback-range address (UDP and TCP), lets peers on loopback
addresses be relayed to (`allow-loopback-peers`: every test address is one), and writes its log
into `workdir`. `start_coturn` returns once it answers a STUN binding request. Needs
/usr/bin/turnserver (Debian: coturn).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from aioice import stun

if TYPE_CHECKING:
    from support.netlab import Side

TURNSERVER = "turnserver"
MISSING = "the TURN tests need Debian's coturn: apt-get install coturn"
REALM = "camcast.test"
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0


@dataclass
class Coturn:
    proc: subprocess.Popen[bytes]
    address: str
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        """The --ice-server URL without credentials (they are minted from the secret)."""
        return f"turn:{self.address}:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def stun_answers(address: str, port: int, timeout: float = 0.2) -> bool:
    """Whether a STUN binding request to (address, port) over UDP gets its response."""
    request = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.sendto(bytes(request), (address, port))
            data = sock.recv(2048)
        except OSError:  # a timeout, or nothing listening yet
            return False
    with contextlib.suppress(ValueError):
        return stun.parse_message(data).transaction_id == request.transaction_id
    return False


def free_port(address: str) -> int:
    """A port free for both UDP and TCP on `address` (coturn listens on both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, \
                socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            udp.bind((address, 0))
            port = udp.getsockname()[1]
            try:
                tcp.bind((address, port))
            except OSError:
                continue
            return int(port)
    raise RuntimeError(f"no port free for both UDP and TCP on {address}")


def start_coturn(workdir: Path, address: str, secret: str, port: int | None = None,
                 side: Side | None = None) -> Coturn:
    """turnserver on `address` (`port`: a free one when None) with `secret` as its
    static-auth-secret; inside `side`'s namespace when given (the bed then also ends it)."""
    if shutil.which(TURNSERVER) is None:
        raise AssertionError(MISSING)
    workdir.mkdir(parents=True, exist_ok=True)
    if port is None:
        port = side.call(free_port, address) if side is not None else free_port(address)
    args = [
        TURNSERVER, "-n", "--listening-ip", address, "--relay-ip", address, "--listening-port", str(port),
        "--use-auth-secret", "--static-auth-secret", secret, "--realm", REALM, "--fingerprint",
        "--allow-loopback-peers", "--no-cli", "--no-tls", "--no-dtls",
        "--userdb", str(workdir / "turndb"), "--pidfile", str(workdir / "turnserver.pid"),
        "--log-file", "stdout", "--simple-log",
    ]
    log_path = workdir / "turnserver.log"
    with open(log_path, "wb") as log:
        kwargs = {"stdin": subprocess.DEVNULL, "stdout": log, "stderr": subprocess.STDOUT, "cwd": workdir}
        proc = side.popen(args, **kwargs) if side is not None else subprocess.Popen(args, **kwargs)
    turn = Coturn(proc, address, port, log_path)
    deadline = time.monotonic() + START_TIMEOUT
    try:
        while not (side.call(stun_answers, address, port) if side else stun_answers(address, port)):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"coturn did not answer on {address}:{port} "
                                     f"(exit status {proc.poll()})\n{turn.log()}")
            time.sleep(0.05)
    except BaseException:
        turn.stop()
        raise
    return turn
