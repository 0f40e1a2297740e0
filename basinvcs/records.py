"""Signed records that travel between repositories: branch heads and capability announcements.

Both are versioned DAG-CBOR maps signed by an Ed25519 basin key, like commits (objects.py), and
both must be exactly the canonical encoding of what they decode to. They are what a puller trusts:
the IPNS name or pubsub topic a record arrives through is only a pointer, so a forged pointer can
at worst deliver a record that fails its signature or trust check, or an old one, which the
sequence number exposes.

- `Heads` ("basin/heads"): a repository's published branches (name -> commit CID), with a
  sequence number that only grows, the repository's id and chart, the signer and a time.
- `Capability` ("basin/capability"): "this repository specialises in X (on substrate Y)", with
  where to find it (its IPNS name and heads record), and when the claim expires.

The IPLD schema of both is in docs/format.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

from .cid import CID
from .codec import dagcbor
from .errors import RefError, SchemaError, SignatureError
from .identity import format_key, verify_signature
from .objects import FORMAT_VERSION, Chart, _check_type, _fields, _signature, _typed, check_label
from .refnames import check_branch_name

HEADS_TYPE = "basin/heads"
CAPABILITY_TYPE = "basin/capability"
MAX_BRANCHES = 1024
MAX_NAME_BYTES = 128
_REPO_ID = re.compile(r"[0-9a-f]{32}")


def _check_time(value: Any, what: str) -> int:
    if not 0 <= _typed(value, int, what) < 1 << 63:
        raise SchemaError(f"{what} {value} is out of range")
    return value


def check_repo_id(value: Any) -> str:
    if not isinstance(value, str) or not _REPO_ID.fullmatch(value):
        raise SchemaError(f"repository id {value!r} must be 32 lowercase hex digits")
    return value


class _Signed:
    """Encoding, signing and strict decoding shared by the records (each defines the fields)."""

    TYPE: str
    signature: bytes
    author: bytes

    def unsigned_node(self) -> dict:
        raise NotImplementedError

    def signing_bytes(self) -> bytes:
        """What the signature covers: the canonical encoding without `signature`."""
        return dagcbor.encode(self.unsigned_node())

    def encode(self) -> bytes:
        if len(self.signature) != 64:
            raise SchemaError(f"{self.TYPE} record is not signed")
        return dagcbor.encode({**self.unsigned_node(), "signature": self.signature})

    def signed(self, sign):
        """This record with a signature made by `sign(bytes) -> bytes`."""
        return replace(self, signature=sign(self.signing_bytes()))

    def verify_signature(self) -> None:
        if not verify_signature(self.author, self.signing_bytes(), self.signature):
            raise SignatureError(
                f"{self.TYPE} record has a bad signature (claimed signer {format_key(self.author)})"
            )

    @classmethod
    def from_node(cls, node: Any):
        raise NotImplementedError

    @classmethod
    def decode(cls, data: bytes):
        """A record from its block, strictly: valid, canonical and correctly signed."""
        record = cls.from_node(dagcbor.decode(data))
        if record.encode() != data:
            raise SchemaError(f"{cls.TYPE} record is not in canonical form")
        record.verify_signature()
        return record


@dataclass(frozen=True)
class Heads(_Signed):
    """A signed snapshot of a repository's published branches."""

    TYPE = HEADS_TYPE

    repo: str  # 32 hex digits, random per repository: what `seq` counts within
    chart: Chart
    heads: dict[str, CID]
    seq: int
    author: bytes
    time: int  # milliseconds since the Unix epoch, UTC
    signature: bytes = b""

    def __post_init__(self) -> None:
        check_repo_id(self.repo)
        if not self.heads:
            raise SchemaError("heads record lists no branch")
        if len(self.heads) > MAX_BRANCHES:
            raise SchemaError(f"heads record lists over {MAX_BRANCHES} branches")
        for name, cid in self.heads.items():
            try:
                check_branch_name(_typed(name, str, "branch name"))
            except RefError as exc:
                raise SchemaError(f"heads record: {exc}") from None
            _typed(cid, CID, f"head of {name!r}")
        if not 0 <= _typed(self.seq, int, "heads seq") < 1 << 63:
            raise SchemaError(f"heads seq {self.seq} is out of range")
        if len(_typed(self.author, bytes, "heads author")) != 32:
            raise SchemaError("heads author must be a 32-byte Ed25519 public key")
        _check_time(self.time, "heads time")

    def unsigned_node(self) -> dict:
        return {
            "type": HEADS_TYPE,
            "version": FORMAT_VERSION,
            "repo": self.repo,
            "chart": self.chart.to_node(),
            "heads": dict(self.heads),
            "seq": self.seq,
            "author": self.author,
            "time": self.time,
        }

    @classmethod
    def from_node(cls, node: Any) -> Heads:
        _check_type(node, HEADS_TYPE)
        fields = {"type", "version", "repo", "chart", "heads", "seq", "author", "time", "signature"}
        node = _fields(node, "heads record", fields)
        return cls(
            repo=node["repo"],
            chart=Chart.from_node(node["chart"]),
            heads=dict(_typed(node["heads"], dict, "heads")),
            seq=node["seq"],
            author=node["author"],
            time=node["time"],
            signature=_signature(node["signature"], "heads record"),
        )

    @property
    def scope(self) -> str:
        """Whose sequence this record's `seq` belongs to: one signer's one repository."""
        return f"{format_key(self.author)}/{self.repo}"


