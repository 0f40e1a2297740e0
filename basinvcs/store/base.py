"""The block-store interface every backend implements (embedded SQLite now, an IPFS node later).

A store maps CIDs to bytes. It never hands out bytes that do not hash to the CID asked for, and it
never accepts a DAG-CBOR block that is not strictly canonical: a CID names exactly one byte string,
and every byte string it holds was checked once, on the way in.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from ..cid import CID, DAG_CBOR, DAG_JSON
from ..codec import dagcbor, dagjson
from ..errors import BlockTooLarge

MAX_BLOCK_SIZE = 1 << 20  # 1 MiB, the block size IPFS nodes exchange


def check_block(data: bytes, codec: int) -> None:
    """Refuse a block that is oversized or not valid in its codec (raw blocks are any bytes)."""
    if len(data) > MAX_BLOCK_SIZE:
        raise BlockTooLarge(f"block of {len(data)} bytes is over the {MAX_BLOCK_SIZE}-byte limit")
    if codec == DAG_CBOR:
        dagcbor.decode(data)
    elif codec == DAG_JSON:
        dagjson.decode(data)


class BlockStore(ABC):
    """Content-addressed blocks: put bytes, get them back by CID, verified."""

    @abstractmethod
    def put(self, data: bytes, codec: int = DAG_CBOR) -> CID:
        """Check and store `data`; return its CIDv1 (sha2-256)."""

    @abstractmethod
    def get(self, cid: CID) -> bytes:
        """The block's bytes, re-hashed against `cid`; BlockNotFound or HashMismatch otherwise."""

    @abstractmethod
    def has(self, cid: CID) -> bool:
        """Whether the store holds `cid` (without reading or verifying it)."""
