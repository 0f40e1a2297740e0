import math

import pytest

from basinvcs.cid import CID
from basinvcs.codec import dagcbor
from basinvcs.errors import SchemaError
from basinvcs.objects import (
    MAX_REASON_BYTES,
    MAX_ROUND_ENTRIES,
    Basin,
    Chart,
    Commit,
    Entanglement,
    RoundRecord,
    SubstrateRef,
    packet_limit,
)
from tests.conftest import packet


def full_packet(dim: int = 1024) -> Basin:
    return Basin.create(
        Chart(seed=7, dim=dim),
        [math.sin(i) for i in range(dim)],
        fisher=[1.0 + i for i in range(dim)],
        beta=(1.0, -0.25, 0.125),
        labels=["general", "medicine", "cardiology"],
        entanglements=[
            Entanglement("cardiology", "medicine", 0.5),
            Entanglement("general", "medicine", -0.125),
        ],
        substrate=SubstrateRef("tiny", bytes(range(32)), 1_033_600),
    )


def test_a_full_packet_at_d1024_fits_in_4096_bytes_and_round_trips():
    basin = full_packet()
    data = basin.encode()
    assert len(data) <= 4096 == packet_limit(1024)
    back = Basin.decode(data)
    assert back == basin
    assert back.encode() == data


def test_packet_keeps_exactly_the_quantised_coordinates():
    basin = full_packet(64)
    assert Basin.decode(basin.encode()).z == basin.z
    assert all(abs(a - math.sin(i)) <= 2**-16 for i, a in enumerate(basin.z))


def test_oversized_packet_is_refused():
    basin = Basin.create(
        Chart(dim=1024),
        labels=[f"l{i}" for i in range(16)],
        fisher=[1.0] * 1024,
        entanglements=[
            Entanglement(f"a{i:02d}" + "x" * 50, f"b{i:02d}" + "y" * 50, 0.1) for i in range(20)
        ],
    )
    with pytest.raises(SchemaError, match="limit at d=1024 is 4096"):
        basin.encode()


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda n: n.update(type="basin/other"), "not a 'basin/packet'"),
        (lambda n: n.update(version=3), "version 3 is not supported"),
        (
            lambda n: n.update(chart={"kind": "gaussian", "seed": 0, "dim": 64}),
            "unknown chart kind",
        ),
        (lambda n: n.update(chart={"kind": "srht", "seed": 0, "dim": 0}), "dimension 0"),
        (lambda n: n.update(z=n["z"][:-3]), "63 coordinates but its chart has dimension 64"),
        (lambda n: n.update(z=b"\x7f\xc0\x00" + n["z"][3:]), "coordinate 0 is not finite"),
        (lambda n: n.update(beta=[]), "beta has 0 coefficients"),
        (lambda n: n.update(labels=["bad label"]), "bad label"),
        (lambda n: n.update(extra=1), "unknown field 'extra'"),
        (lambda n: n.pop("z"), "lacks field 'z'"),
        (lambda n: n.update(z=[1.0] * 64), "z must be bytes"),
        (lambda n: n.update(fisher={"max": 1.0, "codes": b"\0"}), "Fisher codes have 1 bytes"),
        (lambda n: n.update(entanglements=[{"a": "b", "b": "a", "w": 0.1}]), "distinct, sorted"),
        (lambda n: n.update(entanglements=[{"a": "a", "b": "b", "w": 2.0}]), "outside"),
    ],
)
def test_invalid_packets_are_refused_on_read(mutate, message):
    node = packet(3).to_node()
    mutate(node)
    with pytest.raises(SchemaError, match=message):
        Basin.decode(dagcbor.encode(node))


def test_chart_validation():
    with pytest.raises(SchemaError, match="unknown chart kind"):
        Chart(kind="nope")
    with pytest.raises(SchemaError, match="outside 0..2"):
        Chart(seed=-1)