@dataclass(frozen=True)
class Capability(_Signed):
    """A signed, expiring announcement that a repository offers a specialisation."""

    TYPE = CAPABILITY_TYPE

    specialization: str
    substrate: str | None  # the substrate name the basins were fitted on, if stated
    name: str  # IPNS name under which the repository publishes its heads records
    heads: CID  # its heads record when announced
    chart: Chart
    author: bytes
    time: int
    expires: int  # milliseconds since the Unix epoch, UTC; after it the claim is void
    signature: bytes = b""

    def __post_init__(self) -> None:
        check_label(self.specialization)
        if self.substrate is not None:
            check_label(self.substrate)
        if not _typed(self.name, str, "IPNS name") or len(self.name) > MAX_NAME_BYTES:
            raise SchemaError(f"IPNS name {self.name!r} must be 1-{MAX_NAME_BYTES} characters")
        _typed(self.heads, CID, "capability heads")
        if len(_typed(self.author, bytes, "capability author")) != 32:
            raise SchemaError("capability author must be a 32-byte Ed25519 public key")
        _check_time(self.time, "capability time")
        if _check_time(self.expires, "capability expiry") <= self.time:
            raise SchemaError("capability expires before it was made")

    def unsigned_node(self) -> dict:
        node: dict[str, Any] = {
            "type": CAPABILITY_TYPE,
            "version": FORMAT_VERSION,
            "specialization": self.specialization,
            "name": self.name,
            "heads": self.heads,
            "chart": self.chart.to_node(),
            "author": self.author,
            "time": self.time,
            "expires": self.expires,
        }
        if self.substrate is not None:
            node["substrate"] = self.substrate
        return node

    @classmethod
    def from_node(cls, node: Any) -> Capability:
        _check_type(node, CAPABILITY_TYPE)
        required = {"type", "version", "specialization", "name", "heads", "chart", "author"}
        required |= {"time", "expires", "signature"}
        node = _fields(node, "capability record", required, {"substrate"})
        substrate = node.get("substrate")
        return cls(
            specialization=_typed(node["specialization"], str, "specialization"),
            substrate=None if substrate is None else _typed(substrate, str, "substrate"),
            name=node["name"],
            heads=node["heads"],
            chart=Chart.from_node(node["chart"]),
            author=node["author"],
            time=node["time"],
            expires=node["expires"],
            signature=_signature(node["signature"], "capability record"),
        )
