"""A real IPFS node (Kubo, or js-ipfs in the tests) through its HTTP RPC API.

`Node` wraps `ipfshttpclient.Client` and sends every call through the client's request layer
(`Client._client.request`), because the client's own methods send outdated forms for today's
daemons: booleans as ``True``, no codec on ``block/put``, pubsub topics and payloads as plain
query arguments, a ``size`` on ed25519 key generation. ipfshttpclient is imported only when a
`Node` is made, so commands that never talk to a node do not pay for it.

Nothing a node sends is trusted: blocks are re-hashed against the CID asked for, CARs are read
with `basinvcs.codec.car` (every block verified), and the CID a node reports for a put must be
the one computed here. Every failure is one line: `RemoteError` naming the node's address, or the
project's `BlockNotFound` / `HashMismatch` where those say it better.

Kubo and js-ipfs differ in a few places, so some calls send options for both:
``block/put`` sends the legacy ``format`` (js-ipfs ignores ``cid-codec``; Kubo still accepts
``format`` and refuses it next to a different ``cid-codec``), and calls that may wait on the
network send the global ``timeout`` option, which both honour where js-ipfs ignores
``offline=true``.
"""

from __future__ import annotations

import base64
import ipaddress
import queue
import re
import threading
import time
import warnings
from collections.abc import Iterator
from typing import Any

from basinvcs.cid import CID, DAG_CBOR, RAW
from basinvcs.errors import BlockNotFound, CarError, CodecError, HashMismatch, RemoteError

_ADDR = re.compile(r"/(ip4|ip6|dns|dns4|dns6)/([^/]+)/tcp/(\d{1,5})(/https?)?")
_FORMATS = {DAG_CBOR: "dag-cbor", RAW: "raw"}
_PROVIDER = 4  # the routing event type that carries providers (Kubo's and js-ipfs' numbering)
_SLACK = 5.0  # seconds the client waits past a node-side timeout, so the node's answer wins
_HAS_TIMEOUT = 1.0  # block_has: how long js-ipfs may look (it ignores offline=true)
_ABSENT = ("not found", "timed out", "timeout", "deadline exceeded", "could not find")


class _NodeSaid(RemoteError):
    """The node answered with an error message (kept in `message`)."""

    def __init__(self, line: str, message: str) -> None:
        super().__init__(line)
        self.message = message


class _NoAnswer(RemoteError):
    """The node did not answer in time."""


class _NoEndpoint(RemoteError):
    """The node has no such RPC command (HTTP 404)."""


def _quiet_client_warning() -> None:
    """ipfshttpclient 0.8.0a2 passes urllib3 2 a `strict` argument, which it warns about on
    every request; the warning is for the client's authors, not for our users. Set before each
    request, as test runners reset the filters around every test."""
    warnings.filterwarnings(
        "ignore", message="The 'strict' parameter is no longer needed", category=FutureWarning
    )


def check_address(addr: str) -> str:
    """`addr` if it is a multiaddr for an RPC API we can call, else RemoteError."""
    match = _ADDR.fullmatch(addr) if isinstance(addr, str) else None
    ok = match is not None and 0 < int(match[3]) < 65536
    if ok and match[1] in ("ip4", "ip6"):
        try:
            version = ipaddress.ip_address(match[2]).version
        except ValueError:
            version = 0
        ok = version == int(match[1][-1])
    if not ok:
        raise RemoteError(
            f"not an IPFS API address: {addr!r} (expected a multiaddr such as "
            "/ip4/127.0.0.1/tcp/5001 or /dns4/HOST/tcp/PORT/http)"
        )
    return addr


def encode_topic(topic: str) -> str:
    """A pubsub topic as the RPC API takes it: multibase base64url ('u'), unpadded."""
    return "u" + base64.urlsafe_b64encode(topic.encode()).decode("ascii").rstrip("=")


