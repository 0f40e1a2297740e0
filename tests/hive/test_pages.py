"""Pages of a hive's history (GET /history): their bounds, their order, where they stop, and
the one page the server reads at a time."""

from __future__ import annotations

import asyncio
import time

import pytest

from basinvcs.cid import CID
from basinvcs.codec.car import read_car_bytes
from basinvcs.hive import coordinator as hc
from basinvcs.hive import pages
from basinvcs.hive.server import Pages
from basinvcs.objects import Commit
from tests.conftest import vec
from tests.hive.test_coordinator import EDGES, coordinator, trusting, update


@pytest.fixture
def hub(repo_dir):
    return trusting(repo_dir, EDGES[:4])


def test_history_comes_in_pages_down_to_what_the_asker_holds(hub, monkeypatch):
    """GET /history's pages: CARs rooted at the commit asked for, its history newest first, each
    commit followed by its packet, no page over HISTORY_PAGE bytes of blocks (but never empty),
    stopping above `have`; asked again from where each ends, they give the whole history."""
    c = coordinator(hub, round_updates=1, rule="mean", optimizer="average")
    for r in range(6):
        c.submit(update(c, EDGES[r % 4], vec(c0=float(r + 1)), seq=r + 1))
    history = [cid for cid, _ in c.repo.walk_blocks([c.head()])]
    assert len(history) == 7  # six rounds above the first commit
    one = len(c.repo.get_block(history[0])) + len(
        c.repo.get_block(c.repo.read_commit(history[0]).basin)
    )
    monkeypatch.setattr(pages, "HISTORY_PAGE", 2 * one + 10)  # two commits and their packets

    def page(at, have=None):
        roots, blocks = read_car_bytes(pages.page(c.repo, str(at), have))  # every block re-hashed
        commits = [cid for cid, data in blocks if cid in history]
        assert roots == [at]
        assert len(commits) == 1 or sum(len(d) for _, d in blocks) <= pages.HISTORY_PAGE
        for at_, (cid, data) in enumerate(blocks):
            if cid in history:  # each commit's packet comes right after it
                assert blocks[at_ + 1][0] == Commit.decode(data).basin
        return commits

    got, at = [], c.head()
    while True:
        commits = page(at)
        assert 1 <= len(commits) <= 2 and commits[0] == at
        got += commits
        parents = c.repo.read_commit(commits[-1]).parents
        if not parents:
            break
        at = parents[0]
    assert got == history
    assert page(c.head(), str(history[3])) == history[:2]  # stops above what the asker holds
    monkeypatch.setattr(pages, "HISTORY_PAGE", 1)  # a commit larger than a page still comes
    assert page(c.head()) == history[:1]
    monkeypatch.setattr(pages, "HISTORY_PAGE", 1 << 30)
    monkeypatch.setattr(pages, "PAGE_COMMITS", 3)  # and no page walks more commits than this
    assert page(c.head()) == history[:3]
    with pytest.raises(hc.Refused) as refused:
        pages.page(c.repo, "not a cid")
    assert refused.value.status == 400
    packet = c.repo.read_commit(c.head()).basin
    with pytest.raises(hc.Refused) as refused:
        pages.page(c.repo, str(packet))  # a block, not a commit
    assert refused.value.status == 400
    with pytest.raises(hc.Refused) as refused:
        pages.page(c.repo, str(CID.for_block(b"nothing here")))
    assert refused.value.status == 404
    with pytest.raises(hc.Refused) as refused:
        pages.page(c.repo, str(c.head()), "not a cid")
    assert refused.value.status == 400
    c.repo.close()


def test_the_server_reads_one_page_at_a_time_on_its_own_connection(hub, monkeypatch):
    """A page is read on a connection of its own (not the coordinator's); a second asker while
    one is being read, or within as long again after, is refused 503 at once, not queued."""
    c = coordinator(hub, round_updates=1)
    c.submit(update(c, EDGES[0], vec(c0=1.0)))
    reader = Pages(c.repo.basin_dir)
    slow = pages.page

    def page(repo, text, have=None):
        time.sleep(0.3)
        return slow(repo, text, have)

    monkeypatch.setattr(pages, "page", page)

    async def two():
        return await asyncio.gather(
            reader.read(str(c.head()), None),
            reader.read(str(c.head()), None),
            return_exceptions=True,
        )

    try:
        first, second = asyncio.run(two())
        assert read_car_bytes(first)[0] == [c.head()]
        assert isinstance(second, hc.Refused) and second.status == 503
        assert reader.repo is not None and reader.repo is not c.repo
        with pytest.raises(hc.Refused) as refused:  # as long again after a page: resting
            asyncio.run(reader.read(str(c.head()), None))
        assert refused.value.status == 503
        time.sleep(0.35)
        assert read_car_bytes(asyncio.run(reader.read(str(c.head()), None)))[0] == [c.head()]
    finally:
        reader.close()
        c.repo.close()
    memory = Pages(None)  # a coordinator over an in-memory repository serves no pages
    with pytest.raises(hc.Refused) as refused:
        asyncio.run(memory.read(str(CID.for_block(b"any")), None))
    assert refused.value.status == 404
    memory.close()


def test_a_history_the_server_cannot_read_is_a_json_500(hub, monkeypatch):
    import json
    import urllib.error
    import urllib.request

    from basinvcs.errors import RepositoryError
    from tests.conftest import serving

    def damaged(repo, text, have=None):
        raise RepositoryError("repository database is damaged: disk I/O error")

    monkeypatch.setattr(pages, "page", damaged)
    c = coordinator(hub, round_updates=1)
    try:
        with serving(c) as url, pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(f"{url}/history/{c.head()}", timeout=10)
        assert caught.value.code == 500
        error = json.loads(caught.value.read())["error"]
        assert error.startswith("the coordinator cannot read its history: repository database")
    finally:
        c.repo.close()
