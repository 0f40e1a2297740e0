"""Ref names, checked by git's check-ref-format rules so names mean the same thing in both tools."""

from __future__ import annotations

from .errors import RefError

HEADS = "refs/heads/"
REMOTES = "refs/remotes/"  # what was last fetched from a remote: refs/remotes/<remote>/<branch>
TAGS = "refs/tags/"  # lightweight tags: a name fixed on one commit
HEAD = "HEAD"

_FORBIDDEN_CHARS = frozenset(" ~^:?*[\\\x7f")
MAX_NAME_BYTES = 255  # git keeps refs as files: no component may pass a file name's limit


def shown(name: str, limit: int = 60) -> str:
    """`name` quoted for an error message, cut short if it is long."""
    return repr(name) if len(name) <= limit else repr(name[:limit]) + f"... ({len(name)} chars)"


def _problem(name: str) -> str | None:
    """Why `name` breaks check-ref-format, or None when it is fine."""
    if not name:
        return "it is empty"
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        return f"it is longer than {MAX_NAME_BYTES} bytes"
    if name == "@":
        return "it is '@'"
    if name.startswith("/") or name.endswith("/") or "//" in name:
        return "it has an empty path component"
    if name.endswith("."):
        return "it ends with '.'"
    if ".." in name:
        return "it contains '..'"
    if "@{" in name:
        return "it contains '@{'"
    for ch in name:
        if ch < " " or ch in _FORBIDDEN_CHARS:
            return f"it contains {ch!r}"
    for part in name.split("/"):
        if part.startswith("."):
            return "a component starts with '.'"
        if part.endswith(".lock"):
            return "a component ends with '.lock'"
    return None


def check_ref_name(name: str) -> str:
    """Return `name` if it is a valid full ref name, else raise RefError saying why."""
    problem = _problem(name)
    if problem is None and name != HEAD and not name.startswith("refs/"):
        problem = "it is not under refs/"
    if problem:
        raise RefError(f"bad ref name {shown(name)}: {problem}")
    return name


def check_branch_name(name: str) -> str:
    """Return `name` if it is a valid short branch name (as `git branch` accepts), else raise."""
    return _check_short(name, "branch")


def check_tag_name(name: str) -> str:
    """Return `name` if it is a valid short tag name (the rules of branch names), else raise."""
    return _check_short(name, "tag")


def _check_short(name: str, kind: str) -> str:
    problem = _problem(name)
    if problem is None and name.startswith("-"):
        problem = "it starts with '-'"
    if problem is None and name == HEAD:
        problem = f"HEAD is not a {kind} name"
    if problem:
        raise RefError(f"bad {kind} name {shown(name)}: {problem}")
    return name


def tag_ref(name: str) -> str:
    """The full ref for tag `name`, validated."""
    return TAGS + check_tag_name(name)


def branch_ref(name: str) -> str:
    """The full ref for branch `name`, validated."""
    return HEADS + check_branch_name(name)


def remote_ref(remote: str, branch: str) -> str:
    """The remote-tracking ref of `branch` at `remote`, validated."""
    return REMOTES + check_branch_name(remote) + "/" + check_branch_name(branch)


def short_name(ref: str) -> str:
    """`refs/heads/x` -> `x`, `refs/remotes/o/x` -> `o/x`; other refs unchanged."""
    for prefix in (HEADS, REMOTES):
        if ref.startswith(prefix):
            return ref[len(prefix) :]
    return ref
