"""An emulated network on this machine: two network namespaces joined by a veth pair.

The server's side holds 127.0.0.2 and the viewer's side 127.0.0.3 (loopback-range addresses with
`route_localnet`, so nothing ever touches the machine's own interfaces or addresses). The link is
shaped with `tc tbf` on a side's egress (the server's side carries the media) and thinned with
`iptables -m statistic` random loss; both can change while traffic flows.

    with netlab() as lab:                      # or: async with anetlab() as lab
        lab.server.shape(2_000_000)            # bits per second, server -> viewer
        lab.server.loss(0.05, media_only=True)
        proc = lab.viewer.popen([...])         # a process inside the viewer's namespace
        value = lab.server.call(fn, *args)     # fn in a thread inside the server's namespace:
                                               # the sockets and processes it creates live there

Leaving the context kills whatever still runs inside either namespace and deletes both (and with
them the veth, qdiscs and iptables rules), also on an exception or Ctrl-C. Namespaces left behind by
a run that was killed outright are removed the next time a bed with the same prefix starts.
Needs root (CI is root), `ip`/`tc` (Debian: iproute2) and `iptables` (Debian: iptables).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from support.server import START_TIMEOUT, ServerError, ServerProcess, camcast_command, clean_env

PREFIX = "cc"
SERVER_ADDRESS = "127.0.0.2"
VIEWER_ADDRESS = "127.0.0.3"
NETNS_DIR = Path("/var/run/netns")
CLONE_NEWNET = 0x40000000
KILL_GRACE = 3.0  # s a process left inside a namespace gets after SIGTERM, before SIGKILL
TOOLS = {"ip": "iproute2", "tc": "iproute2", "iptables": "iptables"}
URL_LINE = re.compile(r"^camcast: serving .* at (http://127\.\d+\.\d+\.\d+:(\d+)/)\s*$", re.MULTILINE)

P = ParamSpec("P")
T = TypeVar("T")

_counter = itertools.count()
_libc = ctypes.CDLL(None, use_errno=True)


class NetLabError(RuntimeError):
    """The bed could not be made, changed or removed; the message says which command failed."""


def check_requirements() -> None:
    """Fail with a clear message unless this process is root and has ip, tc and iptables."""
    if os.geteuid() != 0:
        raise NetLabError("the emulated-network test bed needs root (network namespaces, tc, iptables); "
                          "run these tests as root, as CI does")
    missing = sorted({package for tool, package in TOOLS.items() if shutil.which(tool) is None})
    if missing:
        raise NetLabError(f"the emulated-network test bed needs {', '.join(TOOLS)}: "
                          f"apt-get install {' '.join(missing)}")


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command; with `check`, a failure raises NetLabError with the command and its stderr."""
    done = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if check and done.returncode != 0:
        raise NetLabError(f"`{' '.join(args)}` failed ({done.returncode}): {done.stderr.strip()}")
    return done


def namespaces() -> set[str]:
    """The names of every named network namespace on the machine."""
    return {line.split()[0] for line in run("ip", "netns", "list").stdout.splitlines() if line.strip()}


def namespace_pids(name: str) -> list[int]:
    """Processes running inside `name` (never this one: only its helper threads ever enter)."""
    pids = (int(pid) for pid in run("ip", "netns", "pids", name, check=False).stdout.split())
    return [pid for pid in pids if pid != os.getpid()]


def _alive(pid: int) -> bool:
    """Whether `pid` still runs (a zombie, ended but not yet reaped by its parent, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _kill_all(pids: Sequence[int], grace: float = KILL_GRACE) -> None:
    """SIGTERM `pids`, then SIGKILL those still there after `grace` s."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in pids:
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def delete_namespace(name: str) -> None:
    """End everything still running inside `name`, then delete it."""
    _kill_all(namespace_pids(name))
    if name in namespaces():
        run("ip", "netns", "delete", name)


def remove_stale(prefix: str = PREFIX) -> list[str]:
    """Delete namespaces of this prefix whose creating process is gone (a run killed outright).

    Beds of live processes are left alone: several test runs may share the machine.
    """
    pattern = re.compile(rf"^{re.escape(prefix)}-(?:srv|view)-(\d+)-\d+$")
    removed = []
    for name in sorted(namespaces()):
        match = pattern.match(name)
        if match and not _alive(int(match.group(1))):
            delete_namespace(name)
            removed.append(name)
    return removed