def test_a_masked_chart_makes_a_version_2_packet_and_an_unmasked_one_stays_version_1():
    plain = packet(3)
    assert plain.to_node()["version"] == 1 and "exclude" not in plain.to_node()["chart"]
    chart = Chart.masked("srht", 7, 64, ["pooler.*", "*word_embeddings*", "pooler.*"])
    assert chart.exclude == ("*word_embeddings*", "pooler.*")  # sorted, repeats dropped
    assert chart.excludes("bert.embeddings.word_embeddings.weight")
    assert not chart.excludes("bert.encoder.layer.0.attention.self.query.weight")
    masked = Basin.create(chart, list(plain.z))
    node = masked.to_node()
    assert node["version"] == 2 and node["chart"]["exclude"] == ["*word_embeddings*", "pooler.*"]
    assert Basin.decode(masked.encode()) == masked


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda n: n.update(version=1), "version 1 does not match its chart"),
        (lambda n: n["chart"].update(exclude=[]), "chart exclude is empty"),
        (lambda n: n["chart"].update(exclude=["b", "a"]), "sorted and distinct"),
        (lambda n: n["chart"].update(exclude=["a b"]), "bad chart exclude pattern"),
        (lambda n: n["chart"].update(exclude=[f"p{i}" for i in range(17)]), "17 exclude"),
    ],
)
def test_bad_masks_are_refused_on_read(mutate, message):
    node = Basin.create(Chart.masked("srht", 7, 64, ["pooler.*"]), list(packet(3).z)).to_node()
    mutate(node)
    with pytest.raises(SchemaError, match=message):
        Basin.decode(dagcbor.encode(node))


def test_an_unmasked_packet_claiming_version_2_is_refused():
    node = packet(3).to_node()
    node["version"] = 2
    with pytest.raises(SchemaError, match="version 2 does not match its chart"):
        Basin.decode(dagcbor.encode(node))


def _commit(**kw) -> Commit:
    basin = CID.for_block(packet(1).encode())
    fields = dict(basin=basin, parents=(), author=b"\1" * 32, time=1, message="m")
    fields.update(kw)
    return Commit(**fields)


def test_commit_round_trip_and_signing_bytes_exclude_signature():
    c = _commit(metrics={"captured": 0.5}, specialize="medicine").signed(lambda b: b"\2" * 64)
    data = c.encode()
    back = Commit.decode(data)
    assert back == c
    assert b"signature" not in back.signing_bytes()
    assert dagcbor.decode(data)["signature"] == b"\2" * 64


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(author=b"\1" * 31), "32-byte"),
        (dict(metrics={"x": math.nan}), "finite"),
        (dict(time=-1), "out of range"),
        (dict(specialize="no spaces"), "bad label"),
    ],
)
def test_bad_commits_are_refused(kw, message):
    with pytest.raises(SchemaError, match=message):
        _commit(**kw)


def test_unsigned_commit_cannot_be_encoded():
    with pytest.raises(SchemaError, match="not signed"):
        _commit().encode()


@pytest.mark.parametrize(
    "mutate",
    [
        lambda n: n.update(version=1.0),
        lambda n: n.update(version=True),
        lambda n: n.update(specialize=None),
        lambda n: n.update(time=float(n["time"])),
    ],
)
def test_a_signed_commit_cannot_be_re_encoded_under_another_cid(mutate):
    from basinvcs.identity import load_or_create_identity

    ident, _ = load_or_create_identity("ada")
    c = _commit(author=ident.public_key).signed(ident.sign)
    node = c.to_node()
    mutate(node)
    with pytest.raises(SchemaError):
        Commit.decode(dagcbor.encode(node))


def test_packet_variants_that_re_encode_differently_are_refused():
    node = packet(2).to_node()
    node["version"] = True
    with pytest.raises(SchemaError, match="version True is not supported"):
        Basin.decode(dagcbor.encode(node))


def test_a_packet_passed_as_a_commit_is_named_as_such():
    with pytest.raises(SchemaError, match="block is a 'basin/packet', not a 'basin/commit'"):
        Commit.decode(packet(1).encode())


def test_labels_are_matched_whole():
    from basinvcs.objects import check_label

    with pytest.raises(SchemaError, match="bad label"):
        check_label("general\n")


