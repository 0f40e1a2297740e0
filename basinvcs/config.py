"""The repository config (`.basin/config.json`): chart, trusted signers, settings, remotes and
what was last published and seen over the network.

Plain JSON so people can read it; always rewritten whole through a temporary file and a rename,
so a crash leaves either the old config or the new one.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from .errors import RepositoryError, SignatureError
from .identity import format_key, parse_key
from .objects import Chart

CONFIG_FILE = "config.json"


@dataclass(frozen=True)
class TrustedKey:
    """A signer whose commits this repository accepts, and how much its changes weigh in merges."""

    key: bytes
    name: str
    weight: float = 1.0

    def __post_init__(self) -> None:
        if not math.isfinite(self.weight) or self.weight <= 0:
            raise SignatureError(f"trust weight {self.weight} must be a positive number")


@dataclass(frozen=True)
class Remote:
    """An IPFS node to push to and pull through, and whose heads to pull (if anyone's)."""

    node: str  # multiaddr of the node's RPC API, e.g. /ip4/127.0.0.1/tcp/5001
    follow: str | None = None  # an IPNS name or a heads-record CID

    def to_json(self) -> dict:
        return {"node": self.node, **({"follow": self.follow} if self.follow else {})}


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
    def from_json(cls, doc: dict) -> SyncState:
        return cls(
            doc.get("repo"),
            int(doc.get("seq", 0)),
            {str(k): str(v) for k, v in doc.get("published", {}).items()},
            {str(k): int(v) for k, v in doc.get("seen", {}).items()},
            doc.get("heads"),
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
            "trusted": [
                {"key": format_key(t.key), "name": t.name, "weight": t.weight} for t in self.trusted
            ],
            "settings": self.settings,
            "remotes": {name: r.to_json() for name, r in self.remotes.items()},
            "sync": self.sync.to_json(),
        }

    @classmethod
    def from_json(cls, doc: dict) -> Config:
        trusted = [
            TrustedKey(parse_key(t["key"]), str(t["name"]), float(t["weight"]))
            for t in doc.get("trusted", [])
        ]
        remotes = {
            str(name): Remote(str(r["node"]), r.get("follow"))
            for name, r in doc.get("remotes", {}).items()
        }
        return cls(
            Chart.from_node(doc["chart"]),
            trusted,
            dict(doc.get("settings", {})),
            remotes,
            SyncState.from_json(doc.get("sync", {})),
        )


def load_config(basin_dir: Path) -> Config:
    path = basin_dir / CONFIG_FILE
    try:
        return Config.from_json(json.loads(path.read_text()))
    except FileNotFoundError:
        raise RepositoryError(f"repository config {path} is missing") from None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise RepositoryError(f"repository config {path} is unreadable: {exc!r}") from None


def save_config(basin_dir: Path, config: Config) -> None:
    import tempfile

    path = basin_dir / CONFIG_FILE
    fd, tmp = tempfile.mkstemp(dir=basin_dir, prefix=".config-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(config.to_json(), fh, indent=2, sort_keys=True)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
