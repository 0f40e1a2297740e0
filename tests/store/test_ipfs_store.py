"""IPFSBlockStore over real js-ipfs daemons (the session's ipfs_node / ipfs_pair fixtures).

Named test_ipfs_store.py, not test_ipfs.py: tests/ has no packages, so two test modules may not
share a basename (tests/test_ipfs.py tests basinvcs.ipfs).
"""

from __future__ import annotations

import os
import socket

import pytest

from basinvcs.cid import CID, DAG_CBOR, DAG_JSON, RAW
from basinvcs.codec import dagcbor
from basinvcs.errors import BlockNotFound, BlockTooLarge, CodecError
from basinvcs.ipfs import Node
from basinvcs.store import MAX_BLOCK_SIZE, BlockStore
from basinvcs.store.ipfs import IPFSBlockStore


@pytest.fixture
def store(ipfs_node) -> IPFSBlockStore:
    return IPFSBlockStore(ipfs_node.node, get_timeout=2)


def fresh() -> bytes:
    return dagcbor.encode({"nonce": os.urandom(16), "z": [0.5, -1.25]})


def test_put_get_has(store):
    assert isinstance(store, BlockStore)
    data, raw = fresh(), os.urandom(33)
    cid = store.put(data)
    assert cid == CID.for_block(data, DAG_CBOR)
    assert store.put(raw, RAW) == CID.for_block(raw, RAW)
    assert store.get(cid) == data and store.get(CID.for_block(raw, RAW)) == raw
    assert store.has(cid)
    missing = CID.for_block(fresh())
    assert not store.has(missing)
    with pytest.raises(BlockNotFound):
        store.get(missing)


@pytest.mark.parametrize(
    "data, codec, error",
    [
        (b"\xa2\x61b\x01\x61a\x02", DAG_CBOR, CodecError),  # keys out of canonical order
        (b"\x18\x01", DAG_CBOR, CodecError),  # 1 in two bytes: not the shortest form
        (b"\xff", DAG_CBOR, CodecError),
        (b'{"a":1}', DAG_JSON, CodecError),  # the node store keeps dag-cbor and raw only
        (b"\x00" * (MAX_BLOCK_SIZE + 1), RAW, BlockTooLarge),
    ],
)
def test_put_refuses_before_sending(data, codec, error):
    with socket.socket() as s:  # a node that is not there: nothing may be sent, or tried
        s.bind(("127.0.0.1", 0))
        node = Node(f"/ip4/127.0.0.1/tcp/{s.getsockname()[1]}")
    with pytest.raises(error):
        IPFSBlockStore(node).put(data, codec)
    assert (node.blocks_sent, node.bytes_sent) == (0, 0)


def test_pin(store):
    cid = store.put(fresh())
    store.pin(cid)
    assert cid in store.node.pinned_roots()


def test_get_through_the_other_node(ipfs_pair):
    one, two = ipfs_pair
    data = fresh()
    cid = IPFSBlockStore(one.node).put(data)
    assert IPFSBlockStore(two.node, get_timeout=20).get(cid) == data
