"""A round's fates in its head commit: message lines while they fit, a linked record past that,
read back the same way either way."""

from basinvcs.cid import CID
from basinvcs.hive.fates import reason, round_fates, round_parts
from basinvcs.identity import format_key
from basinvcs.objects import MAX_MESSAGE_BYTES, MAX_REASON_BYTES, Commit

KEY = b"\1" * 32


def updates(n: int, tag: str = "u") -> list[CID]:
    return [CID.for_block(f"{tag}{k}".encode()) for k in range(n)]


def commit(message: str, record=None) -> Commit:
    basin = CID.for_block(b"packet")
    return Commit(basin, (), KEY, 1, message, record=record)


def test_a_small_round_is_all_in_its_message():
    taken, refused = updates(3), updates(2, "r")
    message, record = round_parts(
        "hive round 4: 3 updates taken, 2 refused",
        [(c, KEY) for c in taken],
        [(c, "outlier") for c in refused],
    )
    assert record is None
    assert message.splitlines()[2] == f"taken {taken[0]} {format_key(KEY)}"
    fates = round_fates(commit(message), lambda cid: None)
    assert fates == {
        **{str(c): "taken" for c in taken},
        **{str(c): "refused: outlier" for c in refused},
    }


def test_a_large_round_links_a_record_of_every_update_and_keeps_refusals_in_its_message():
    taken, refused = updates(300), updates(50, "r")
    message, record = round_parts(
        "hive round 9: 300 updates taken, 50 refused",
        [(c, KEY) for c in taken],
        [(c, "signer no longer trusted") for c in refused],
    )
    assert len(message.encode()) <= MAX_MESSAGE_BYTES
    assert all(f"refused {c} " in message for c in refused)  # refusals first
    assert message.endswith("every update is in the round record this commit links")
    assert [c for c, _ in record.taken] == taken and [c for c, _ in record.refused] == refused
    cid = CID.for_block(record.encode())
    fates = round_fates(commit(message, cid), lambda c: record if c == cid else None)
    assert len(fates) == 350 and fates[str(refused[0])] == "refused: signer no longer trusted"


def test_reasons_are_cut_to_one_short_line():
    assert reason("a\nb\t c") == "a b c"
    assert reason("") == "refused"
    long = reason("é" * 100)  # 200 bytes: cut on a character, not inside one
    assert len(long.encode()) <= MAX_REASON_BYTES and long.endswith("...")
    assert long.encode().decode() == long


def test_lines_that_name_no_cid_are_read_as_written_for_the_reader_to_refuse():
    fates = round_fates(commit("hive round\n\ntaken \nrefused x why"), lambda c: None)
    assert fates == {"": "taken", "x": "refused: why"}
