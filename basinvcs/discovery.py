"""Discovery: signed, expiring announcements that a repository offers a specialisation,
published on IPFS pubsub, and listening for them (docs/design.md says why pubsub)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from .cid import CID
from .errors import BasinError, RemoteError
from .ipfs import Node
from .porcelain import now_ms
from .records import Capability
from .remote import CAPABILITY_TOPIC, broadcast, connect, get_remote
from .repository import Repository

# -- discovery -----------------------------------------------------------------------------------


def announce(
    repo: Repository,
    remote: str,
    specialization: str,
    substrate: str | None = None,
    ttl: float = 3600.0,
    repeat: int = 1,
    interval: float = 5.0,
) -> tuple[Capability, CID, int]:
    """Sign, pin and publish that this repository offers `specialization`, `repeat` times.

    The repository must have pushed (the record points at its IPNS name and heads record).
    Returns the record, its CID and how many of the publications some peer subscribed to.
    """
    ident = repo.identity()
    target = get_remote(repo, remote)
    sync = repo.config.sync
    if not sync.heads or not sync.repo:
        raise RemoteError("nothing published yet: basin push first, so there is something to find")
    node = connect(target.node)
    name = node.key_ensure(f"basin-{sync.repo}")
    made = now_ms()
    record = Capability(
        specialization=specialization,
        substrate=substrate,
        name=name,
        heads=CID.parse(sync.heads),
        chart=repo.config.chart,
        author=ident.public_key,
        time=made,
        expires=made + int(ttl * 1000),
    ).signed(ident.sign)
    data = record.encode()
    cid = node.block_put(data)
    node.pin_add(cid)
    heard = 0
    for i in range(max(1, repeat)):
        if i:
            time.sleep(interval)
        heard += broadcast(node, CAPABILITY_TOPIC + specialization, data)
    return record, cid, heard


@dataclass
class Found:
    record: Capability
    cid: CID
    peer: str  # the node that relayed it


def discover(
    node: Node, specialization: str, substrate: str | None = None, wait: float = 10.0
) -> tuple[list[Found], int]:
    """Listen `wait` seconds for announcements of `specialization`; returns the valid, unexpired
    ones (newest per signer and IPNS name) and how many invalid ones were dropped."""
    best: dict[tuple[bytes, str], Found] = {}
    dropped = 0
    for data, peer in node.pubsub_subscribe(CAPABILITY_TOPIC + specialization, wait):
        try:
            record = Capability.decode(data)
        except BasinError:
            dropped += 1
            continue
        if record.specialization != specialization or record.expires <= now_ms():
            dropped += 1
            continue
        if substrate is not None and record.substrate != substrate:
            continue
        key = (record.author, record.name)
        if key not in best or best[key].record.time < record.time:
            best[key] = Found(record, CID.for_block(data), peer)
    return sorted(best.values(), key=lambda f: -f.record.time), dropped
