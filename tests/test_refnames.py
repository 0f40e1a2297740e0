import pytest

from basinvcs.errors import RefError
from basinvcs.refnames import branch_ref, check_branch_name, check_ref_name, short_name

GOOD = ["general", "medicine", "feature/x", "a.b", "v1.2-rc_3", "x@y", "ü"]
BAD = [
    "",
    "@",
    ".hidden",
    "a/.b",
    "a..b",
    "a.lock",
    "a/b.lock/c",
    "a/",
    "/a",
    "a//b",
    "a.",
    "a@{1}",
    "sp ace",
    "til~de",
    "ca^ret",
    "co:lon",
    "q?",
    "st*r",
    "br[acket",
    "back\\slash",
    "ctl\x01",
    "del\x7f",
    "-dash",
    "HEAD",
]


@pytest.mark.parametrize("name", GOOD)
def test_good_branch_names(name):
    assert check_branch_name(name) == name
    assert check_ref_name(branch_ref(name)) == "refs/heads/" + name


@pytest.mark.parametrize("name", BAD)
def test_bad_branch_names_are_refused_with_a_reason(name):
    with pytest.raises(RefError, match=r"bad branch name .*: "):
        check_branch_name(name)


def test_full_ref_names():
    assert check_ref_name("HEAD") == "HEAD"
    assert check_ref_name("refs/remotes/origin/general")
    with pytest.raises(RefError, match="not under refs/"):
        check_ref_name("general")
    with pytest.raises(RefError, match="'..'"):
        check_ref_name("refs/heads/a..b")


def test_short_name():
    assert short_name("refs/heads/medicine") == "medicine"
    assert short_name("refs/tags/v1") == "refs/tags/v1"
