"""What a hive round did with each update, as its signed head says, written and read one way.

A round's head commit (the coordinator's or a replica's) names every update the round decided
on: `taken CID SIGNER` and `refused CID REASON` lines in its message while they fit in one
(16 KiB: about 140 updates), and past that a `RoundRecord` block the commit links, which lists
them all (the message then keeps the lines that fit, refusals first, for `basin log`). Either way
the head's signature covers each fate, so an edge that sent an update learns exactly what became
of it, however large the round; nothing is left to a guess or to an unsigned journal.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

from ..cid import CID
from ..identity import format_key
from ..objects import MAX_MESSAGE_BYTES, MAX_REASON_BYTES, Commit, RoundRecord

TAKEN = "taken"


def reason(why: str) -> str:
    """`why` as a record can hold it: one line of at most MAX_REASON_BYTES bytes."""
    line = " ".join(why.split()) or "refused"
    data = line.encode()
    if len(data) <= MAX_REASON_BYTES:
        return line
    return data[: MAX_REASON_BYTES - 3].decode(errors="ignore") + "..."


def round_parts(
    head: str, taken: Sequence[tuple[CID, bytes]], refused: Sequence[tuple[CID, str]]
) -> tuple[str, RoundRecord | None]:
    """The head commit's message (`head`, the round's summary line, then a line per update)
    and, when those lines do not all fit, the record that lists every one of them."""
    refused = [(cid, reason(why)) for cid, why in refused]
    taken_lines = [f"taken {cid} {format_key(key)}" for cid, key in taken]
    refused_lines = [f"refused {cid} {why}" for cid, why in refused]
    lines = [head, "", *taken_lines, *refused_lines]
    message = "\n".join(lines)
    if len(message.encode()) <= MAX_MESSAGE_BYTES:
        return message, None
    # too many for one message: every fate in the record, the lines that fit (refusals first,
    # they are the ones a reader looks for) kept above one that says where the rest are
    kept, size, budget = [head, ""], len(head.encode()) + 1, MAX_MESSAGE_BYTES - 100
    for line in itertools.chain(refused_lines, taken_lines):
        size += 1 + len(line.encode())
        if size > budget:
            break
        kept.append(line)
    more = len(taken) + len(refused) - (len(kept) - 2)
    kept.append(f"... and {more} more: every update is in the round record this commit links")
    return "\n".join(kept), RoundRecord(tuple(taken), tuple(refused))


def round_fates(commit: Commit, read_record: Callable[[CID], RoundRecord]) -> dict[str, str]:
    """Update CID (text) → "taken" or "refused: REASON", for every update the round's head
    `commit` names: from its record if it links one (`read_record`), else from its message."""
    if commit.record is not None:
        return {str(cid): fate for cid, fate in read_record(commit.record).fates().items()}
    fates = {}
    for line in commit.message.splitlines():
        word, _, rest = line.partition(" ")
        named, _, why = rest.partition(" ")
        if word in (TAKEN, "refused"):  # `named` as written: a reader checks it is a CID
            fates[named] = TAKEN if word == TAKEN else f"refused: {why}"
    return fates
