"""The repository config (`.basin/config.json`): chart, trusted signers, settings, remotes and
what was last published and seen over the network.

Plain JSON so people can read it; always rewritten whole through a temporary file and a rename,
so a crash leaves either the old config or the new one.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from .atomic import replacing
from .errors import BasinError, RepositoryError
from .identity import format_key, parse_key
from .inputs import parse_json, read_file
from .merge import check_threshold, check_weight
from .objects import Chart

CONFIG_FILE = "config.json"
COHORT = re.compile(r"[A-Za-z0-9._-]{1,64}")


@dataclass(frozen=True)
class TrustedKey:
    """A signer whose commits this repository accepts, and how much its changes weigh in merges.

    `cohort`: the operator's statement of which signers share a task (a hive coordinator
    quarantines a signer working against the rest of its cohort: hive/quarantine.py); never
    anything an update says about itself."""

    key: bytes
    name: str
    weight: float = 1.0
    cohort: str | None = None

    def __post_init__(self) -> None:
        check_weight(self.weight, "trust weight")
        if self.cohort is not None:
            check_cohort(self.cohort)

    def to_json(self) -> dict:
        return {
            "key": format_key(self.key),
            "name": self.name,
            "weight": self.weight,
            **({"cohort": self.cohort} if self.cohort is not None else {}),
        }


def check_cohort(name: object, what: str = "cohort") -> str:
    """A cohort's name: 1 to 64 letters, digits, '.', '_' or '-' (it is shown in tables and
    compared byte for byte)."""
    if not isinstance(name, str) or not COHORT.fullmatch(name):
        shown = repr(name[:60]) if isinstance(name, str) else type(name).__name__
        raise BasinError(f"{what} {shown} must be 1 to 64 letters, digits, '.', '_' or '-'")
    return name


@dataclass
class Remote:
    """An IPFS node to push to and pull through, and whose heads to pull (if anyone's).

    `bound` is the heads records' scope (signer/repository id) seen at the first fetch: from
    then on only records of that scope are taken from this remote, so a node cannot serve the
    same signer's record for another repository and move our remote-tracking refs.
    """

    node: str  # multiaddr of the node's RPC API, e.g. /ip4/127.0.0.1/tcp/5001
    follow: str | None = None  # an IPNS name or a heads-record CID
    bound: str | None = None  # Heads.scope of the records this remote serves

    def to_json(self) -> dict:
        return {
            "node": self.node,
            **({"follow": self.follow} if self.follow else {}),
            **({"bound": self.bound} if self.bound else {}),
        }


@dataclass
class SyncState:
    """Network bookkeeping: this repository's id and heads-record sequence, what it published,
    and the highest sequence seen per (signer, repository), which refuses replayed old records."""

    repo: str | None = None
    seq: int = 0
    published: dict[str, str] = field(default_factory=dict)  # branch -> commit CID
    seen: dict[str, int] = field(default_factory=dict)  # Heads.scope -> highest seq
    heads: str | None = None  # CID of the last heads record this repository published

    def to_json(self) -> dict:
        return {
            "repo": self.repo,
            "seq": self.seq,
            "published": self.published,
            "seen": self.seen,
            "heads": self.heads,
        }

    @classmethod
    def from_json(cls, doc: object) -> SyncState:
        doc = _object(doc, "sync")
        return cls(
            _optional(doc.get("repo"), str, "sync.repo"),
            _count(doc.get("seq", 0), "sync.seq"),
            {k: _typed(v, str, f"sync.published.{_key(k)}") for k, v in _map(doc, "published")},
            {k: _count(v, f"sync.seen.{_key(k)}") for k, v in _map(doc, "seen")},
            _optional(doc.get("heads"), str, "sync.heads"),
        )


@dataclass
class Config:
    chart: Chart
    trusted: list[TrustedKey] = field(default_factory=list)
    settings: dict[str, object] = field(default_factory=dict)
    remotes: dict[str, Remote] = field(default_factory=dict)
    sync: SyncState = field(default_factory=SyncState)

    def trusted_key(self, key: bytes) -> TrustedKey | None:
        return next((t for t in self.trusted if t.key == key), None)

    def to_json(self) -> dict:
        return {
            "chart": self.chart.to_node(),
            "trusted": [t.to_json() for t in self.trusted],
            "settings": self.settings,
            "remotes": {name: r.to_json() for name, r in self.remotes.items()},
            "sync": self.sync.to_json(),
        }

    @classmethod
    def from_json(cls, doc: object) -> Config:
        """A config from its JSON, every field checked: a wrong type is one line, not a crash
        later in whichever command first touches it."""
        doc = _object(doc, "config")
        if "chart" not in doc:
            raise RepositoryError("config has no chart")
        trusted = []
        for i, t in enumerate(_typed(doc.get("trusted", []), list, "trusted")):
            t = _object(t, f"trusted[{i}]")
            weight = check_weight(t.get("weight", 1.0), f"trusted[{i}].weight")
            key = parse_key(_typed(t.get("key"), str, f"trusted[{i}].key"))
            name = _typed(t.get("name"), str, f"trusted[{i}].name")
            cohort = t.get("cohort")
            if cohort is not None:
                check_cohort(cohort, f"trusted[{i}].cohort")
            trusted.append(TrustedKey(key, name, weight, cohort))
        remotes = {}
        for name, r in _map(doc, "remotes"):
            r = _object(r, f"remotes.{_key(name)}")
            remotes[name] = Remote(
                _typed(r.get("node"), str, f"remotes.{_key(name)}.node"),
                _optional(r.get("follow"), str, f"remotes.{_key(name)}.follow"),
                _optional(r.get("bound"), str, f"remotes.{_key(name)}.bound"),
            )
        return cls(
            Chart.from_node(doc["chart"]),
            trusted,
            _settings(doc.get("settings", {})),
            remotes,
            SyncState.from_json(doc.get("sync", {})),
        )


def _settings(value: object) -> dict[str, object]:
    """Settings as the commands read them; the merge thresholds must be finite numbers >= 0."""
    settings = _object(value, "settings")
    merge = _object(settings.get("merge", {}), "settings.merge")
    for key in ("max_distance", "max_interference"):
        if key in merge:
            check_threshold(merge[key], f"settings.merge.{key}")
    return settings


def _object(value: object, what: str) -> dict:
    return _typed(value, dict, what)


def _map(doc: dict, key: str) -> list[tuple[str, object]]:
    return list(_object(doc.get(key, {}), key).items())


def _typed(value: object, kind: type, what: str):
    if not isinstance(value, kind) or isinstance(value, bool) != (kind is bool):
        raise RepositoryError(f"config {what} must be {_KINDS[kind]}, not {type(value).__name__}")
    return value


def _optional(value: object, kind: type, what: str):
    return None if value is None else _typed(value, kind, what)


def _key(key: str) -> str:
    """A config key as messages show it: quoted when it is long or holds what a line cannot."""
    return key if key.isprintable() and len(key) <= 60 else repr(key[:60])


def _count(value: object, what: str) -> int:
    if not 0 <= _typed(value, int, what) < 1 << 63:
        raise RepositoryError(f"config {what} {value} is out of range")
    return value


_KINDS = {dict: "an object", list: "a list", str: "a string", int: "an integer"}
MAX_CONFIG_BYTES = 1 << 20


def load_config(basin_dir: Path) -> Config:
    path = basin_dir / CONFIG_FILE
    if not path.exists():
        raise RepositoryError(f"repository config {path} is missing")
    try:
        return Config.from_json(parse_json(read_file(path, MAX_CONFIG_BYTES, "config"), "config"))
    except BasinError as exc:
        raise RepositoryError(f"repository config {path} is unusable: {exc}") from None


def save_config(basin_dir: Path, config: Config) -> None:

    write_json(basin_dir / CONFIG_FILE, config.to_json())


def write_json(path: Path, doc: object) -> None:
    """Write `doc` as JSON through a temporary file and a rename: a crash leaves the old file
    or the new one, never half of one."""
    with replacing(path, durable=True) as fh:
        fh.write(json.dumps(doc, indent=2, sort_keys=True).encode() + b"\n")
