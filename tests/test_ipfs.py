"""basinvcs.ipfs against real js-ipfs daemons (tests/ipfsnode.py), not mocks.

Tests that need a daemon take the session's `ipfs_node` / `ipfs_pair` and skip outside a private
network namespace; address checks and an unreachable node need none and run everywhere.
"""

from __future__ import annotations

import os
import socket
import threading
import time

import pytest

from basinvcs.cid import CID, DAG_CBOR, DAG_JSON, RAW
from basinvcs.codec import dagcbor
from basinvcs.codec.car import car_bytes, read_car_bytes
from basinvcs.errors import BlockNotFound, CarError, CodecError, HashMismatch, RemoteError
from basinvcs.ipfs import Node, decode_multibase, encode_topic, verify_received


def fresh(label: str = "block") -> bytes:
    """A DAG-CBOR block no node has seen before."""
    return dagcbor.encode({"label": label, "nonce": os.urandom(16)})


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text and "Traceback" not in text, text
    return text


# -- addresses and unreachable nodes (no daemon) -------------------------------------------------


@pytest.mark.parametrize(
    "addr",
    [
        "http://127.0.0.1:5001",
        "127.0.0.1:5001",
        "/ip4/127.0.0.1",
        "/ip4/127.0.0.1/tcp/5001/ws",
        "/ip4/127.0.0.1/udp/5001",
        "/ip4/300.0.0.1/tcp/5001",
        "/ip4/::1/tcp/5001",
        "/ip4/127.0.0.1/tcp/70000",
        "/unix/tmp/ipfs.sock",
        "",
    ],
)
def test_bad_address_is_one_remote_error(addr):
    with pytest.raises(RemoteError) as exc:
        Node(addr)
    assert one_line(exc).startswith("not an IPFS API address: ")
    assert repr(addr) in str(exc.value)


@pytest.mark.parametrize(
    "addr",
    ["/ip4/127.0.0.1/tcp/5001", "/dns4/localhost/tcp/5001/http", "/ip6/::1/tcp/5001"],
)
def test_good_address_needs_no_node(addr):
    node = Node(addr, timeout=1)
    assert node.addr == addr and node.blocks_sent == node.bytes_sent == 0


def test_node_down_is_one_line_naming_the_address():
    addr = f"/ip4/127.0.0.1/tcp/{unused_port()}"
    node = Node(addr, timeout=5)
    expected = f"cannot reach the IPFS node at {addr}: connection refused"
    cid = CID.for_block(fresh())
    for call in (
        node.id,
        lambda: node.block_put(fresh()),
        lambda: node.block_get(cid, timeout=1),
        lambda: node.block_has(cid),  # not False: an unreachable node is an error
        lambda: node.name_resolve("k51qzi5uqu5dlvj2baxnqndepeb86cbk3ng7n3i46uzyxzyqj2xjonzllnv0v8"),
        lambda: list(node.pubsub_subscribe("t", 2)),
    ):
        with pytest.raises(RemoteError) as exc:
            call()
        assert one_line(exc) == expected
        assert exc.value.__cause__ is None and exc.value.__suppress_context__
    assert node.blocks_sent == 0


def test_block_put_refuses_other_codecs_before_sending():
    node = Node(f"/ip4/127.0.0.1/tcp/{unused_port()}")
    with pytest.raises(CodecError, match="dag-cbor or raw"):
        node.block_put(b'{"a":1}', DAG_JSON)


def test_received_bytes_are_verified():
    data = fresh()
    cid = CID.for_block(data)
    assert verify_received(cid, data, "/ip4/127.0.0.1/tcp/5001") == data
    with pytest.raises(HashMismatch) as exc:
        verify_received(cid, data + b"\x00", "/ip4/127.0.0.1/tcp/5001")
    assert one_line(exc) == (
        f"block {cid} from the IPFS node at /ip4/127.0.0.1/tcp/5001 does not match its hash"
    )


def test_topics_and_message_data_are_multibase():
    assert encode_topic("basin-test") == "uYmFzaW4tdGVzdA"
    assert encode_topic("") == "u"
    assert decode_multibase("uaGVsbG8") == b"hello"
    assert decode_multibase("maGVsbG8") == b"hello"  # base64, via multiformats
    with pytest.raises(ValueError):
        decode_multibase("uaGVsbG8=")


# -- one node ------------------------------------------------------------------------------------


def test_id_is_the_daemons_peer(ipfs_node):
    info = ipfs_node.node.id()
    assert info["ID"] == ipfs_node.peer_id
    assert any(str(ipfs_node.swarm_port) in a for a in ipfs_node.node.swarm_addrs_local())


def test_block_put_get_round_trip_with_our_cid(ipfs_node):
    node = ipfs_node.node
    sent_blocks, sent_bytes = node.blocks_sent, node.bytes_sent
    data, raw = fresh(), os.urandom(100)
    cid = node.block_put(data)
    assert cid == CID.for_block(data, DAG_CBOR) and str(cid).startswith("bafyrei")
    assert node.block_put(raw, RAW) == CID.for_block(raw, RAW)
    assert node.block_get(cid) == data
    assert node.block_get(CID.for_block(raw, RAW)) == raw
    assert (node.blocks_sent, node.bytes_sent) == (sent_blocks + 2, sent_bytes + len(data) + 100)