def decode_multibase(text: str) -> bytes:
    """Bytes from a multibase string (pubsub message data); ValueError if it is not one."""
    if text[:1] == "u":
        body = text[1:]
        if "=" in body:
            raise ValueError("padded base64url")
        return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    from multiformats import multibase

    try:
        return bytes(multibase.decode(text))
    except (KeyError, ValueError) as exc:
        raise ValueError(str(exc)) from None


def verify_received(cid: CID, data: bytes, source: str) -> bytes:
    """`data` if it hashes to `cid`; HashMismatch naming where it came from otherwise."""
    try:
        cid.verify(data)
    except HashMismatch:
        raise HashMismatch(
            f"block {cid} from the IPFS node at {source} does not match its hash"
        ) from None
    return data


def _duration(seconds: float) -> str:
    """A duration both Go (Kubo) and parse-duration (js-ipfs) read: whole milliseconds."""
    return f"{max(1, round(seconds * 1000))}ms"


def _means_absent(error: RemoteError) -> bool:
    """Whether an error is the node saying a block is missing, or giving up looking for it."""
    if isinstance(error, _NoAnswer):
        return True
    return isinstance(error, _NodeSaid) and any(s in error.message.lower() for s in _ABSENT)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """exc and everything it wraps: causes, contexts, exception arguments, urllib3 reasons."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        e = todo.pop(0)
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        inner = [e.__cause__, e.__context__, getattr(e, "original", None)]
        inner += [getattr(e, "reason", None), *getattr(e, "args", ())]
        todo += [x for x in inner if isinstance(x, BaseException)]


def _timeout_kind(exc: BaseException) -> str | None:
    """'connect' or 'read' if exc is a timeout in that phase, None if it is no timeout."""
    names = {type(e).__name__ for e in _causes(exc)}
    if names & {"ConnectTimeout", "ConnectTimeoutError"}:
        return "connect"
    if names & {"TimeoutError", "ReadTimeout", "ReadTimeoutError", "timeout"}:
        return "read"
    return None


def _reason(exc: BaseException) -> str:
    """The root cause of a transport failure in a few words, e.g. 'connection refused'."""
    for e in _causes(exc):
        if type(e).__module__ == "builtins" and isinstance(e, OSError) and e.strerror:
            return e.strerror[:1].lower() + e.strerror[1:]
    for e in _causes(exc):
        found = re.search(r"\[Errno -?\d+\] ([^'\"()\]]+)", str(e))
        if found:
            text = found[1].strip()
            return text[:1].lower() + text[1:]
    innermost = list(_causes(exc))[-1]
    return _one_line(str(innermost)) or type(innermost).__name__


class Node:
    """One IPFS node's RPC API at `addr`, a multiaddr such as /ip4/127.0.0.1/tcp/5001.

    `timeout` bounds each call (seconds); calls that look for data on the network take their own.
    `blocks_sent` and `bytes_sent` count what block_put and dag_import sent: a block each and its
    length for block_put, the CAR's blocks and their lengths (CIDs and framing not counted) for
    dag_import, which reads the CAR to count it.
    """

    def __init__(self, addr: str, timeout: float = 60.0) -> None:
        self.addr = check_address(addr)
        self.timeout = float(timeout)
        self.blocks_sent = 0
        self.bytes_sent = 0
        self._routing_base = "/routing/"  # "/dht/" once the node turns out to have no routing/
        _quiet_client_warning()
        import ipfshttpclient

        try:
            self._client = ipfshttpclient.Client(addr, timeout=self.timeout)
        except ipfshttpclient.exceptions.Error as exc:
            raise RemoteError(f"not an IPFS API address: {addr!r} ({exc})") from None

    def __repr__(self) -> str:
        return f"Node({self.addr!r})"

    # -- the request layer ----------------------------------------------------------------------

    def _request(
        self,
        path: str,
        args: tuple[str, ...] = (),
        opts: dict[str, str] | None = None,
        *,
        data: bytes | None = None,
        json: bool = True,
        stream: bool = False,
        wait: float | None = None,
        node_timeout: bool = False,
    ) -> Any:
        """POST one RPC call; its answer (a list of JSON objects, bytes, or a stream of them).

        `wait` is how long to wait for the node (the Node's timeout when None); with node_timeout
        the node is told too (the `timeout` option), and the client waits a little longer, so the
        node's own error reaches the caller rather than a client-side timeout.
        """
        _quiet_client_warning()
        wait = self.timeout if wait is None else wait
        opts = dict(opts or {})
        if node_timeout:
            opts["timeout"] = _duration(wait)
            wait += _SLACK
        kwargs: dict[str, Any] = {}
        if data is not None:
            from ipfshttpclient import multipart

            kwargs["data"], kwargs["headers"] = multipart.stream_bytes(data)
        try:
            return self._client._client.request(
                path,
                list(args),
                opts=opts,
                decoder="json" if json else "none",
                stream=stream,
                timeout=wait,
                **kwargs,
            )
        except Exception as exc:
            raise self._failure(exc, path, wait) from None

    def _failure(self, exc: Exception, path: str, wait: float) -> Exception:
        """One clear line for anything ipfshttpclient, requests or urllib3 raised."""
        import ipfshttpclient.exceptions as ipfs_exc
        import requests
        import urllib3.exceptions

        response = getattr(getattr(exc, "original", None), "response", None)
        status = getattr(response, "status_code", None)
        if isinstance(exc, ipfs_exc.StatusError) and status == 404:
            return _NoEndpoint(f"IPFS node at {self.addr}: no {path} command (HTTP 404)")
        if isinstance(exc, ipfs_exc.ErrorResponse):
            message = _one_line(exc.args[0] if exc.args else "") or "unknown error"
            return _NodeSaid(f"IPFS node at {self.addr}: {message}", message)
        if isinstance(exc, ipfs_exc.StatusError):
            text = getattr(response, "reason", "") or "error"
            return RemoteError(
                f"IPFS node at {self.addr}: HTTP {status} {text} for {path} (is it an IPFS API?)"
            )
        if isinstance(exc, ipfs_exc.DecodingError):
            return RemoteError(f"IPFS node at {self.addr}: unreadable answer to {path}")
        transport = (
            ipfs_exc.Error,
            requests.RequestException,
            urllib3.exceptions.HTTPError,
            OSError,
        )
        if not isinstance(exc, transport):
            raise exc
        kind = _timeout_kind(exc)
        if kind == "connect":
            return RemoteError(f"cannot reach the IPFS node at {self.addr}: connection timed out")
        if kind == "read":
            return _NoAnswer(
                f"the IPFS node at {self.addr} did not answer {path} within {wait:g} s"
            )
        if isinstance(exc, ipfs_exc.ProtocolError):
            return RemoteError(f"lost the IPFS node at {self.addr} during {path}: {_reason(exc)}")
        return RemoteError(f"cannot reach the IPFS node at {self.addr}: {_reason(exc)}")

    def _stream(self, items: Any, path: str, wait: float) -> Iterator[Any]:
        """Iterate a streamed answer, turning failures mid-stream into RemoteError too."""
        try:
            yield from items
        except Exception as exc:
            raise self._failure(exc, path, wait) from None
        finally:
            items.close()

    def _one(self, answer: list[Any], path: str) -> dict[str, Any]:
        if not answer or not isinstance(answer[0], dict):
            raise RemoteError(f"IPFS node at {self.addr}: empty answer to {path}")
        return answer[0]

    def _cid(self, text: Any, path: str) -> CID:
        from basinvcs.errors import CIDError

        try:
            return CID.parse(text)
        except (CIDError, TypeError):
            raise RemoteError(
                f"IPFS node at {self.addr}: {path} gave {text!r}, not a CID"
            ) from None

    # -- the node -------------------------------------------------------------------------------

    def id(self) -> dict[str, Any]:
        """The node's identity (ID, Addresses, AgentVersion, ...); also the reachability check."""
        return dict(self._one(self._request("/id"), "/id"))

    # -- blocks ---------------------------------------------------------------------------------

    def block_put(self, data: bytes, codec: int = DAG_CBOR) -> CID:
        """Store `data` as a CIDv1 sha2-256 block; the node must report the CID computed here."""
        if codec not in _FORMATS:
            raise CodecError(f"block_put takes dag-cbor or raw blocks, not codec 0x{codec:x}")
        data = bytes(data)
        expected = CID.for_block(data, codec)
        opts = {"format": _FORMATS[codec], "mhtype": "sha2-256", "cid-version": "1"}
        answer = self._one(self._request("/block/put", (), opts, data=data), "/block/put")
        self.blocks_sent += 1
        self.bytes_sent += len(data)
        got = self._cid(answer.get("Key"), "/block/put")
        if got != expected:
            raise RemoteError(
                f"IPFS node at {self.addr} stored the block as {got}, expected {expected}"
            )
        return expected

    def block_get(self, cid: CID, timeout: float | None = None) -> bytes:
        """The block's bytes, from the node or through it from its peers, verified against cid.

        BlockNotFound when the node gives up (after `timeout` seconds, the Node's when None).
        """
        try:
            data = self._request(
                "/block/get", (str(cid),), json=False, wait=timeout, node_timeout=True
            )
        except RemoteError as exc:
            if _means_absent(exc):
                raise BlockNotFound(
                    f"block {cid} not found by the IPFS node at {self.addr}"
                ) from None
            raise
        return verify_received(cid, data, self.addr)

    def block_has(self, cid: CID) -> bool:
        """Whether the node holds `cid`: offline=true for Kubo; js-ipfs ignores that and asks
        its peers, so it gets one second (a connected peer's copy may be fetched and count)."""
        opts = {"offline": "true"}
        try:
            self._request("/block/stat", (str(cid),), opts, wait=_HAS_TIMEOUT, node_timeout=True)
        except RemoteError as exc:
            if _means_absent(exc):
                return False
            raise
        return True

    # -- pins -----------------------------------------------------------------------------------

    def pin_add(self, cid: CID, recursive: bool = True) -> None:
        """Pin `cid` (and, recursively, everything it links to, fetching what is missing)."""
        opts = {"recursive": "true" if recursive else "false"}
        self._request("/pin/add", (str(cid),), opts, node_timeout=True)

    def pinned_roots(self) -> set[CID]:
        """Every recursively pinned CID."""
        roots: set[CID] = set()
        for item in self._request("/pin/ls", (), {"type": "recursive"}):
            if isinstance(item, dict) and isinstance(item.get("Keys"), dict):
                roots.update(self._cid(key, "/pin/ls") for key in item["Keys"])
            elif isinstance(item, dict) and "Cid" in item:  # the streamed form
                roots.add(self._cid(item["Cid"], "/pin/ls"))
        return roots

    # -- DAGs as CARs ---------------------------------------------------------------------------

    def dag_import(self, car: bytes, pin_roots: bool = True) -> list[CID]:
        """Import a CARv1 (read and verified here first; CarError if it is bad); its roots.

        Counts the CAR's blocks and their bytes into blocks_sent / bytes_sent.
        """
        from basinvcs.codec.car import read_car_bytes

        car = bytes(car)
        roots, blocks = read_car_bytes(car)
        opts = {"pin-roots": "true" if pin_roots else "false"}
        answer = self._request("/dag/import", (), opts, data=car)
        self.blocks_sent += len(blocks)
        self.bytes_sent += sum(len(data) for _, data in blocks)
        for item in answer:
            root = item.get("Root") if isinstance(item, dict) else None
            if isinstance(root, dict) and root.get("PinErrorMsg"):
                message = _one_line(root["PinErrorMsg"])
                raise RemoteError(
                    f"IPFS node at {self.addr}: cannot pin an imported root: {message}"
                )
        return roots

    def dag_export(self, cid: CID) -> bytes:
        """The DAG under `cid` as a CARv1 from the node, checked: rooted at cid, blocks verified."""
        from basinvcs.codec.car import read_car_bytes

        car = self._request("/dag/export", (str(cid),), json=False, node_timeout=True)
        try:
            roots, _ = read_car_bytes(car)
        except CarError as exc:
            raise RemoteError(f"IPFS node at {self.addr}: bad CAR for {cid}: {exc}") from None
        if roots != [cid]:
            shown = ", ".join(map(str, roots)) or "none"
            raise RemoteError(f"IPFS node at {self.addr}: CAR for {cid} has roots {shown}")
        return car

    # -- IPNS -----------------------------------------------------------------------------------

    def key_ensure(self, name: str) -> str:
        """The IPNS name (key Id, as the node prints it) of ed25519 key `name`; made if absent."""
        for _ in range(2):
            found = self._key_id(name)
            if found:
                return found
            try:
                answer = self._request("/key/gen", (name,), {"type": "ed25519"})
            except _NodeSaid as exc:
                if "exist" in exc.message.lower():
                    continue  # made by someone else since we looked
                raise
            made = self._one(answer, "/key/gen").get("Id")
            if made:
                return str(made)
        raise RemoteError(f"IPFS node at {self.addr}: cannot find or make the key {name!r}")

    def _key_id(self, name: str) -> str | None:
        answer = self._one(self._request("/key/list"), "/key/list")
        for key in answer.get("Keys") or []:
            if isinstance(key, dict) and key.get("Name") == name and key.get("Id"):
                return str(key["Id"])
        return None

    def name_publish(self, cid: CID, key: str, lifetime: str = "8760h") -> str:
        """Point the IPNS name of keystore key `key` at /ipfs/cid; the name."""
        opts = {"key": key, "lifetime": lifetime, "allow-offline": "true", "resolve": "false"}
        answer = self._one(self._request("/name/publish", (f"/ipfs/{cid}",), opts), "/name/publish")
        name = answer.get("Name")
        if not name:
            raise RemoteError(f"IPFS node at {self.addr}: /name/publish named nothing")
        return str(name)

    def name_resolve(self, name: str, timeout: float | None = None) -> CID:
        """The CID an IPNS name (k51..., 12D3..., or /ipns/...) points at, asked afresh."""
        path = name if name.startswith("/ipns/") else f"/ipns/{name}"
        if not name or "/" in path.removeprefix("/ipns/"):
            raise RemoteError(f"not an IPNS name: {name!r}")
        opts = {"recursive": "true", "nocache": "true"}
        answer = self._request("/name/resolve", (path,), opts, wait=timeout, node_timeout=True)
        value = self._one(answer, "/name/resolve").get("Path")
        target = value.removeprefix("/ipfs/") if isinstance(value, str) else ""
        if not isinstance(value, str) or not value.startswith("/ipfs/") or "/" in target:
            raise RemoteError(f"IPFS node at {self.addr}: {path} points at {value!r}, not a CID")
        return self._cid(target, "/name/resolve")

    # -- pubsub ---------------------------------------------------------------------------------

    def pubsub_publish(self, topic: str, data: bytes) -> None:
        self._request("/pubsub/pub", (encode_topic(topic),), data=bytes(data))

    def pubsub_subscribe(self, topic: str, seconds: float) -> Iterator[tuple[bytes, str]]:
        """(data, sender peer id) for each message on `topic` until `seconds` have passed.

        The subscription opens on the first next(). Neither node ends a subscription by itself
        (js-ipfs ignores the timeout option here), so a reader thread opens and holds the stream
        and this generator stops on time; the thread ends at the next message or when its read
        times out, and closes the stream.
        """
        deadline = time.monotonic() + seconds
        path = "/pubsub/sub"
        wait = seconds + _SLACK
        inbox: queue.Queue[tuple[str, Any]] = queue.Queue()
        stop = threading.Event()

        def read() -> None:
            try:
                items = self._request(path, (encode_topic(topic),), stream=True, wait=wait)
                for item in self._stream(items, path, wait):
                    if stop.is_set():
                        break
                    inbox.put(("item", item))
            except RemoteError as exc:
                inbox.put(("error", exc))
            finally:
                inbox.put(("end", None))

        threading.Thread(target=read, name=f"pubsub {topic}", daemon=True).start()
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                try:
                    kind, value = inbox.get(timeout=left)
                except queue.Empty:
                    return
                if kind == "end" or (kind == "error" and isinstance(value, _NoAnswer)):
                    return
                if kind == "error":
                    raise value
                message = self._message(value)
                if message is not None:
                    yield message
        finally:
            stop.set()

    @staticmethod
    def _message(item: Any) -> tuple[bytes, str] | None:
        """(data, from) of one pubsub message; None for js-ipfs' opening {} or anything garbled."""
        if not isinstance(item, dict) or not isinstance(item.get("data"), str):
            return None
        try:
            data = decode_multibase(item["data"])
        except ValueError:
            return None
        return data, str(item.get("from", ""))

    # -- DHT ------------------------------------------------------------------------------------

    def _routing(self, command: str, cid: CID, opts: dict[str, str], wait: float) -> Iterator[Any]:
        """Stream routing/<command> (Kubo 0.14 on; 0.28 dropped dht/<command>), or dht/<command>
        where the node has no routing/ commands (js-ipfs, older Kubo)."""
        for base in (self._routing_base, "/dht/"):
            path = base + command
            try:
                items = self._request(
                    path, (str(cid),), opts, stream=True, wait=wait, node_timeout=True
                )
            except _NoEndpoint:
                if base == "/dht/":
                    raise
                continue
            self._routing_base = base
            return self._stream(items, path, wait + _SLACK)
        raise AssertionError("unreachable")

    def dht_provide(self, cid: CID) -> None:
        """Announce on the DHT that this node provides `cid` (which it must hold)."""
        for _ in self._routing("provide", cid, {}, self.timeout):
            pass

    def dht_findprovs(self, cid: CID, seconds: float = 10) -> list[str]:
        """Peer ids of providers of `cid` found within `seconds`, in the order found."""
        deadline = time.monotonic() + seconds
        found: list[str] = []
        try:
            for event in self._routing("findprovs", cid, {"num-providers": "20"}, seconds):
                if isinstance(event, dict) and event.get("Type") == _PROVIDER:
                    for peer in event.get("Responses") or []:
                        pid = peer.get("ID") if isinstance(peer, dict) else None
                        if pid and pid not in found:
                            found.append(str(pid))
                if time.monotonic() > deadline:
                    break
        except RemoteError as exc:
            if not _means_absent(exc):
                raise
        return found

    # -- swarm ----------------------------------------------------------------------------------

    def swarm_connect(self, multiaddr: str) -> None:
        """Connect to a peer at `multiaddr` (ending /p2p/<peer id>)."""
        self._request("/swarm/connect", (multiaddr,), node_timeout=True)

    def swarm_peers(self) -> list[str]:
        """Peer ids of the peers connected now."""
        answer = self._one(self._request("/swarm/peers"), "/swarm/peers")
        peers = answer.get("Peers") or []
        return [str(p["Peer"]) for p in peers if isinstance(p, dict) and p.get("Peer")]

    def swarm_addrs_local(self) -> list[str]:
        """The node's own listening addresses."""
        answer = self._one(self._request("/swarm/addrs/local"), "/swarm/addrs/local")
        return [str(a) for a in answer.get("Strings") or []]
