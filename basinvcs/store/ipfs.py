"""A block store that is an IPFS node: blocks go in with block/put and come back verified.

The node holds dag-cbor and raw blocks under the same CIDv1 (sha2-256) as the embedded store; a
block is checked here before it is sent (strict canonical DAG-CBOR, size), and every block read
back is re-hashed against its CID. Blocks are not pinned by put: pin the roots worth keeping.
"""

from __future__ import annotations

from ..cid import CID, DAG_CBOR, RAW
from ..errors import CodecError
from ..ipfs import Node
from .base import BlockStore, check_block


class IPFSBlockStore(BlockStore):
    """Blocks kept by the IPFS node behind `node`."""

    CODECS = (DAG_CBOR, RAW)

    def __init__(self, node: Node, get_timeout: float | None = None) -> None:
        self.node = node
        self.get_timeout = get_timeout

    def put(self, data: bytes, codec: int = DAG_CBOR) -> CID:
        if codec not in self.CODECS:
            raise CodecError(f"the IPFS store keeps dag-cbor and raw blocks, not codec 0x{codec:x}")
        check_block(data, codec)
        return self.node.block_put(data, codec)

    def get(self, cid: CID) -> bytes:
        return self.node.block_get(cid, timeout=self.get_timeout)

    def has(self, cid: CID) -> bool:
        return self.node.block_has(cid)

    def size(self, cid: CID) -> int:
        return len(self.get(cid))  # the node's own stat would be trusting its word for it

    def pin(self, cid: CID) -> None:
        """Pin `cid` and everything it links to on the node."""
        self.node.pin_add(cid, recursive=True)
