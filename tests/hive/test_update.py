"""Update records ("basin/update"): signed, canonical, strictly decoded, a few hundred bytes; the
top-k encodings and error feedback."""

from __future__ import annotations

import dataclasses
import math
import pickle
import random
from typing import Any

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from basinvcs.cid import CID, DAG_JSON, RAW
from basinvcs.codec import dagcbor
from basinvcs.errors import BasinError, SchemaError, SignatureError
from basinvcs.hive.update import (
    DEFAULT_ENCODING,
    ENCODINGS,
    MAX_UPDATE_BYTES,
    Change,
    Compressor,
    SentFisher,
    Update,
    _pack,
    _unpack,
    encode_change,
    fitting_k,
    index_bits,
    next_update,
    update_limit,
)
from basinvcs.identity import Identity
from basinvcs.numeric import FLOAT24_MAX
from basinvcs.objects import Chart, Entanglement
from tests.fuzzing import CBOR_FRAGMENTS, assert_one_line, mutants, node_mutants

SIGNER = Identity(bytes(range(32)), "worker")
MALLORY = Identity(bytes(range(1, 33)), "mallory")
PARENT = CID.for_block(dagcbor.encode({"commit": 1}))
D = 1024
CHART = Chart(dim=D)
BIG = 2**63 - 1


def gaussian(seed: int, dim: int = D) -> list[float]:
    rng = random.Random(seed)
    return [rng.gauss(0.0, 1.0) for _ in range(dim)]


def make(
    chart: Chart = CHART,
    encoding: str = DEFAULT_ENCODING,
    *,
    seed: int = 0,
    fisher: bool = True,
    beta: tuple[float, ...] | None = (0.01,),
    k: int | None = None,
    **kw: Any,
) -> Update:
    change = encode_change(gaussian(seed, chart.dim), encoding, k)
    rng = random.Random(seed + 1)
    sent_fisher = None
    if fisher and change.k:
        sent_fisher = SentFisher.for_change(change, [rng.random() for _ in range(chart.dim)])
    fields = dict(
        chart=chart,
        parent=PARENT,
        round=3,
        seq=7,
        change=change,
        samples=32,
        author=SIGNER.public_key,
        fisher=sent_fisher,
        beta=beta,
    )
    return Update(**(fields | kw)).signed(SIGNER.sign)


def node_of(update: Update) -> dict:
    return dagcbor.decode(update.encode())


def resigned(node: dict, signer: Identity = SIGNER) -> bytes:
    """`node` encoded with a valid signature, so that only the schema can refuse it."""
    unsigned = {key: value for key, value in node.items() if key != "signature"}
    return dagcbor.encode({**unsigned, "signature": signer.sign(dagcbor.encode(unsigned))})


def refused(data: bytes, match: str, error: type[BasinError] = SchemaError) -> None:
    with pytest.raises(error, match=match) as info:
        Update.decode(data)
    assert_one_line(info.value)


def pack(values: list[int], bits: int) -> bytes:
    """The bit layout of docs/format.md, written independently of the module."""
    text = "".join(format(v, f"0{bits}b") for v in values)
    text += "0" * (-len(text) % 8)
    return bytes(int(text[i : i + 8], 2) for i in range(0, len(text), 8))


# -- round trips ---------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
@pytest.mark.parametrize("fisher", [True, False])
@pytest.mark.parametrize("beta", [None, (0.01,), (0.5, -0.25, 1e-3)])
def test_round_trip_is_exact(encoding, fisher, beta):
    update = make(encoding=encoding, fisher=fisher, beta=beta)
    data = update.encode()
    back = Update.decode(data)
    assert back == update
    assert back.encode() == data
    assert Update.decode(data, chart=CHART) == update
    node = dagcbor.decode(data)
    assert node["type"] == "basin/update" and node["encoding"] == encoding
    assert ("fisher" in node) == fisher and ("beta" in node) == (beta is not None)
    assert back.delta() == update.change.decode()
    assert back.scope == update.scope


