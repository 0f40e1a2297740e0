"""Real js-ipfs daemons for tests, started only where they cannot reach any network but loopback.

`IPFSDaemon` makes a repository in a temporary directory, writes a config that listens on
127.0.0.1 only and knows no bootstrap peers, delegates, MDNS or WebRTC-star, starts
`jsipfs daemon` as its own child process (which Linux SIGTERMs should the test process die) and
stops it by that process's id; `.node` is a `basinvcs.ipfs.Node` for its API.
`require_sandbox()` skips the calling test unless it runs inside a private network namespace (the
only interface is `lo`, and it is up) and js-ipfs is installed; `scripts/test` runs pytest under
`unshare -n`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from basinvcs.ipfs import Node

ROOT = Path(__file__).resolve().parent.parent
JSIPFS = ROOT / "node_modules" / ".bin" / "jsipfs"
READY = "Daemon is ready"
_IFF_UP = 0x1
_SIOCGIFFLAGS = 0x8913


def _loopback_up() -> bool:
    """Whether `lo` is up in this process's network namespace (SIOCGIFFLAGS)."""
    import fcntl
    import struct

    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            req = struct.pack("16sh22x", b"lo", 0)
            flags = struct.unpack("16sh22x", fcntl.ioctl(s.fileno(), _SIOCGIFFLAGS, req))[1]
    except OSError:
        return False
    return bool(flags & _IFF_UP)


def sandbox_problem() -> str | None:
    """Why IPFS daemons must not be started here, or None when it is safe (and possible).

    The interfaces are read from the kernel (if_nameindex), not /sys/class/net: sysfs shows the
    namespace that mounted it, so under a bare `unshare -n` it still lists the host's devices.
    """
    try:
        interfaces = sorted(name for _, name in socket.if_nameindex())
    except OSError:
        interfaces = []
    if interfaces != ["lo"]:
        return (
            "IPFS tests need a private network namespace (scripts/test runs them under unshare -n)"
        )
    if not _loopback_up():
        return "IPFS tests need the loopback interface up in their namespace (ip link set lo up)"
    if not os.access(JSIPFS, os.X_OK):
        return "js-ipfs not installed: npm install --no-audit --no-fund"
    return None


def require_sandbox() -> None:
    """Skip the calling test (or fixture) unless daemons can be started safely; with
    BASIN_REQUIRE_IPFS=1 (as .ci/run sets), fail instead, so CI cannot pass without them."""
    problem = sandbox_problem()
    if problem and os.environ.get("BASIN_REQUIRE_IPFS") == "1":
        pytest.fail(f"BASIN_REQUIRE_IPFS=1 but {problem}")
    if problem:
        pytest.skip(problem)


def _free_ports(n: int) -> list[int]:
    """n distinct loopback TCP ports that were free a moment ago."""
    with contextlib.ExitStack() as stack:
        socks = []
        for _ in range(n):
            s = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]


def _die_with_parent() -> None:  # pragma: no cover (runs in the child before exec)
    """Ask Linux to SIGTERM the daemon if the test process dies without stopping it."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class IPFSDaemon:
    """One js-ipfs daemon with its repository under `root`; `start()` it, `stop()` it."""

    def __init__(self, root: Path, name: str = "node") -> None:
        self.root = Path(root)
        self.name = name
        self.repo = self.root / "repo"
        self.log_path = self.root / "daemon.log"
        self.api_port, self.swarm_port = _free_ports(2)
        self.api = f"/ip4/127.0.0.1/tcp/{self.api_port}"
        self.peer_id = ""
        self.proc: subprocess.Popen | None = None
        self.node: Node | None = None  # a client for the API, once started

    @property
    def swarm(self) -> str:
        """The daemon's libp2p address, with its peer id, for swarm/connect."""
        return f"/ip4/127.0.0.1/tcp/{self.swarm_port}/p2p/{self.peer_id}"

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(IPFS_PATH=str(self.repo), NODE_ENV="test")
        return env

    def _configure(self) -> None:
        path = self.repo / "config"
        config = json.loads(path.read_text())
        addresses = config.setdefault("Addresses", {})
        addresses["Swarm"] = [f"/ip4/127.0.0.1/tcp/{self.swarm_port}"]
        addresses["API"] = self.api
        addresses["Gateway"] = ""
        addresses["RPC"] = ""
        addresses["Delegates"] = []
        config["Bootstrap"] = []
        discovery = config.setdefault("Discovery", {})
        discovery.setdefault("MDNS", {})["Enabled"] = False
        discovery.setdefault("webRTCStar", {})["Enabled"] = False
        path.write_text(json.dumps(config, indent=2))
        self.peer_id = config["Identity"]["PeerID"]

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def start(self, timeout: float = 60.0) -> IPFSDaemon:
        require_sandbox()
        self.root.mkdir(parents=True, exist_ok=True)
        env = self._env()
        init = subprocess.run(
            [str(JSIPFS), "init", "--empty-repo"],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if init.returncode != 0:
            raise RuntimeError(f"jsipfs init failed ({init.returncode}):\n{init.stderr}")
        self._configure()
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [str(JSIPFS), "daemon", "--enable-preload=false"],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        deadline = time.monotonic() + timeout
        while READY not in self.log():
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"js-ipfs daemon {self.name} exited ({self.proc.returncode}) before it was "
                    f"ready; its log:\n{self.log()}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"js-ipfs daemon {self.name} not ready after {timeout:.0f} s; "
                    f"its log:\n{self.log()}"
                )
            time.sleep(0.1)
        self.node = Node(self.api, timeout=30.0)
        return self

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the daemon by its own pid, wait, then SIGKILL it if it is still there."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def __enter__(self) -> IPFSDaemon:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"IPFSDaemon({self.name}, api={self.api})"