def _enter(namespace: str) -> None:
    """Move the calling thread (only it: network namespaces are per thread) into `namespace`."""
    fd = os.open(NETNS_DIR / namespace, os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise NetLabError(f"setns into {namespace}: {os.strerror(errno)}")
    finally:
        os.close(fd)


@dataclass
class Side:
    """One end of the link: its namespace, its veth, its address and the address of the other end."""

    namespace: str
    interface: str
    address: str
    peer_address: str
    peer: Side | None = field(default=None, repr=False)  # the other end
    processes: list[subprocess.Popen[Any]] = field(default_factory=list, repr=False)
    _loss_rule: tuple[Side, list[str]] | None = field(default=None, init=False, repr=False)

    # -- running things inside ------------------------------------------------------------------
    def command(self, *args: str) -> list[str]:
        """`args` prefixed so that they run inside this namespace."""
        return ["ip", "netns", "exec", self.namespace, *args]

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(*self.command(*args), check=check)

    def popen(self, args: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start a process inside this namespace; the bed ends it on exit if it still runs."""
        proc = subprocess.Popen(self.command(*args), **kwargs)
        self.processes.append(proc)
        return proc

    def submit(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> concurrent.futures.Future[T]:
        """Run `fn` in a new thread that has entered this namespace; its result as a Future.

        Sockets that `fn` opens belong to this namespace for their whole life (they may be used
        from any thread afterwards), and processes it starts run inside it.
        """
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def body() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                _enter(self.namespace)
                future.set_result(fn(*args, **kwargs))
            except BaseException as exc:
                future.set_exception(exc)

        threading.Thread(target=body, name=f"netns-{self.namespace}", daemon=True).start()
        return future

    def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """`fn(*args, **kwargs)` run inside this namespace (in a thread of its own); its result."""
        return self.submit(fn, *args, **kwargs).result()

    async def acall(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """`call` for async code: the event loop keeps running while `fn` does."""
        return await asyncio.wrap_future(self.submit(fn, *args, **kwargs))

    # -- the link -------------------------------------------------------------------------------
    def shape(self, rate_bps: int, burst: str = "20kb", latency: str = "200ms") -> None:
        """Limit this side's egress to `rate_bps` bits/s with tbf (adds it, or changes it in place)."""
        self.run("tc", "qdisc", "replace", "dev", self.interface, "root", "tbf",
                 "rate", f"{int(rate_bps)}bit", "burst", burst, "latency", latency)

    def clear(self) -> None:
        """Remove the shaping of this side's egress (nothing to do when there is none)."""
        if self.qdisc().get("kind") == "tbf":
            self.run("tc", "qdisc", "del", "dev", self.interface, "root")

    def loss(self, probability: float, media_only: bool = False, on_arrival: bool = False) -> None:
        """Drop UDP sent from this side at random with `probability` (replacing an earlier rule).

        By default the rule sits in this namespace's OUTPUT chain, so a dropped datagram never
        enters the link and the sending socket gets EPERM (aiortc and aioice ignore it). With
        `on_arrival` it sits in the other namespace's INPUT chain instead: the datagram crosses the
        link (and its shaping) and vanishes unseen, like loss past a bottleneck.
        `media_only`: only datagrams of 500 to 1500 bytes (RTP media), sparing RTCP, STUN and
        small data-channel messages.
        """
        self.clear_loss()
        if probability <= 0:
            return
        match = ["-m", "length", "--length", "500:1500"] if media_only else []
        statistic = ["-m", "statistic", "--mode", "random", "--probability", f"{probability:.6f}"]
        if on_arrival:
            assert self.peer is not None
            rule = (self.peer, ["INPUT", "-i", self.peer.interface, "-p", "udp", *match, *statistic])
        else:
            rule = (self, ["OUTPUT", "-o", self.interface, "-p", "udp", *match, *statistic])
        rule[0].run("iptables", "-A", *rule[1], "-j", "DROP")
        self._loss_rule = rule

    def clear_loss(self) -> None:
        if self._loss_rule is not None:
            side, spec = self._loss_rule
            side.run("iptables", "-D", *spec, "-j", "DROP")
            self._loss_rule = None

    def dropped_by_loss(self) -> int:
        """Datagrams the loss rule has dropped so far (0 without a rule)."""
        if self._loss_rule is None:
            return 0
        side, spec = self._loss_rule
        out = side.run("iptables", "-L", spec[0], "-v", "-x", "-n").stdout
        return sum(int(line.split()[0]) for line in out.splitlines()[2:] if " DROP " in f" {line} ")

    def qdisc(self) -> dict[str, Any]:
        """The root qdisc of this side's veth with its counters (`tc -s -j`): kind, bytes,
        packets, drops, overlimits, backlog, qlen, and options such as the tbf rate."""
        out = self.run("tc", "-s", "-j", "qdisc", "show", "dev", self.interface, "root").stdout
        qdiscs = json.loads(out or "[]")
        return qdiscs[0] if qdiscs else {}

    def counters(self) -> dict[str, dict[str, int]]:
        """The veth's own counters: {"tx": {"bytes", "packets", "dropped", …}, "rx": {…}}."""
        out = run("ip", "-n", self.namespace, "-s", "-j", "link", "show", "dev", self.interface).stdout
        stats = json.loads(out)[0]["stats64"]
        return {"tx": stats["tx"], "rx": stats["rx"]}


class NetLab:
    """Two namespaces (server and viewer) joined by a veth pair; see the module's docstring."""

    def __init__(self, prefix: str = PREFIX) -> None:
        n = next(_counter)
        pid = os.getpid()
        self.prefix = prefix
        self.server = Side(f"{prefix}-srv-{pid}-{n}", "veth-srv", SERVER_ADDRESS, VIEWER_ADDRESS)
        self.viewer = Side(f"{prefix}-view-{pid}-{n}", "veth-view", VIEWER_ADDRESS, SERVER_ADDRESS)
        self.server.peer, self.viewer.peer = self.viewer, self.server
        self._lock = threading.Lock()  # close waits for a create still running in another thread
        self._made: list[str] = []

    @property
    def sides(self) -> tuple[Side, Side]:
        return self.server, self.viewer

    def create(self) -> None:
        with self._lock:
            check_requirements()
            remove_stale(self.prefix)
            for side in self.sides:
                self._made.append(side.namespace)  # before `add`: close deletes whatever exists
                run("ip", "netns", "add", side.namespace)
            server, viewer = self.sides
            run("ip", "link", "add", server.interface, "netns", server.namespace, "type", "veth",
                "peer", "name", viewer.interface, "netns", viewer.namespace)
            for side in self.sides:
                ns = side.namespace
                # IPv6 off: no link-local addresses to gather as ICE candidates, no stray traffic.
                side.run("sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1",
                         "net.ipv6.conf.default.disable_ipv6=1",
                         "net.ipv4.conf.all.route_localnet=1", "net.ipv4.conf.default.route_localnet=1",
                         f"net.ipv4.conf.{side.interface}.route_localnet=1")
                run("ip", "-n", ns, "link", "set", "lo", "up")
                run("ip", "-n", ns, "addr", "add", f"{side.address}/32", "dev", side.interface)
                run("ip", "-n", ns, "link", "set", side.interface, "up")
                run("ip", "-n", ns, "route", "add", f"{side.peer_address}/32", "dev", side.interface,
                    "src", side.address)

    def close(self) -> None:
        """End every process inside the namespaces and delete them; raise if one is left."""
        with self._lock:
            for side in self.sides:
                for proc in side.processes:
                    if proc.poll() is None:
                        proc.terminate()
            problems = []
            for name in self._made:
                try:
                    delete_namespace(name)
                except NetLabError as exc:
                    problems.append(str(exc))
            for side in self.sides:
                for proc in side.processes:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(KILL_GRACE)
                    if proc.poll() is None:
                        proc.kill()
                        proc.wait()
            left = namespaces() & set(self._made)
            if left:
                problems.append(f"namespaces left behind: {', '.join(sorted(left))}")
            if problems:
                raise NetLabError("; ".join(problems))


@contextlib.contextmanager
def _sigint_deferred() -> Iterator[None]:
    """Hold Ctrl-C back while the bed is removed (a half-removed bed is the one thing to avoid);
    it is raised once the removal is done."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


@contextlib.contextmanager
def netlab(prefix: str = PREFIX) -> Iterator[NetLab]:
    """A fresh bed, removed on exit whatever happens."""
    lab = NetLab(prefix)
    try:
        lab.create()
        yield lab
    finally:
        with _sigint_deferred():
            lab.close()


@contextlib.asynccontextmanager
async def anetlab(prefix: str = PREFIX) -> AsyncIterator[NetLab]:
    """`netlab` for async code; setting up does not block the event loop."""
    lab = NetLab(prefix)
    try:
        await asyncio.to_thread(lab.create)
        yield lab
    finally:
        # Blocking on purpose: a cancelled task must still remove the bed completely.
        with _sigint_deferred():
            lab.close()


# -- the camcast server in the server's namespace ----------------------------------------------
def launch_server(
    lab: NetLab,
    workdir: Path,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    source: str = "testpattern",
    healthy: bool = True,
    command: Callable[..., list[str]] = camcast_command,
) -> ServerProcess:
    """`python -m camcast` inside the server's namespace on 127.0.0.2 (HTTP and ICE), like
    `support.server.launch` otherwise. Reach it from inside a namespace only, e.g.
    `lab.server.call(server.status)`; `terminate()` works from anywhere. `command` builds the
    command line from camcast's arguments (to run it under a wrapper)."""
    workdir.mkdir(parents=True, exist_ok=True)
    recordings = workdir / "recordings"
    argv = command("--source", source, "--host", lab.server.address, "--port", "0",
                   "--ice-address", lab.server.address, "--recordings", str(recordings), *args)
    stdout_path, stderr_path = workdir / "server.stdout", workdir / "server.stderr"
    with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
        proc = lab.server.popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=workdir,
                                env=clean_env(env))
    server = ServerProcess(proc, argv, workdir, stdout_path, stderr_path, recordings)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not (match := URL_LINE.search(server.stdout())):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise ServerError(f"the server in {lab.server.namespace} did not start serving\n"
                                  f"{server.describe()}")
            time.sleep(0.02)
        server.url, server.port = match.group(1), int(match.group(2))
        lab.server.call(server.wait_health, 200 if healthy else None)
    except BaseException:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        raise
    return server


@contextlib.contextmanager
def ice_host_address(address: str) -> Iterator[None]:
    """Make aiortc peers in this process gather one host candidate, `address` (e.g. 127.0.0.3)."""
    import aioice.ice

    original = aioice.ice.get_host_addresses
    aioice.ice.get_host_addresses = lambda use_ipv4=True, use_ipv6=True: [address] if use_ipv4 else []
    try:
        yield
    finally:
        aioice.ice.get_host_addresses = original