def test_a_record_encodes_once_and_pickles_without_its_encodings():
    """The coordinator's decoding process pickles records to it: fields only, re-encoded alike."""
    update = make()
    data = update.encode()
    assert update.signing_bytes() is update.signing_bytes()  # computed once
    back = pickle.loads(pickle.dumps(update))
    assert not {"_node", "_signing_bytes"} & back.__dict__.keys()
    assert back == update and back.encode() == data
    back.verify_signature()
    # a copy with another field is encoded afresh, not from the original's cache
    other = dataclasses.replace(update, round=4)
    assert dagcbor.decode(other.signing_bytes())["round"] == 4


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
def test_change_is_the_top_k_quantised(encoding):
    x = gaussian(5)
    change = encode_change(x, encoding)
    enc = ENCODINGS[encoding]
    assert change.k == enc.default_k(D) == {"topk-q8": 52, "topk-q4": 64}[encoding]
    chosen = sorted(range(D), key=lambda i: -abs(x[i]))[: change.k]
    assert list(change.indices) == sorted(chosen)
    dense = change.decode()
    assert len(dense) == D and all(dense[i] == 0.0 for i in set(range(D)) - set(chosen))
    step = max(abs(x[i]) for i in chosen) / enc.top
    for i in chosen:
        assert abs(dense[i] - x[i]) <= step / 2 * (1 + 1e-9)
    assert max(abs(c) for c in change.codes) == enc.top


def test_the_bit_layout_of_the_worked_example():
    """docs/format.md, "Update records": d = 16, indices 1, 5, 14 at 4 bits."""
    change = Change("topk-q8", 16, (1, 5, 14), (127, -3, 64), 0.5)
    node = change.to_node()
    assert node["indices"] == bytes([0x15, 0xE0]) == pack([1, 5, 14], 4)
    assert node["values"] == bytes([0x7F, 0xFD, 0x40])
    q4 = Change("topk-q4", 16, (1, 5, 14), (7, -3, 2), 0.5)
    assert q4.to_node()["values"] == bytes([0x7D, 0x20])
    assert q4.decode()[5] == -1.5 and q4.values() == [3.5, -1.5, 1.0]
    assert SentFisher.encode([4.0, 1.0, 0.0]).codes == bytes([0xFB, 0x00])
    assert SentFisher.encode([4.0, 1.0, 0.0]).decode(3) == [4.0, 1.0, 0.0]


@pytest.mark.parametrize("k", [0, 1, 2, 3, 7, 64, 80])
def test_every_k_round_trips_odd_counts_too(k):
    for encoding in ENCODINGS:
        update = make(encoding=encoding, k=k, fisher=k > 0, chart=Chart(dim=D, seed=1))
        assert Update.decode(update.encode()) == update
        assert update.change.k <= k


def test_a_zero_change_sends_nothing():
    for x in ([0.0] * D, [5e-324] * D):
        change = encode_change(x)
        assert change.k == 0 and change.scale == 0.0 and change.decode() == [0.0] * D
    update = Update(CHART, PARENT, 0, 0, encode_change([0.0] * D), 1, SIGNER.public_key)
    update = dataclasses.replace(update, beta=(0.5,)).signed(SIGNER.sign)
    assert Update.decode(update.encode()) == update


def test_changes_up_to_the_largest_coordinate_a_basin_stores_and_no_larger():
    """A change past float24's largest value could never be applied to a basin: refused when
    encoded and when decoded, so no valid update can make a round's result unstorable alone."""
    for encoding in ENCODINGS:
        change = encode_change([FLOAT24_MAX, -1e38, 1.0], encoding, 2)
        assert change.codes[0] == ENCODINGS[encoding].top
        assert all(abs(v) <= FLOAT24_MAX for v in change.decode())
        for huge in (math.nextafter(FLOAT24_MAX, math.inf), 1.7976931348623157e308, -1e39):
            with pytest.raises(SchemaError, match="beyond the largest coordinate") as info:
                encode_change([huge, 1.0], encoding, 2)
            assert_one_line(info.value)


def test_ties_go_to_the_lower_index_and_encoding_is_deterministic():
    change = encode_change([1.0] * 8 + [-1.0] * 8, k=5)
    assert change.indices == (0, 1, 2, 3, 4)
    x = gaussian(9)
    assert encode_change(x) == encode_change(list(x))


# -- size ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
def test_a_default_update_at_d_1024_fits_in_600_bytes(encoding):
    assert update_limit(CHART) == MAX_UPDATE_BYTES == 600
    typical = make(encoding=encoding)
    assert len(typical.encode()) <= 500
    # the worst a default update can be: the largest seed and integers, β of 8 coefficients
    worst = make(
        Chart(dim=D, seed=2**64 - 1),
        encoding,
        round=BIG,
        seq=BIG,
        samples=BIG,
        beta=(0.1,) * 8,
    )
    assert len(worst.encode()) <= 590
    assert Update.decode(worst.encode()) == worst


