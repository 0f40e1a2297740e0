"""Pages of a hive's history, for the edges that join or sync (`GET /history/CID?have=CID`).

A coordinator makes a commit per round, so a hive that has run a day at a round a second holds
86,400 commits and as many packets; block by block that is two requests a round. A page is a
CAR of up to HISTORY_PAGE bytes of blocks: the commits below the one asked for, newest first,
each followed by its packet, down to the commit the asker holds (`have`). The asker checks every
block as any fetch does (edge.history_source, ingest.write_history) and asks again from where a
page ends. The server reads pages in a thread of its own (server.Pages), never in the
coordinator's.
"""

from __future__ import annotations

from ..carfile import history_groups
from ..cid import CID
from ..codec.car import car_bytes
from ..errors import BasinError, BlockNotFound
from ..repository import Repository
from .coordinator import Refused

HISTORY_PAGE = 3 << 20  # bytes of blocks in one page (an edge reads answers of up to 4 MiB)
PAGE_COMMITS = 1000  # commits in one page at most: the walk looks each up, never the whole index


def page(repo: Repository, text: str, have: str | None = None) -> bytes:
    """A page of commit `text`'s history as a CAR rooted at that commit: at least the commit
    itself, then more while the page holds at most HISTORY_PAGE bytes of blocks and PAGE_COMMITS
    commits, stopping above the commit `have`. Its cost is the page's, not the history's (a walk
    without a limit reads the whole commit index: 0.45 s and 149 MiB at 87,000 commits).
    Refused 400 for a malformed CID or a block that is not a commit of this history, 404 for a
    CID not held."""
    try:
        head = CID.parse(text)
        stop = CID.parse(have) if have is not None else None
        repo.read_commit(head)
    except BlockNotFound as exc:
        raise Refused(404, str(exc)) from None
    except BasinError as exc:  # not a CID, or not a commit of this history
        raise Refused(400, str(exc)) from None
    blocks: list[tuple[CID, bytes]] = []
    size = 0
    for group in history_groups(repo, head, PAGE_COMMITS):
        size += sum(len(d) for _, d in group)
        if group[0][0] == stop or (blocks and size > HISTORY_PAGE):
            break
        blocks.extend(group)
    return car_bytes([head], blocks)