def test_fisher_must_match_the_chart():
    with pytest.raises(SchemaError, match="Fisher diagonal has 7 values; the chart has 8"):
        Basin.create(Chart(dim=8), fisher=[1.0] * 7)


def test_substrate_fingerprint_is_32_bytes():
    with pytest.raises(SchemaError, match="32 bytes"):
        SubstrateRef("tiny", b"short", 1)


def test_substrate_params_must_be_a_positive_int():
    with pytest.raises(SchemaError, match="must be positive"):
        SubstrateRef("tiny", bytes(32), 0)
    with pytest.raises(SchemaError, match="params must be int"):
        SubstrateRef("tiny", bytes(32), 1.0)


UPDATES = [CID.for_block(bytes([k])) for k in range(4)]


def test_a_round_record_round_trips_and_a_commit_links_it():
    record = RoundRecord(
        ((UPDATES[0], b"\1" * 32), (UPDATES[1], b"\2" * 32)), ((UPDATES[2], "outlier"),)
    )
    data = record.encode()
    assert RoundRecord.decode(data) == record
    assert dagcbor.decode(data)["taken"][0]["update"] == bytes(UPDATES[0])  # bytes, not a link
    assert record.fates() == {
        UPDATES[0]: "taken",
        UPDATES[1]: "taken",
        UPDATES[2]: "refused: outlier",
    }
    c = _commit(record=CID.for_block(data)).signed(lambda b: b"\2" * 64)
    assert c.attached == (c.basin, CID.for_block(data))
    assert Commit.decode(c.encode()) == c == Commit.decode(c.encode(), trusted=True)
    assert _commit().attached == (_commit().basin,)


@pytest.mark.parametrize(
    "taken, refused, message",
    [
        (((UPDATES[0], b"\1" * 31),), (), "32-byte"),
        ((), ((UPDATES[0], ""),), "one line"),
        ((), ((UPDATES[0], "two\nlines"),), "one line"),
        ((), ((UPDATES[0], "x" * (MAX_REASON_BYTES + 1)),), "one line"),
        (((UPDATES[0], b"\1" * 32),), ((UPDATES[0], "outlier"),), "twice"),
        (((UPDATES[0], b"\1" * 32),) * (MAX_ROUND_ENTRIES + 1), (), "over 5,000"),
    ],
)
def test_bad_round_records_are_refused(taken, refused, message):
    with pytest.raises(SchemaError, match=message):
        RoundRecord(taken, refused)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda n: n.update(version=1.0), "version"),
        (lambda n: n.update(extra=1), "unknown field"),
        (lambda n: n["taken"][0].update(update=b"\1\2"), "not a CID"),
        (lambda n: n["taken"][0].update(update=UPDATES[0]), "must be bytes"),
        (lambda n: n["refused"][0].update(reason=b"outlier"), "must be str"),
        (lambda n: n["refused"][0].pop("reason"), "lacks field"),
        (lambda n: n.update(type="basin/commit"), "not a 'basin/round'"),
    ],
)
def test_a_round_record_block_is_read_strictly(mutate, message):
    node = RoundRecord(((UPDATES[0], b"\1" * 32),), ((UPDATES[1], "outlier"),)).to_node()
    mutate(node)
    with pytest.raises(SchemaError, match=message):
        RoundRecord.decode(dagcbor.encode(node))


def test_a_commit_whose_record_is_not_a_link_is_refused():
    node = _commit().signed(lambda b: b"\2" * 64).to_node()
    node["record"] = "bafy"
    with pytest.raises(SchemaError, match="commit record"):
        Commit.decode(dagcbor.encode(node))


def test_the_largest_round_record_fits_in_a_block():
    """MAX_ROUND_ENTRIES refusals with the longest reasons: under the 1 MiB block limit (a
    coordinator writes one per round it closes, whatever the round held)."""
    from basinvcs.store.base import MAX_BLOCK_SIZE

    refused = tuple(
        (CID.for_block(k.to_bytes(4, "big")), "x" * MAX_REASON_BYTES)
        for k in range(MAX_ROUND_ENTRIES)
    )
    assert len(RoundRecord((), refused).encode()) < MAX_BLOCK_SIZE