@pytest.mark.parametrize("dim", [1, 2, 3, 7, 64, 1000, 1024, 1025, 2047, 2049, 4096, 65536])
def test_default_updates_fit_the_limit_at_every_dimension(dim):
    chart = Chart(dim=dim, seed=2**64 - 1)
    for encoding in ENCODINGS:
        update = make(chart, encoding, round=BIG, seq=BIG, samples=BIG, beta=(0.1,) * 8)
        assert len(update.encode()) <= update_limit(chart)


def _widest(update: Update, encoding: str, k: int) -> Update:
    """`update` sending k coordinates at full scale (no code rounds to 0), Fisher if it had."""
    change = encode_change([1.0] * update.chart.dim, encoding, k)
    fisher = SentFisher.encode([1.0] * change.k) if update.fisher and change.k else None
    return dataclasses.replace(update, change=change, fisher=fisher, signature=b"")


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
@pytest.mark.parametrize(
    "chart, fields",
    [
        (CHART, dict(fisher=False, beta=None)),  # what hive senders send
        (CHART, {}),  # Fisher values and a change of β
        (Chart(dim=D, seed=2**64 - 1), dict(round=BIG, seq=BIG, samples=BIG, beta=(0.1,) * 8)),
        (Chart(dim=2048), dict(fisher=False, beta=None)),  # 1,200 bytes at d = 2048
        (Chart(dim=D, exclude=("*pooler*", "*word_embeddings*")), dict(fisher=False, beta=None)),
    ],
)
def test_fitting_k_fills_600_bytes_and_no_more(encoding, chart, fields):
    update = make(chart, encoding, **fields)
    k = fitting_k(update, encoding)
    budget = max(600, -(-600 * chart.dim // 1024))
    assert k > ENCODINGS[encoding].default_k(chart.dim)  # the fixed default leaves bytes unused
    assert len(_widest(update, encoding, k).signed(SIGNER.sign).encode()) <= budget
    try:  # one more does not fit: over the budget, or over the limit itself
        assert len(_widest(update, encoding, k + 1).signing_bytes()) + 76 > budget
    except SchemaError as exc:
        assert f"the limit at d={chart.dim} is {budget}" in str(exc)


def test_fitting_k_falls_back_to_the_limit_when_the_mask_leaves_no_room():
    chart = Chart(dim=D, exclude=tuple(f"{i:02d}" + "x" * 126 for i in range(16)))
    update = make(chart, fisher=False, beta=None)
    k = fitting_k(update)
    assert k > 0
    assert len(_widest(update, DEFAULT_ENCODING, k).signed(SIGNER.sign).encode()) <= (
        update_limit(chart)
    )
    assert fitting_k(make(Chart(dim=7), fisher=False, beta=None)) == 7  # every coordinate fits


def test_next_update_sends_as_many_coordinates_as_fit_and_keeps_the_rest():
    compressor = Compressor(D)
    delta = gaussian(5)
    fields = dict(chart=CHART, parent=PARENT, round=1, seq=2, samples=3, author=SIGNER.public_key)
    update = next_update(compressor, delta, **fields)
    template = Update(change=encode_change([0.0] * D), **fields)
    assert update.change.k == fitting_k(template) > compressor.k
    assert len(update.signed(SIGNER.sign).encode()) <= 600
    sent = update.delta()
    assert all(
        s + r == pytest.approx(d, abs=1e-12)
        for s, r, d in zip(sent, compressor.residual, delta, strict=True)
    )
    assert next_update(Compressor(D), delta, k=10, **fields).change.k == 10


def test_limits_scale_with_d_and_count_the_mask():
    assert update_limit(Chart(dim=64)) == 600
    assert update_limit(Chart(dim=2048)) == 1200
    assert update_limit(Chart(dim=1025)) == 601
    masked = Chart(dim=D, exclude=("*word_embeddings*",))
    assert update_limit(masked) == 600 + len(dagcbor.encode({"exclude": ["*word_embeddings*"]})) - 1
    assert len(make(masked).encode()) <= update_limit(masked)


def test_an_oversized_update_is_refused_when_made_and_when_read():
    with pytest.raises(
        SchemaError, match="update record is [0-9]+ bytes; the limit at d=1024 is 600"
    ):
        make(k=200)
    big = Update.__new__(Update)  # bypass the writer's check to produce the block anyway
    fields = dataclasses.asdict(make(k=52)) | {"change": encode_change(gaussian(0), k=200)}
    for name in ("chart", "parent", "round", "seq", "change", "samples", "author", "fisher"):
        object.__setattr__(big, name, fields[name] if name != "chart" else CHART)
    object.__setattr__(big, "fisher", None)
    object.__setattr__(big, "beta", None)
    object.__setattr__(big, "signature", SIGNER.sign(big.signing_bytes()))
    refused(big.encode(), "update record is [0-9]+ bytes; the limit at d=1024 is 600")
    huge = dagcbor.encode({"type": "basin/update", "pad": bytes(50_000)})
    refused(huge, "update record is 500[0-9]+ bytes; the limit is")
    with pytest.raises(SchemaError, match="limit at d=1024 is 600"):
        Update.decode(bytes(601), chart=CHART)


# -- signatures ----------------------------------------------------------------------------------


def test_a_tampered_update_is_refused():
    for field, value in [("seq", 8), ("round", 4), ("samples", 33), ("beta", [0.02])]:
        node = node_of(make())
        node[field] = value  # changed after signing: a replay with a higher seq, say
        refused(dagcbor.encode(node), "bad signature", SignatureError)
    node = node_of(make())
    node["delta"]["scale"] *= 2  # the change itself
    refused(dagcbor.encode(node), "bad signature", SignatureError)


def test_an_update_signed_by_someone_else_is_refused():
    update = make()
    forged = dataclasses.replace(update, signature=MALLORY.sign(update.signing_bytes()))
    refused(forged.encode(), "bad signature", SignatureError)
    # claiming mallory as author with alice's signature fails the same way
    claimed = dataclasses.replace(update, author=MALLORY.public_key)
    refused(claimed.encode(), "bad signature", SignatureError)


def test_an_unsigned_update_does_not_encode():
    update = Update(CHART, PARENT, 0, 0, encode_change(gaussian(1)), 1, SIGNER.public_key)
    with pytest.raises(SchemaError, match="not signed"):
        update.encode()


# -- strictness: every field -----------------------------------------------------------------------


def edit(path: str, value: Any, base: Update | None = None) -> bytes:
    node = node_of(base or make())
    where = node
    *parents, last = path.split(".")
    for key in parents:
        where = where[key]
    if value is DELETE:
        del where[last]
    else:
        where[last] = value
    return dagcbor.encode(node) if path == "signature" else resigned(node)


DELETE = object()
OTHER_CID = CID.for_block(b"x", RAW)

BAD_FIELDS = [
    ("type", "basin/heads", "is a 'basin/heads', not a 'basin/update'"),
    ("version", 2, "version 2 is not supported"),
    ("version", 1.0, "version 1.0 is not supported"),
    ("extra", 1, "unknown field 'extra'"),
    ("seq", DELETE, "lacks field 'seq'"),
    ("chart", {"kind": "srht", "seed": 0}, "chart lacks field 'dim'"),
    ("chart.dim", 0, "chart dimension 0 is outside"),
    ("parent", OTHER_CID, "is not a commit's CID"),
    ("parent", CID.for_block(b"{}", DAG_JSON), "is not a commit's CID"),
    ("parent", b"\x01" * 36, "update parent must be CID, not bytes"),
    ("round", -1, "update round -1 is out of range"),
    ("round", 2**63, "update round .* is out of range"),
    ("round", 1.0, "update round must be int, not float"),
    ("round", True, "update round must be int, not bool"),
    ("seq", -1, "update seq -1 is out of range"),
    ("seq", "7", "update seq must be int, not str"),
    ("samples", 0, "update samples 0 must be"),
    ("samples", -5, "update samples -5 must be"),
    ("samples", None, "update samples must be int, not NoneType"),
    ("encoding", "topk-q16", "unknown update encoding 'topk-q16'"),
    ("encoding", 8, "update encoding must be str, not int"),
    ("encoding", "topk-q4", "value codes must reach|padding bits|need"),
    ("author", bytes(31), "32-byte Ed25519 public key"),
    ("author", "alice", "update author must be bytes, not str"),
    ("signature", bytes(63), "signature has 63 bytes, not 64"),
    ("delta", [], "update delta must be a map, not list"),
    ("delta.extra", b"", "update delta has unknown field 'extra'"),
    ("delta.scale", DELETE, "update delta lacks field 'scale'"),
    ("delta.scale", 1, "update scale must be float, not int"),
    ("delta.scale", -0.5, "update scale -0.5 must be > 0"),
    ("delta.scale", 0.0, "update scale 0.0 must be > 0"),
    ("delta.scale", 1e307, "update scale 1e\\+307 is too large: its largest change, 127 times"),
    ("delta.scale", 2.7e36, "127 times it, is beyond the largest coordinate a basin stores"),
    ("delta.values", "x", "update values must be bytes, not str"),
    ("delta.values", b"", "update indices have 65 bytes; 0 of 10 bits need 0"),
    ("delta.indices", b"", "update indices have 0 bytes; 52 of 10 bits need 65"),
    ("delta.indices", bytes(66), "update indices have 66 bytes; 52 of 10 bits need 65"),
    ("fisher", {"max": 1.0}, "update fisher lacks field 'codes'"),
    ("fisher.max", 0.0, "update fisher max 0.0 must be > 0"),
    ("fisher.max", -1.0, "update fisher max -1.0 must be > 0"),
    ("fisher.max", 2, "update fisher max must be float, not int"),
    ("fisher.codes", bytes(26), "never reach 15"),
    ("fisher.codes", bytes(25), "fisher codes have 25 bytes; 52 of 4 bits need 26"),
    ("fisher.codes", [1], "update fisher codes must be bytes, not list"),
    ("beta", [], "update beta has 0 coefficients; 1..8 allowed"),
    ("beta", [0.1] * 9, "update beta has 9 coefficients"),
    ("beta", [0.0, -0.0], "update beta change is all zero: leave it out"),
    ("beta", [1], "update beta change must be float, not int"),
    ("beta", 0.1, "update beta must be list, not float"),
    ("links", [], "update has 0 links; 1..8 allowed"),
    ("links", [{"a": f"a{k}", "b": "b", "w": 0.1} for k in range(9)], "update has 9 links"),
    ("links", [{"a": "c", "b": "d", "w": 0.1}, {"a": "a", "b": "b", "w": 0.1}], "increasing"),
    ("links", [{"a": "a", "b": "b", "w": 0.1}] * 2, "distinct pairs in increasing"),
    ("links", [{"a": "b", "b": "a", "w": 0.1}], "names must be distinct, sorted"),
    ("links", [{"a": "a", "b": "b", "w": 1.5}], "strength 1.5 is outside"),
    ("links", [{"a": "a", "b": "b"}], "entanglement lacks field 'w'"),
    ("links", {"a": "a"}, "update links must be list, not dict"),
]


def test_links_round_trip_in_pair_order():
    links = (Entanglement("a", "b", -0.25), Entanglement("a", "c", 0.5))
    update = make(links=links)
    back = Update.decode(update.encode())
    assert back.links == links and back == update
    assert dagcbor.decode(update.encode())["links"] == [e.to_node() for e in links]


@pytest.mark.parametrize(("path", "value", "message"), BAD_FIELDS)
def test_every_bad_field_is_refused_in_one_line(path, value, message):
    refused(edit(path, value), message)


def test_non_finite_values_cannot_even_be_encoded():
    # DAG-CBOR refuses NaN and infinities before the schema sees them; the schema refuses them
    # too, for records built in Python
    node = node_of(make())
    node["delta"]["scale"] = math.inf
    with pytest.raises(BasinError):
        resigned(node)
    for kw, message in [
        ({"beta": (math.nan,)}, "update beta change is nan"),
        ({"fisher": SentFisher(math.inf, bytes(26))}, "update fisher max is inf"),
    ]:
        with pytest.raises(SchemaError, match=message) as info:
            dataclasses.replace(make(), **kw)
        assert_one_line(info.value)
    with pytest.raises(SchemaError, match="update scale is inf"):
        Change("topk-q8", D, (1,), (127,), math.inf)


def codes_node(codes: list[int], indices: list[int], bits: int = 8, dim: int = D) -> dict:
    return {
        "indices": pack(indices, index_bits(dim)),
        "values": pack([c & ((1 << bits) - 1) for c in codes], bits),
        "scale": 0.5,
    }


@pytest.mark.parametrize(
    ("indices", "message"),
    [
        ([1, 5, 5], r"strictly increasing \(5 after 5\)"),
        ([5, 1, 9], r"strictly increasing \(1 after 5\)"),
        ([0, 0, 0], r"strictly increasing \(0 after 0\)"),
        ([1, 5, 1000], "update index 1000 is outside the chart"),
    ],
)
def test_indices_unsorted_duplicated_or_out_of_range_are_refused(indices, message):
    chart = Chart(dim=1000)  # 10-bit indices hold up to 1023
    base = make(chart, fisher=False)
    refused(edit("delta", codes_node([127, -3, 64], indices, dim=1000), base), message)


def test_a_change_for_another_dimension_is_refused():
    base = make(fisher=False)
    for dim, message in [
        (512, "update indices have 65 bytes; 52 of 9 bits need 59"),
        (2048, "update indices have 65 bytes; 52 of 11 bits need 72"),
        (1000, "outside the chart|strictly increasing"),
    ]:
        node = node_of(base)
        node["chart"]["dim"] = dim
        if dim == 1000:  # same index width: the largest index must still be in range
            node["delta"] = codes_node([127], [1010])
        refused(resigned(node), message)
    with pytest.raises(SchemaError, match="update change has 1024 coordinates; its chart has 64"):
        Update(Chart(dim=64), PARENT, 0, 0, encode_change(gaussian(1)), 1, SIGNER.public_key)


def test_decoding_against_a_chart_refuses_any_other():
    update = make()
    with pytest.raises(SchemaError, match="update is in chart srht.d=1024, seed=0.*seed=7"):
        Update.decode(update.encode(), chart=Chart(dim=D, seed=7))


@pytest.mark.parametrize(
    ("encoding", "codes", "message"),
    [
        ("topk-q8", [127, 0, 5], "value code 0 is outside ±1..127"),
        ("topk-q8", [127, -128, 5], "value code -128 is outside ±1..127"),
        ("topk-q8", [126, -3, 5], "value codes must reach ±127 .*the largest is 126"),
        ("topk-q4", [7, -8, 5], "value code -8 is outside ±1..7"),
        ("topk-q4", [6, -3, 5], "value codes must reach ±7"),
        ("topk-q4", [7, 0, 5], "value code 0 is outside"),
    ],
)
def test_value_codes_must_be_canonical(encoding, codes, message):
    bits = ENCODINGS[encoding].bits
    base = make(encoding=encoding, fisher=False)
    node = node_of(base)
    node["delta"] = codes_node(codes, [1, 5, 9], bits)
    refused(resigned(node), message)


@given(st.integers(1, 16), st.data())
def test_bit_packing_is_most_significant_bit_first_and_reads_back(bits, data):
    """_pack against its definition (the fields as one big-endian integer, zero-padded to whole
    bytes), and _unpack its inverse."""
    values = data.draw(st.lists(st.integers(0, (1 << bits) - 1), max_size=300))
    nbytes = (bits * len(values) + 7) // 8
    number = 0
    for v in values:
        number = number << bits | v
    expected = (number << (8 * nbytes - bits * len(values))).to_bytes(nbytes, "big")
    assert _pack(values, bits) == expected
    assert _unpack(expected, len(values), bits, "fields") == values


def test_padding_bits_must_be_zero():
    base = make(encoding="topk-q4", fisher=False, k=3)
    node = node_of(base)
    assert len(node["delta"]["values"]) == 2 and node["delta"]["values"][-1] & 0xF == 0
    indices = node["delta"]["indices"]  # 30 bits in 4 bytes: 2 padding bits
    node["delta"]["indices"] = indices[:-1] + bytes([indices[-1] | 1])
    refused(resigned(node), "update indices have non-zero padding bits")
    with_fisher = node_of(make(encoding="topk-q4", k=3))
    codes = with_fisher["fisher"]["codes"]
    with_fisher["fisher"]["codes"] = codes[:-1] + bytes([codes[-1] | 1])
    refused(resigned(with_fisher), "update fisher codes have non-zero padding bits")


def test_an_empty_change_must_be_exactly_empty():
    empty = Update(CHART, PARENT, 0, 0, encode_change([0.0] * D), 1, SIGNER.public_key)
    empty = dataclasses.replace(empty, beta=(0.5,)).signed(SIGNER.sign)
    for scale in (1.0, -0.0):
        refused(edit("delta.scale", scale, empty), "sends no coordinate but has scale")
    refused(edit("fisher", {"max": 1.0, "codes": b""}, empty), "no coordinate but has Fisher")


def test_non_canonical_encodings_are_refused():
    data = make().encode()
    # the same map written with a non-minimal head for `round` (3 as 0x18 0x03)
    key = dagcbor.encode("round")
    at = data.index(key) + len(key)
    assert data[at] == 0x03
    with pytest.raises(BasinError) as info:
        Update.decode(data[:at] + b"\x18\x03" + data[at + 1 :])
    assert_one_line(info.value)


def test_bytes_that_are_not_canonical_dag_cbor_are_refused_with_the_codecs_reason():
    """cbor2 reads much that DAG-CBOR forbids; `decode` refuses it all, and says what is wrong
    as the codec does (it re-encodes what it read only where the record's own encoding does not
    give back the bytes)."""
    data = make().encode()
    at = data.index(dagcbor.encode("round")) + len(dagcbor.encode("round"))
    head = bytes([data[0] + 1])  # one more entry in the map
    f = data.index(b"\xfb")  # the first float, 64-bit
    variants = {
        "non-minimal integer": data[:at] + b"\x18\x03" + data[at + 1 :],
        "trailing byte": data + b"\x00",
        "duplicate key": head + data[1:] + dagcbor.encode("round") + b"\x03",
        "short float": data[:f] + b"\xf9\x3c\x00" + data[f + 9 :],
    }
    for name, bad in variants.items():
        with pytest.raises(BasinError) as codec:
            dagcbor.decode(bad)
        with pytest.raises(BasinError) as info:
            Update.decode(bad)
        assert str(info.value) == str(codec.value), name
        assert_one_line(info.value)


# -- fuzzing -------------------------------------------------------------------------------------


@st.composite
def updates(draw: st.DrawFn) -> Update:
    dim = draw(st.sampled_from([1, 2, 5, 16, 100, 1024]))
    encoding = draw(st.sampled_from(sorted(ENCODINGS)))
    values = st.floats(-1e6, 1e6, allow_subnormal=False)
    if dim <= 100:
        delta = draw(st.lists(values, min_size=dim, max_size=dim))
    else:  # a long list would overrun hypothesis's buffer
        spread = draw(st.floats(1e-30, 1e30))
        delta = [spread * v for v in gaussian(draw(st.integers(0, 2**32)), dim)]
    change = encode_change(delta, encoding, draw(st.integers(0, min(dim, 40))))
    fisher = None
    if change.k and draw(st.booleans()):
        raw = draw(st.lists(st.floats(0, 1e6), min_size=change.k, max_size=change.k))
        if max(raw) > 0:
            fisher = SentFisher.encode(raw)
    beta = draw(st.none() | st.lists(values, min_size=1, max_size=8).map(tuple))
    if beta is not None and not any(beta):
        beta = None
    ints = st.integers(0, BIG)
    return Update(
        chart=Chart(dim=dim, seed=draw(st.integers(0, 2**64 - 1))),
        parent=PARENT,
        round=draw(ints),
        seq=draw(ints),
        change=change,
        samples=draw(st.integers(1, BIG)),
        author=SIGNER.public_key,
        fisher=fisher,
        beta=beta,
    ).signed(SIGNER.sign)


def check(data: bytes) -> None:
    try:
        record = Update.decode(data)
    except BasinError as exc:
        assert_one_line(exc)
        event(f"refused: {type(exc).__name__}")
        return
    event("accepted")
    assert record.encode() == data
    assert Update.from_node(dagcbor.decode(data)) == record


@given(updates())
def test_generated_updates_round_trip(update: Update) -> None:
    data = update.encode()
    assert len(data) <= update_limit(update.chart)
    back = Update.decode(data)
    assert back == update and back.encode() == data
    dense = back.delta()
    assert len(dense) == update.chart.dim
    assert sum(1 for v in dense if v) == update.change.k


@given(mutants(updates().map(Update.encode), CBOR_FRAGMENTS))
def test_mutated_update_blocks(data: bytes) -> None:
    check(data)


@given(node_mutants(updates().map(lambda u: dagcbor.decode(u.encode()))))
def test_mutated_update_nodes(node: Any) -> None:
    try:
        record = Update.from_node(node)
    except BasinError as exc:
        assert_one_line(exc)
    else:
        assert Update.from_node(dagcbor.decode(record.encode())) == record
    try:
        data = resigned(node) if isinstance(node, dict) else dagcbor.encode(node)
    except BasinError as exc:
        assert_one_line(exc)
        return
    check(data)


# -- error feedback ------------------------------------------------------------------------------

DELTAS = st.lists(st.lists(st.floats(-1e3, 1e3), min_size=32, max_size=32), min_size=1, max_size=12)


@given(DELTAS, st.sampled_from(sorted(ENCODINGS)), st.integers(0, 32))
def test_error_feedback_loses_nothing(deltas, encoding, k):
    compressor = Compressor(32, encoding, k)
    sent = [0.0] * 32
    for delta in deltas:
        change = compressor.compress(delta)
        assert change.k <= k
        sent = [s + v for s, v in zip(sent, change.decode(), strict=True)]
    for i in range(32):
        total = math.fsum(delta[i] for delta in deltas)
        scale = math.fsum(abs(delta[i]) for delta in deltas) + 1.0
        assert math.isclose(sent[i] + compressor.residual[i], total, abs_tol=1e-9 * scale)


def test_error_feedback_is_deterministic_and_beats_none():
    a, b = Compressor(D), Compressor(D)
    plain_sum, fed_sum, total = [0.0] * D, [0.0] * D, [0.0] * D
    for r in range(20):
        x = gaussian(100 + r)
        first, second = a.compress(x), b.compress(list(x))
        assert first == second
        total = [t + v for t, v in zip(total, x, strict=True)]
        fed_sum = [s + v for s, v in zip(fed_sum, first.decode(), strict=True)]
        plain_sum = [s + v for s, v in zip(plain_sum, encode_change(x).decode(), strict=True)]

    def error(v):
        return math.dist(v, total) / math.hypot(*total)

    assert error(fed_sum) < 0.45 < 0.8 < error(plain_sum)
    a.reset()
    assert a.residual == [0.0] * D


def test_the_compressor_refuses_bad_input():
    compressor = Compressor(8)
    assert compressor.k == 8  # the default k, capped at d
    for delta, message in [
        ([0.0] * 7, "change has 7 coordinates; the chart has 8"),
        ([math.nan] + [0.0] * 7, "change of coordinate 0 plus its residual is nan"),
    ]:
        with pytest.raises(SchemaError, match=message) as info:
            compressor.compress(delta)
        assert_one_line(info.value)
    compressor = Compressor(4, k=1)
    compressor.compress([3e38, 3e38, 0.0, 0.0])  # the second is kept back as a residual
    with pytest.raises(SchemaError, match="coordinate 1 plus its residual is 6e\\+38: beyond"):
        compressor.compress([0.0, 3e38, 0.0, 0.0])
    with pytest.raises(SchemaError, match="change of coordinate 1 plus its residual is inf"):
        compressor.compress([0.0, math.inf, 0.0, 0.0])
    for args, message in [
        ((0,), "dimension 0 is outside"),
        ((8, "topk-q2"), "unknown update encoding 'topk-q2'"),
        ((8, "topk-q8", 9), "k 9 is outside 0..8"),
    ]:
        with pytest.raises(SchemaError, match=message):
            Compressor(*args)
    with pytest.raises(SchemaError, match="change of coordinate 1 is inf"):
        encode_change([0.0, math.inf])


# -- the documentation ---------------------------------------------------------------------------


def test_the_documented_example_and_sizes_are_what_the_code_writes():
    from pathlib import Path

    from basinvcs.codec import dagjson

    docs = (Path(__file__).resolve().parents[2] / "docs" / "format.md").read_text()
    section = docs.split("## Update records (the hive)", 1)[1].split("\n## ", 1)[0]
    shown = next(line for line in section.splitlines() if line.startswith('{"author"'))
    signer = Identity(bytes(range(32)), "docs")
    delta = [0.0] * 16
    delta[1], delta[5], delta[14] = 1.0, -0.02, 0.5
    change = encode_change(delta, k=3)
    assert change.codes == (127, -3, 64) and change.scale == 1.0 / 127
    fisher = SentFisher.encode([4.0, 1.0, 0.0])
    update = Update(Chart(dim=16), PARENT, 3, 7, change, 32, signer.public_key, fisher, (0.01,))
    data = update.signed(signer.sign).encode()
    text = dagjson.encode(dagcbor.decode(data))
    assert (text if isinstance(text, str) else text.decode()) == shown
    prose = " ".join(section.split())
    assert f"it is {len(data)} bytes of DAG-CBOR" in prose
    masked = Chart(dim=D, exclude=("*word_embeddings*",))
    assert f"{update_limit(masked) - 600} bytes for `*word_embeddings*`" in prose
    worst, typical = {}, {}
    for e in ENCODINGS:
        worst[e] = make(
            Chart(dim=D, seed=2**64 - 1), e, round=BIG, seq=BIG, samples=BIG, beta=(0.1,) * 8
        )
        typical[e] = make(encoding=e)
    q8, q4 = (len(worst[e].encode()) for e in ("topk-q8", "topk-q4"))
    assert f"is {q8} bytes with `topk-q8` and {q4} with `topk-q4`" in prose
    q8, q4 = (len(typical[e].encode()) for e in ("topk-q8", "topk-q4"))
    assert f"one β coefficient) is {q8} and {q4}." in prose
