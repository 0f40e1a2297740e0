"""The basin objects: chart, basin packet, commit and round record, as versioned DAG-CBOR maps.

Each object converts to and from the IPLD data model (``to_node`` / ``from_node``) and validates
everything on the way in, so a block that decodes is a block the rest of the code can trust.
The IPLD schema of these maps is written down in docs/format.md.
"""

from __future__ import annotations

import fnmatch
import math
import re
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from . import numeric
from .cid import CID
from .codec import dagcbor
from .errors import CIDError, SchemaError

PACKET_TYPE = "basin/packet"
COMMIT_TYPE = "basin/commit"
ROUND_TYPE = "basin/round"
FORMAT_VERSION = 1
MASKED_PACKET_VERSION = 2  # a packet whose chart leaves tensors out (chart field "exclude")

CHART_KINDS = ("srht",)  # subsampled randomized Hadamard transform (BRIEF §2)
DEFAULT_DIM = 1024
MAX_DIM = 1 << 16
PACKET_BYTES_PER_1024 = 4096
MAX_BETA = 8
MAX_LABELS = 16
MAX_ENTANGLEMENTS = 64
MAX_MESSAGE_BYTES = 16384
MAX_EXCLUDE = 16
MAX_ROUND_ENTRIES = 5_000  # updates one round record lists: at most ~0.9 MiB, under the block limit
MAX_REASON_BYTES = 120
_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_PATTERN = re.compile(r"[A-Za-z0-9._*?\[\]!-]{1,128}")


