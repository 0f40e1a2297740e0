"""Shell completion of what `basin` arguments name: revisions, branches, tags, remotes, substrates.

click completes command and option names by itself; these are the `shell_complete=` callbacks of
arguments and options whose values live in a repository or the substrate registry. They must be
quick and quiet: no torch (the substrate list reads the registry folder's names, not its
entries), and any failure (no repository here, a damaged one) completes nothing rather than
printing a traceback into the user's shell. Enabling completion: docs/cli.md#shell-completion.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import click
from click.shell_completion import CompletionItem

# the presets of the gpt family (basinvcs.model.families.gpt.PRESETS, which imports torch);
# tests/test_cli_git.py checks that the two lists agree
PRESETS = ("tiny", "100M", "1B", "10B")


def _items(names: Iterable[str], incomplete: str) -> list[CompletionItem]:
    return [CompletionItem(n) for n in dict.fromkeys(names) if n.startswith(incomplete)]


def _from_repo(names: Callable) -> Callable:
    """A completion callback listing `names(repo)` from the repository `basin` would open
    (after the group's `-C DIR`, when given)."""

    def complete(ctx: click.Context, param: click.Parameter, incomplete: str):
        try:
            from .repository import Repository

            root = ctx.find_root()
            with Repository.open(root.params.get("chdir")) as repo:
                return _items(names(repo), incomplete)
        except Exception:  # completing must never fail loudly
            return []

    return complete


def _branches(repo) -> list[str]:
    return [name for name, _ in repo.branches()]


def _tags(repo) -> list[str]:
    from .refnames import TAGS

    return [r.name[len(TAGS) :] for r in repo.refs(TAGS)]


def _revisions(repo) -> list[str]:
    from .refnames import REMOTES

    remotes = [r.name[len(REMOTES) :] for r in repo.refs(REMOTES)]
    return ["HEAD", *_branches(repo), *_tags(repo), *remotes]


def _remotes(repo) -> list[str]:
    return sorted(repo.config.remotes)


complete_revisions = _from_repo(_revisions)
complete_branches = _from_repo(_branches)
complete_tags = _from_repo(_tags)
complete_remotes = _from_repo(_remotes)


def substrate_names() -> list[str]:
    """The presets and the user substrates' names, read from the registry folder (no torch)."""
    from .identity import basin_home

    root = basin_home() / "substrates"  # basinvcs.model.registry.REGISTRY
    try:
        users = sorted(p.name for p in root.iterdir() if not p.name.startswith(".") and p.is_dir())
    except OSError:
        users = []
    return [*PRESETS, *users]


def complete_substrates(ctx: click.Context, param: click.Parameter, incomplete: str):
    try:
        return _items(substrate_names(), incomplete)
    except Exception:
        return []