def test_block_has_and_missing_block(ipfs_node):
    node = ipfs_node.node
    data = fresh()
    cid = node.block_put(data)
    assert node.block_has(cid) is True
    missing = CID.for_block(fresh("never put"))
    started = time.monotonic()
    assert node.block_has(missing) is False
    with pytest.raises(BlockNotFound) as exc:
        node.block_get(missing, timeout=1)
    assert time.monotonic() - started < 10
    assert one_line(exc) == f"block {missing} not found by the IPFS node at {node.addr}"


def test_pin_and_pinned_roots(ipfs_node):
    node = ipfs_node.node
    cid = node.block_put(fresh())
    assert cid not in node.pinned_roots()
    node.pin_add(cid)
    assert cid in node.pinned_roots()


def test_key_ensure_is_idempotent(ipfs_node):
    node = ipfs_node.node
    first = node.key_ensure("basin-test-key")
    assert first and first == node.key_ensure("basin-test-key")
    assert node.key_ensure("basin-other-key") != first


def test_rpc_error_is_one_line_naming_the_node(ipfs_node):
    node = ipfs_node.node
    with pytest.raises(RemoteError) as exc:
        node.name_publish(node.block_put(fresh()), key="no-such-key")
    assert one_line(exc).startswith(f"IPFS node at {node.addr}: ")
    with pytest.raises(RemoteError) as exc:
        node._request("/no/such/command")
    assert one_line(exc) == f"IPFS node at {node.addr}: no /no/such/command command (HTTP 404)"


def test_name_resolve_refuses_what_is_no_name(ipfs_node):
    for name in ("", "/ipfs/bafyreiblaotetvwobe7cu2uqvnddr6ew2q3cu75qsoweulzku2egca4dxq", "a/b"):
        with pytest.raises(RemoteError, match="not an IPNS name"):
            ipfs_node.node.name_resolve(name)


# -- two nodes -----------------------------------------------------------------------------------


def test_block_travels_between_nodes(ipfs_pair):
    one, two = ipfs_pair
    data = fresh()
    cid = one.node.block_put(data)
    assert two.node.block_get(cid, timeout=20) == data  # bitswap


def test_dag_export_then_import_on_the_other_node(ipfs_pair):
    one, two = ipfs_pair
    leaves = [os.urandom(64), os.urandom(80)]
    leaf_cids = [one.node.block_put(leaf, RAW) for leaf in leaves]
    root_data = dagcbor.encode({"leaves": leaf_cids, "nonce": os.urandom(8)})
    root = one.node.block_put(root_data)

    car = one.node.dag_export(root)
    roots, blocks = read_car_bytes(car)
    assert roots == [root]
    assert dict(blocks) == {root: root_data, **dict(zip(leaf_cids, leaves, strict=True))}

    sent = two.node.blocks_sent, two.node.bytes_sent
    assert two.node.dag_import(car) == [root]
    assert (two.node.blocks_sent, two.node.bytes_sent) == (
        sent[0] + 3,
        sent[1] + len(root_data) + 64 + 80,
    )
    assert root in two.node.pinned_roots()
    assert all(two.node.block_has(c) for c in leaf_cids)


def test_dag_import_refuses_a_bad_car_before_sending(ipfs_node):
    node = ipfs_node.node
    data = fresh()
    car = bytearray(car_bytes([CID.for_block(data)], [(CID.for_block(data), data)]))
    car[-1] ^= 1
    sent = node.blocks_sent
    with pytest.raises(CarError):
        node.dag_import(bytes(car))
    assert node.blocks_sent == sent


def test_name_published_on_one_resolves_on_the_other(ipfs_pair):
    one, two = ipfs_pair
    name = one.node.key_ensure("basin-ipns-test")
    first = one.node.block_put(fresh("v1"))
    assert one.node.name_publish(first, "basin-ipns-test") == name
    assert two.node.name_resolve(name, timeout=20) == first
    second = one.node.block_put(fresh("v2"))
    one.node.name_publish(second, "basin-ipns-test")
    assert two.node.name_resolve(f"/ipns/{name}", timeout=20) == second


def test_pubsub_message_from_one_reaches_the_other(ipfs_pair):
    one, two = ipfs_pair
    topic = f"basin/test/{os.urandom(4).hex()}"
    received: list[tuple[bytes, str]] = []
    done = threading.Event()

    def listen() -> None:
        for message in two.node.pubsub_subscribe(topic, seconds=15):
            received.append(message)
            break
        done.set()

    threading.Thread(target=listen, daemon=True).start()
    payload = b"head bafy\x00\xff"
    for _ in range(20):  # until the subscription has reached the publisher
        time.sleep(0.5)
        one.node.pubsub_publish(topic, payload)
        if done.wait(0.5):
            break
    assert done.wait(15)
    assert received == [(payload, one.peer_id)]


def test_pubsub_subscription_ends_on_time(ipfs_node):
    started = time.monotonic()
    assert list(ipfs_node.node.pubsub_subscribe("basin/quiet", seconds=1.5)) == []
    assert 1.4 < time.monotonic() - started < 4


def test_dht_provide_then_findprovs(ipfs_pair):
    one, two = ipfs_pair
    cid = one.node.block_put(fresh())
    one.node.dht_provide(cid)
    found: list[str] = []
    for _ in range(5):
        found = two.node.dht_findprovs(cid, seconds=5)
        if one.peer_id in found:
            break
        time.sleep(0.5)
    assert one.peer_id in found