def packet_limit(dim: int) -> int:
    """Largest encoded packet allowed: 4096 bytes up to d = 1024, growing in proportion above."""
    return max(PACKET_BYTES_PER_1024, -(-PACKET_BYTES_PER_1024 * dim // 1024))


def _fields(node: Any, what: str, required: set[str], optional: set[str] = frozenset()) -> dict:
    if not isinstance(node, dict):
        raise SchemaError(f"{what} must be a map, not {type(node).__name__}")
    missing = required - node.keys()
    if missing:
        raise SchemaError(f"{what} lacks field {sorted(missing)[0]!r}")
    extra = node.keys() - required - optional
    if extra:
        raise SchemaError(f"{what} has unknown field {sorted(extra)[0]!r}")
    return node


def _typed(value: Any, kind: type | tuple[type, ...], what: str) -> Any:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise SchemaError(f"{what} must be {names}, not {type(value).__name__}")
    return value


def _finite(value: Any, what: str) -> float:
    value = _typed(value, float, what)
    if not math.isfinite(value):
        raise SchemaError(f"{what} is {value}: it must be finite")
    return value


def check_label(label: str) -> str:
    if not isinstance(label, str) or not _LABEL.fullmatch(label):
        raise SchemaError(
            f"bad label {label!r}: use 1-64 letters, digits, '.', '_' or '-', starting alnum"
        )
    return label


@dataclass(frozen=True)
class Chart:
    """The coordinate system of a repository: coordinates mean nothing outside their chart.

    `exclude` (the chart's mask) names tensors the projection leaves out, as shell-style patterns
    on tensor names (``*word_embeddings*``, ``pooler.*``): their weights stay at θ0, so the
    coordinates go where they matter and training skips the largest tables. Sorted and distinct,
    so one mask has one encoding.
    """

    kind: str = "srht"
    seed: int = 0
    dim: int = DEFAULT_DIM
    exclude: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in CHART_KINDS:
            raise SchemaError(f"unknown chart kind {self.kind!r} (known: {', '.join(CHART_KINDS)})")
        _typed(self.seed, int, "chart seed")
        _typed(self.dim, int, "chart dim")
        if not 0 <= self.seed < 1 << 64:
            raise SchemaError(f"chart seed {self.seed} is outside 0..2^64-1")
        if not 1 <= self.dim <= MAX_DIM:
            raise SchemaError(f"chart dimension {self.dim} is outside 1..{MAX_DIM}")
        _typed(self.exclude, tuple, "chart exclude")
        for pattern in self.exclude:
            if not isinstance(pattern, str) or not _PATTERN.fullmatch(pattern):
                raise SchemaError(
                    f"bad chart exclude pattern {pattern!r}: 1-128 of letters, digits, "
                    "'.', '_', '-' and the wildcards * ? [ ] !"
                )
        if len(self.exclude) > MAX_EXCLUDE:
            raise SchemaError(
                f"chart has {len(self.exclude)} exclude patterns; {MAX_EXCLUDE} allowed"
            )
        if list(self.exclude) != sorted(set(self.exclude)):
            raise SchemaError("chart exclude patterns must be sorted and distinct")

    @classmethod
    def masked(cls, kind: str, seed: int, dim: int, exclude: Sequence[str]) -> Chart:
        """A chart from patterns in any order, repeats dropped."""
        return cls(kind, seed, dim, tuple(sorted(set(exclude))))

    def excludes(self, tensor: str) -> bool:
        """Whether the mask leaves tensor `tensor` out of the projection."""
        return any(fnmatch.fnmatchcase(tensor, p) for p in self.exclude)

    def to_node(self) -> dict:
        node: dict[str, Any] = {"kind": self.kind, "seed": self.seed, "dim": self.dim}
        if self.exclude:
            node["exclude"] = list(self.exclude)
        return node

    @classmethod
    def from_node(cls, node: Any) -> Chart:
        node = _fields(node, "chart", {"kind", "seed", "dim"}, {"exclude"})
        exclude = tuple(_typed(node.get("exclude", []), list, "chart exclude"))
        if "exclude" in node and not exclude:
            raise SchemaError("chart exclude is empty: leave the field out instead")
        return cls(_typed(node["kind"], str, "chart kind"), node["seed"], node["dim"], exclude)

    def __str__(self) -> str:
        mask = f", exclude={','.join(self.exclude)}" if self.exclude else ""
        return f"{self.kind}(d={self.dim}, seed={self.seed}{mask})"


@dataclass(frozen=True)
class SubstrateRef:
    """Which substrate a basin was fitted on: a name for people, a fingerprint for machines,
    and its parameter count, so that merges can weigh a basin by capacity without having (or
    loading) its substrate.

    The fingerprint is the 32-byte sha2-256 digest the model bridge computes over tensor names,
    shapes, dtypes and θ0; raw bytes, as the packet has little room to spare.
    """

    name: str
    fingerprint: bytes
    params: int

    def __post_init__(self) -> None:
        check_label(self.name)
        if not isinstance(self.fingerprint, bytes) or len(self.fingerprint) != 32:
            raise SchemaError("substrate fingerprint must be 32 bytes")
        if _typed(self.params, int, "substrate params") < 1:
            raise SchemaError(f"substrate params {self.params} must be positive")

    def to_node(self) -> dict:
        return {"name": self.name, "fingerprint": self.fingerprint, "params": self.params}

    @classmethod
    def from_node(cls, node: Any) -> SubstrateRef:
        node = _fields(node, "substrate", {"name", "fingerprint", "params"})
        return cls(
            _typed(node["name"], str, "substrate name"),
            _typed(node["fingerprint"], bytes, "substrate fingerprint"),
            node["params"],
        )


@dataclass(frozen=True)
class Entanglement:
    """A link between two concepts with its Fisher-weighted cosine strength in [-1, 1]."""

    a: str
    b: str
    strength: float

    def __post_init__(self) -> None:
        check_label(self.a)
        check_label(self.b)
        if not self.a < self.b:
            raise SchemaError(f"entanglement {self.a!r}-{self.b!r}: names must be distinct, sorted")
        if not -1.0 <= _finite(self.strength, "entanglement strength") <= 1.0:
            raise SchemaError(f"entanglement strength {self.strength} is outside [-1, 1]")

    def to_node(self) -> dict:
        return {"a": self.a, "b": self.b, "w": self.strength}

    @classmethod
    def from_node(cls, node: Any) -> Entanglement:
        node = _fields(node, "entanglement", {"a", "b", "w"})
        return cls(node["a"], node["b"], node["w"])


@dataclass(frozen=True)
class Basin:
    """A basin packet: coordinates z in a chart, plus what is needed to weigh and decode them.

    `z` holds exactly the values the packet stores (float24, see numeric.py); construct through
    `Basin.create` to have arbitrary floats rounded the way the packet will keep them.
    """

    chart: Chart
    z: array
    fisher: array | None = None
    beta: tuple[float, ...] = (1.0,)
    entanglements: tuple[Entanglement, ...] = ()
    labels: tuple[str, ...] = ()
    substrate: SubstrateRef | None = None
    _fisher_raw: tuple[float, bytes] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def create(
        cls,
        chart: Chart,
        z: Sequence[float] | None = None,
        *,
        fisher: Sequence[float] | None = None,
        beta: Sequence[float] = (1.0,),
        entanglements: Sequence[Entanglement] = (),
        labels: Sequence[str] = (),
        substrate: SubstrateRef | None = None,
    ) -> Basin:
        """A packet from plain floats (z = 0 when omitted), rounded as it will be stored."""
        coords = numeric.quantize(z) if z is not None else array("f", bytes(4 * chart.dim))
        if fisher is not None and len(fisher) != chart.dim:
            raise SchemaError(
                f"Fisher diagonal has {len(fisher)} values; the chart has {chart.dim}"
            )
        raw = numeric.fisher_encode(fisher) if fisher is not None else None
        return cls._build(chart, coords, raw, beta, entanglements, labels, substrate)

    @classmethod
    def _build(cls, chart, z, fisher_raw, beta, entanglements, labels, substrate) -> Basin:
        if len(z) != chart.dim:
            raise SchemaError(
                f"basin has {len(z)} coordinates but its chart has dimension {chart.dim}"
            )
        fisher = None
        if fisher_raw is not None:
            fisher = numeric.fisher_decode(fisher_raw[0], fisher_raw[1], chart.dim)
        beta = tuple(_finite(b, "beta coefficient") for b in beta)
        if not 1 <= len(beta) <= MAX_BETA:
            raise SchemaError(f"beta has {len(beta)} coefficients; 1..{MAX_BETA} allowed")
        labels = tuple(check_label(label) for label in labels)
        if len(labels) > MAX_LABELS or len(set(labels)) != len(labels):
            raise SchemaError(f"labels must be distinct and at most {MAX_LABELS}")
        ents = tuple(entanglements)
        if len(ents) > MAX_ENTANGLEMENTS or len({(e.a, e.b) for e in ents}) != len(ents):
            raise SchemaError(f"entanglements must be distinct pairs, at most {MAX_ENTANGLEMENTS}")
        return cls(chart, z, fisher, beta, ents, labels, substrate, fisher_raw)

    def with_z(self, z: Sequence[float]) -> Basin:
        """This basin at other coordinates (rounded as a packet keeps them), all else kept."""
        return Basin.create(
            self.chart,
            z,
            fisher=self.fisher,
            beta=self.beta,
            entanglements=list(self.entanglements),
            labels=list(self.labels),
            substrate=self.substrate,
        )

    def with_beta(self, beta: Sequence[float]) -> Basin:
        return self._build(
            self.chart,
            self.z,
            self._fisher_raw,
            beta,
            self.entanglements,
            self.labels,
            self.substrate,
        )

    def with_labels(self, labels: Sequence[str]) -> Basin:
        return self._build(
            self.chart,
            self.z,
            self._fisher_raw,
            self.beta,
            self.entanglements,
            labels,
            self.substrate,
        )

    def to_node(self) -> dict:
        node: dict[str, Any] = {
            "type": PACKET_TYPE,
            "version": MASKED_PACKET_VERSION if self.chart.exclude else FORMAT_VERSION,
            "chart": self.chart.to_node(),
            "z": numeric.float24_encode(self.z),
            "beta": list(self.beta),
            "labels": list(self.labels),
            "entanglements": [e.to_node() for e in self.entanglements],
        }
        if self._fisher_raw is not None:
            node["fisher"] = {"max": self._fisher_raw[0], "codes": self._fisher_raw[1]}
        if self.substrate is not None:
            node["substrate"] = self.substrate.to_node()
        return node

    @classmethod
    def from_node(cls, node: Any) -> Basin:
        _check_type(node, PACKET_TYPE, (FORMAT_VERSION, MASKED_PACKET_VERSION))
        node = _fields(
            node,
            "basin packet",
            {"type", "version", "chart", "z", "beta", "labels", "entanglements"},
            {"fisher", "substrate"},
        )
        chart = Chart.from_node(node["chart"])
        if (node["version"] == MASKED_PACKET_VERSION) != bool(chart.exclude):
            raise SchemaError(
                f"basin packet version {node['version']} does not match its chart "
                f"(version {MASKED_PACKET_VERSION} is for charts with an exclude mask)"
            )
        z = numeric.float24_decode(_typed(node["z"], bytes, "z"))
        fisher_raw = None
        if "fisher" in node:
            f = _fields(node["fisher"], "fisher", {"max", "codes"})
            fisher_raw = (
                _finite(f["max"], "fisher max"),
                _typed(f["codes"], bytes, "fisher codes"),
            )
        substrate = SubstrateRef.from_node(node["substrate"]) if "substrate" in node else None
        return cls._build(
            chart,
            z,
            fisher_raw,
            _typed(node["beta"], list, "beta"),
            [
                Entanglement.from_node(e)
                for e in _typed(node["entanglements"], list, "entanglements")
            ],
            _typed(node["labels"], list, "labels"),
            substrate,
        )

    def encode(self) -> bytes:
        data = dagcbor.encode(self.to_node())
        limit = packet_limit(self.chart.dim)
        if len(data) > limit:
            raise SchemaError(
                f"basin packet is {len(data)} bytes; the limit at d={self.chart.dim} is {limit}"
            )
        return data

    @classmethod
    def decode(cls, data: bytes, *, trusted: bool = False) -> Basin:
        """A packet from its block; `trusted` skips checks for bytes validated when stored."""
        if trusted:
            return cls.from_node(dagcbor.decode_trusted(data))
        basin = cls.from_node(dagcbor.decode(data))
        _check_canonical(basin, data)  # also enforces the size limit, through encode()
        return basin

    def norm(self) -> float:
        return math.sqrt(math.fsum(v * v for v in self.z))


@dataclass(frozen=True)
class Commit:
    """A signed commit: a basin packet, its parents, who made it, when and why."""

    basin: CID
    parents: tuple[CID, ...]
    author: bytes
    time: int  # milliseconds since the Unix epoch, UTC
    message: str
    metrics: dict[str, float] = field(default_factory=dict)
    specialize: str | None = None
    strategy: str | None = None  # merge commits: how the sides were combined
    record: CID | None = None  # a hive round's head: its RoundRecord, when the message is short
    signature: bytes = b""

    def __post_init__(self) -> None:
        if len(self.author) != 32:
            raise SchemaError("commit author must be a 32-byte Ed25519 public key")
        if len(self.message.encode()) > MAX_MESSAGE_BYTES:
            raise SchemaError(f"commit message is over {MAX_MESSAGE_BYTES} bytes")
        if not 0 <= self.time < 1 << 63:
            raise SchemaError(f"commit time {self.time} is out of range")
        for key, value in self.metrics.items():
            _typed(key, str, "metric name")
            _finite(value, f"metric {key!r}")
        if self.specialize is not None:
            check_label(self.specialize)
        if self.strategy is not None:
            check_label(self.strategy)
        if len(set(self.parents)) != len(self.parents):
            raise SchemaError("commit lists a parent twice")

    @property
    def attached(self) -> tuple[CID, ...]:
        """The blocks this commit links besides its parents: its packet, and its round record
        if it has one. History is whole where every commit's parents and these are held."""
        return (self.basin,) if self.record is None else (self.basin, self.record)

    def unsigned_node(self) -> dict:
        node: dict[str, Any] = {
            "type": COMMIT_TYPE,
            "version": FORMAT_VERSION,
            "basin": self.basin,
            "parents": list(self.parents),
            "author": self.author,
            "time": self.time,
            "message": self.message,
            "metrics": dict(self.metrics),
        }
        if self.specialize is not None:
            node["specialize"] = self.specialize
        if self.strategy is not None:
            node["strategy"] = self.strategy
        if self.record is not None:
            node["record"] = self.record
        return node

    def signing_bytes(self) -> bytes:
        """What the signature covers: the canonical encoding of the commit without `signature`."""
        return dagcbor.encode(self.unsigned_node())

    def signature_valid(self) -> bool:
        """Whether the key named as author made the signature: the one check every reader of
        commits (merge, fetch, verify, show) applies."""
        from .identity import verify_signature  # nacl: only commands that check signatures

        return verify_signature(self.author, self.signing_bytes(), self.signature)

    def to_node(self) -> dict:
        if len(self.signature) != 64:
            raise SchemaError("commit is not signed")
        return {**self.unsigned_node(), "signature": self.signature}

    def encode(self) -> bytes:
        return dagcbor.encode(self.to_node())

    @classmethod
    def from_node(cls, node: Any) -> Commit:
        _check_type(node, COMMIT_TYPE)
        node = _fields(
            node,
            "commit",
            {
                "type",
                "version",
                "basin",
                "parents",
                "author",
                "time",
                "message",
                "metrics",
                "signature",
            },
            {"specialize", "strategy", "record"},
        )
        parents = tuple(
            _typed(p, CID, "commit parent") for p in _typed(node["parents"], list, "parents")
        )
        return cls(
            basin=_typed(node["basin"], CID, "commit basin"),
            parents=parents,
            author=_typed(node["author"], bytes, "commit author"),
            time=_typed(node["time"], int, "commit time"),
            message=_typed(node["message"], str, "commit message"),
            metrics=dict(_typed(node["metrics"], dict, "metrics")),
            specialize=_optional_str(node, "specialize"),
            strategy=_optional_str(node, "strategy"),
            record=_typed(node["record"], CID, "commit record") if "record" in node else None,
            signature=_signature(node["signature"], "commit"),
        )

    @classmethod
    def decode(cls, data: bytes, *, trusted: bool = False) -> Commit:
        """A commit from its block; `trusted` skips checks for bytes validated when stored."""
        if not trusted:
            commit = cls.from_node(dagcbor.decode(data))
            _check_canonical(commit, data)
            return commit
        node = dagcbor.decode_trusted(data)
        if (
            type(node) is not dict
            or node.get("version") != FORMAT_VERSION
            or node.get("type") != COMMIT_TYPE
            or type(node.get("parents")) is not list
        ):
            return cls.from_node(node)  # raises the precise error
        commit = object.__new__(cls)  # bypass __post_init__: `log` reads thousands of these
        for name in _COMMIT_FIELDS:
            object.__setattr__(commit, name, node.get(name))
        object.__setattr__(commit, "parents", tuple(node["parents"]))
        return commit

    def signed(self, sign) -> Commit:
        """This commit with a signature made by `sign(bytes) -> bytes`."""
        return replace(self, signature=sign(self.signing_bytes()))


@dataclass(frozen=True)
class RoundRecord:
    """What a hive round did with every update it decided on: each taken, with its signer, and
    each refused, with why. A round's head commit links it (`Commit.record`) when its message
    cannot list them all, so the head's signature covers every update's fate (an edge that sent
    one learns it exactly, however large the round).

    Update CIDs are stored as bytes, not links: the updates are not part of the history (a
    repository does not hold them), and a link would send IPFS looking for them when it pins."""

    taken: tuple[tuple[CID, bytes], ...]  # (update, its signer's 32-byte key)
    refused: tuple[tuple[CID, str], ...]  # (update, the one-line reason)

    def __post_init__(self) -> None:
        if len(self.taken) + len(self.refused) > MAX_ROUND_ENTRIES:
            raise SchemaError(f"round record lists over {MAX_ROUND_ENTRIES:,} updates")
        for _, signer in self.taken:
            if len(signer) != 32:
                raise SchemaError("round record: a signer must be a 32-byte Ed25519 public key")
        for _, why in self.refused:
            if not why or len(why.encode()) > MAX_REASON_BYTES or "\n" in why:
                raise SchemaError(
                    f"round record: a reason must be one line of 1-{MAX_REASON_BYTES} bytes"
                )
        updates = [cid for cid, _ in self.taken] + [cid for cid, _ in self.refused]
        if len(set(updates)) != len(updates):
            raise SchemaError("round record lists an update twice")

    def fates(self) -> dict[CID, str]:
        """Update → "taken" or "refused: REASON"."""
        out = {cid: "taken" for cid, _ in self.taken}
        out.update((cid, f"refused: {why}") for cid, why in self.refused)
        return out

    def to_node(self) -> dict:
        return {
            "type": ROUND_TYPE,
            "version": FORMAT_VERSION,
            "taken": [{"update": bytes(c), "signer": s} for c, s in self.taken],
            "refused": [{"update": bytes(c), "reason": why} for c, why in self.refused],
        }

    def encode(self) -> bytes:
        return dagcbor.encode(self.to_node())

    @classmethod
    def from_node(cls, node: Any) -> RoundRecord:
        _check_type(node, ROUND_TYPE)
        node = _fields(node, "round record", {"type", "version", "taken", "refused"})

        def entries(key: str, second: str, kind: type) -> tuple:
            out = []
            for entry in _typed(node[key], list, f"round record {key}"):
                entry = _fields(entry, f"round record {key} entry", {"update", second})
                raw = _typed(entry["update"], bytes, "round record update")
                try:
                    cid = CID.from_bytes(raw)
                except CIDError as exc:
                    raise SchemaError(f"round record: an update is not a CID: {exc}") from None
                out.append((cid, _typed(entry[second], kind, f"round record {second}")))
            return tuple(out)

        return cls(entries("taken", "signer", bytes), entries("refused", "reason", str))

    @classmethod
    def decode(cls, data: bytes) -> RoundRecord:
        record = cls.from_node(dagcbor.decode(data))
        _check_canonical(record, data)
        return record


_COMMIT_FIELDS = (
    "basin",
    "author",
    "time",
    "message",
    "metrics",
    "specialize",
    "strategy",
    "record",
    "signature",
)


def _optional_str(node: dict, key: str) -> str | None:
    return _typed(node[key], str, key) if key in node else None


def _signature(value: Any, what: str) -> bytes:
    """An Ed25519 signature field of a `what` block: 64 bytes."""
    value = _typed(value, bytes, f"{what} signature")
    if len(value) != 64:
        raise SchemaError(f"{what} signature has {len(value)} bytes, not 64")
    return value


def _check_type(node: Any, expected: str, versions: tuple[int, ...] = (FORMAT_VERSION,)) -> None:
    """Say first what a block is, so a packet passed as a commit is named as such."""
    kind = node.get("type") if isinstance(node, dict) else None
    if kind != expected:
        if isinstance(kind, str):
            raise SchemaError(f"block is a {kind!r}, not a {expected!r}")
        raise SchemaError(f"block is not a {expected!r}: it has no 'type' field")
    version = node.get("version")
    if type(version) is not int or version not in versions:
        known = " or ".join(map(str, versions))
        raise SchemaError(f"{expected} version {version!r} is not supported (this reads {known})")


def _check_canonical(obj: Basin | Commit | RoundRecord, data: bytes) -> None:
    """A block must be exactly the encoding of what it decodes to.

    Otherwise one signed commit could be re-encoded (a float 1.0 for the integer 1, a null for an
    absent field) into many blocks with different CIDs whose signatures all verify.
    """
    if obj.encode() != data:
        what = {Commit: "commit", Basin: "basin packet"}.get(type(obj), "round record")
        raise SchemaError(
            f"{what} is not in canonical form (a value of the wrong type or a null optional field)"
        )


def kind_of(node: Any) -> str | None:
    """The `type` of a decoded block if it is one of ours, else None."""
    if isinstance(node, dict) and isinstance(node.get("type"), str):
        return node["type"] if node["type"] in (PACKET_TYPE, COMMIT_TYPE, ROUND_TYPE) else None
    return None
