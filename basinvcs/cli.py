"""The `basin` command line: a thin click layer over `porcelain`.

Modules are imported inside commands so that `basin --help` and `basin log` never pay for torch,
networkx or nacl. Every BasinError becomes one `error: ...` line on stderr and a non-zero exit.
"""

from __future__ import annotations

import functools
import gc
import itertools
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from .completion import (
    complete_branches,
    complete_remotes,
    complete_revisions,
    complete_substrates,
    complete_tags,
)
from .errors import BasinError, RefError
from .refnames import short_name

if TYPE_CHECKING:
    from .hive.journal import Journal

SHORT = 16  # characters of a CID shown in short form ("bafyrei" + 9)


class BasinGroup(click.Group):
    """Turns expected failures into one line and an exit code, like git's `fatal:`."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except BasinError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except BrokenPipeError:
            sys.stderr.close()  # reader went away (`basin log | head`): not an error
            ctx.exit(0)
        except KeyboardInterrupt:  # Ctrl-C: 128 + SIGINT, as git and the shells report it
            ctx.exit(130)

    def make_context(self, *args, **kwargs) -> click.Context:
        """Parsing can wait too (a `click.File` argument opening a FIFO): Ctrl-C there is 130."""
        try:
            return super().make_context(*args, **kwargs)
        except KeyboardInterrupt:
            raise click.exceptions.Exit(130) from None


@click.group(cls=BasinGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-C", "chdir", type=click.Path(file_okay=False), help="Run as if started in this directory."
)
@click.version_option(package_name="basinvcs")
def main(chdir: str | None) -> None:
    """basin: version control for basins, small signed packets of what a model learned."""
    if chdir:
        try:
            os.chdir(chdir)
        except OSError as exc:
            raise click.UsageError(f"cannot change to {chdir}: {exc.strerror}") from None


def _repo():
    from .repository import Repository

    return Repository.open()


def short(cid) -> str:
    return str(cid)[:SHORT]


def _date(ms: int) -> str:
    return time.strftime("%a %b %d %H:%M:%S %Y %z", time.localtime(ms / 1000))


@functools.cache
def _author(key: bytes, name: str) -> str:
    from .identity import format_key

    return f"{name} <{format_key(key)}>"


# -- init / commit / fork -----------------------------------------------------------------------


@main.command()
@click.argument("path", default=".", type=click.Path(file_okay=False))
@click.option(
    "--dim",
    default=1024,
    show_default=True,
    type=click.IntRange(1, 1 << 16),
    help="Chart dimension d: how many coordinates a basin has.",
)
@click.option(
    "--seed",
    default=0,
    show_default=True,
    type=click.IntRange(0, (1 << 64) - 1),
    help="Chart seed: repositories share coordinates only with the same seed.",
)
@click.option(
    "--exclude",
    multiple=True,
    metavar="PATTERN",
    help="Leave tensors matching this name pattern out of the chart (repeatable), "
    "e.g. '*word_embeddings*'.",
)
@click.option("--name", help="Your name, used if a new identity is created.")
def init(path: str, dim: int, seed: int, exclude: tuple[str, ...], name: str | None) -> None:
    """Create a repository: chart, genesis commit on `general`, identity key."""
    from . import porcelain
    from .identity import format_key, load_identity

    had_identity = load_identity() is not None
    with porcelain.init(path, dim=dim, seed=seed, exclude=exclude, name=name) as repo:
        head = repo.head_commit()
        ident = repo.identity()
        chart = repo.config.chart
    click.echo(f"Initialized empty basin repository in {repo.basin_dir}")
    mask = f" exclude={','.join(chart.exclude)}" if chart.exclude else ""
    click.echo(f"chart: srht d={dim} seed={seed}{mask}")
    click.echo(f"genesis: {head} on branch general")
    made = "" if had_identity else " (new identity created)"
    click.echo(f"identity: {ident.name} <{format_key(ident.public_key)}>{made}")


@main.command()
@click.option(
    "--packet",
    "packet_file",
    type=click.File("rb"),
    help="A basin packet, DAG-CBOR or DAG-JSON ('-' for stdin).",
)
@click.option(
    "--model",
    "model_path",
    type=click.Path(path_type=Path),
    help="A model to extract the basin of: safetensors (file, shards or directory) "
    "or a torch file (read with weights_only).",
)
@click.option(
    "--substrate",
    shell_complete=complete_substrates,
    help="The model's substrate (default: found by its tensors).",
)
@click.option(
    "--fisher",
    "fisher_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Fisher diagonal over z, for --model: a JSON list or safetensors with one tensor.",
)
@click.option("-m", "--message", required=True, help="What this basin is.")
@click.option("--allow-empty", is_flag=True, help="Commit even if the basin equals HEAD's.")
def commit(
    packet_file,
    model_path: Path | None,
    substrate: str | None,
    fisher_path: Path | None,
    message: str,
    allow_empty: bool,
) -> None:
    """Record a basin (a packet, or the basin of a model) as a new signed commit."""
    from . import porcelain

    if (packet_file is None) == (model_path is None):
        raise click.UsageError("give exactly one of --packet FILE or --model PATH")
    if packet_file is not None and (substrate or fisher_path):
        raise click.UsageError("--substrate and --fisher go with --model")
    if model_path is not None:
        _commit_model(model_path, substrate, fisher_path, message)
        return
    basin = porcelain.load_packet(_read_input(packet_file, "packet"))
    with _repo() as repo:
        cid = porcelain.commit(repo, basin, message, allow_empty=allow_empty)
        branch = repo.current_branch()
    _report_commit(branch, cid, message)
    click.echo(cid)


def _report_commit(branch: str | None, cid, message: str) -> None:
    where = branch.removeprefix("refs/heads/") if branch else "detached HEAD"
    click.echo(f"[{where} {short(cid)}] {message.splitlines()[0]}")


def _commit_model(path: Path, substrate: str | None, fisher_path: Path | None, message: str):
    from .model import bridge

    fisher = bridge.load_fisher(fisher_path) if fisher_path else None
    with _repo() as repo:
        result = bridge.commit_model(repo, path, message, substrate=substrate, fisher=fisher)
        branch = repo.current_branch()
    ex = result.extraction
    _report_commit(branch, result.cid, message)
    click.echo(
        f"substrate {ex.substrate.name}: the basin captured {ex.captured:.2%} of the model's "
        f"change (|θ-θ0| = {ex.delta_sq**0.5:.4g}, |z| = {float(ex.z.norm()):.4g})"
    )
    if ex.captured < bridge.LOW_CAPTURE:
        click.echo(
            f"warning: only {ex.captured:.2%} of this model's change lies in the basin: it was "
            "trained outside it. Train inside the basin (basinvcs.model.train.BasinModel) to keep "
            "all of what it learns.",
            err=True,
        )
    if result.cross_substrate:
        click.echo("note: HEAD's basin was fitted on another substrate", err=True)
    click.echo(result.cid)


@main.command()
@click.argument("rev", required=False, shell_complete=complete_revisions)
@click.option(
    "-b",
    "new_branch",
    metavar="NEW",
    help="Create branch NEW at REV (default HEAD) and switch to it, as 'switch -c'.",
)
@click.option(
    "--model",
    "substrate",
    shell_complete=complete_substrates,
    help="Decode the basin into this substrate's weights.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    help="Output file or directory (default: ./<substrate>.safetensors; for an hf substrate, "
    "the folder ./<substrate>).",
)
@click.option(
    "--dtype",
    type=click.Choice(["float32", "bfloat16", "float16"]),
    default="float32",
    show_default=True,
)
@click.option(
    "--max-shard-size",
    type=click.IntRange(1),
    default=2048,
    show_default=True,
    help="Largest shard in MiB; bigger models are written as Hugging Face-style shards.",
)
@click.option(
    "--force", is_flag=True, help="With --model: overwrite an existing output file or folder."
)
def checkout(
    rev: str | None,
    new_branch: str | None,
    substrate: str | None,
    output: Path | None,
    dtype: str,
    max_shard_size: int,
    force: bool,
) -> None:
    """Move HEAD to REV (like git), or with --model write REV's basin as model weights."""
    from . import porcelain

    if new_branch is not None:
        if substrate is not None or output is not None or force:
            raise click.UsageError("-b does not go with --model, -o or --force")
        with _repo() as repo:
            done = porcelain.switch(repo, new_branch, create=True, start=rev or "HEAD")
        _report_switch(done)
        return
    if rev is None:
        raise click.UsageError("Missing argument 'REV'.")
    if force and substrate is None:
        raise click.UsageError("--force goes with --model")
    if substrate is None:
        if output is not None:
            raise click.UsageError("-o needs --model")
        with _repo() as repo:
            where = porcelain.checkout(repo, rev)
        click.echo(f"Switched to {where}")
        return
    import torch

    from .model import bridge
    from .progress import progress_bar

    torch_dtype = getattr(torch, dtype)
    with _repo() as repo:
        dec = bridge.decode(repo, rev, substrate)
        folder = bool(dec.substrate.folder_files())
        out = output or Path(substrate if folder else f"{substrate}.safetensors")
        bridge.check_output(out, force=force)
        total = dec.substrate.num_params * torch_dtype.itemsize
        with progress_bar(total, f"checkout {substrate}") as update:
            files = bridge.write_decoded(
                dec, out, dtype=torch_dtype, max_shard_bytes=max_shard_size << 20, progress=update
            )
    # the folder of an hf model, the index of a sharded one, else the file
    where = out if folder else files[0] if len(files) == 1 else files[-1]
    click.echo(
        f"wrote {dec.substrate.name} ({dec.substrate.num_params:,} parameters, {dtype}) "
        f"from {short(dec.commit)} to {where}"
    )
    if dec.cross_substrate:
        fitted = dec.basin.substrate.name
        click.echo(
            f"note: this basin was fitted on {fitted}; its coordinates are decoded through "
            f"{dec.substrate.name}'s chart projection. Behaviour there is not that of the "
            f"{fitted} model: measure it before relying on it.",
            err=True,
        )


@main.command()
@click.argument("source", shell_complete=complete_revisions)
@click.option("--specialize", required=True, help="The specialisation label of the new branch.")
@click.option("--branch", help="Branch name (default: the specialisation).")
def fork(source: str, specialize: str, branch: str | None) -> None:
    """Start a specialisation branch from SOURCE and switch to it."""
    from . import porcelain

    with _repo() as repo:
        cid = porcelain.fork(repo, source, specialize, branch)
    click.echo(f"Switched to a new branch '{branch or specialize}' (specialize: {specialize})")
    click.echo(cid)


# -- history ------------------------------------------------------------------------------------


@main.command()
@click.argument("rev", default="HEAD", shell_complete=complete_revisions)
@click.option("--oneline", is_flag=True, help="One line per commit.")
@click.option("--graph", is_flag=True, help="Draw the commit graph (topological order).")
@click.option("--all", "all_refs", is_flag=True, help="Start from every branch, not just REV.")
@click.option(
    "-n",
    "--max-count",
    "limit",
    type=click.IntRange(0, 1 << 62),
    default=None,
    help="Show at most N commits.",
)
def log(rev: str, oneline: bool, graph: bool, all_refs: bool, limit: int | None) -> None:
    """Show the history of REV (default HEAD), newest first."""
    from . import porcelain

    with _repo() as repo:
        body = _log_formatter(repo, oneline)
        if porcelain.is_range(rev):  # A..B, A...B
            from .repository import IndexEntry

            entries = (
                (lanes, IndexEntry(str(c), tuple(map(str, m.parents)), m.time, m.author, m.message))
                for lanes, c, m in _log_range(repo, rev, graph, limit, all_refs)
            )
        elif graph:
            from .loggraph import graph_log

            entries = graph_log(repo, rev, limit, all_refs)
        else:  # the commit-graph index alone, as git reads its commit-graph file
            count = -1 if limit is None else limit
            collecting = gc.isenabled()
            gc.disable()  # 10,000 entries, no cycles: collecting would only cost (~3 ms)
            try:
                _write_all(map(body, porcelain.log_entries(repo, rev, count, all_refs)))
            finally:
                if collecting:
                    gc.enable()
            return
        _write_all(body(e) if lanes is None else lanes.prefix(body(e)) for lanes, e in entries)


def _write_all(texts) -> None:
    """Write in chunks: one write per entry would cost more than formatting it."""
    write = sys.stdout.write
    while chunk := list(itertools.islice(texts, 512)):
        write("".join(chunk))
    sys.stdout.flush()


def _log_formatter(repo, oneline: bool):
    """The function that formats one `IndexEntry` as `log` prints it (with --oneline, in one
    line), each author, date and decoration worked out once."""
    from . import porcelain

    deco = {c: f" ({', '.join(labels)})" for c, labels in porcelain.decorations(repo).items()}
    if oneline:
        return lambda e: f"{e[0][:SHORT]}{deco.get(e[0], '')} {e[4].partition(chr(10))[0]}\n"
    names = {t.key: t.name for t in repo.config.trusted}
    authors: dict[bytes, str] = {}
    dates: dict[int, str] = {}

    def body(entry) -> str:
        cid, parents, ms, key, message = entry
        author = authors.get(key)
        if author is None:
            author = authors[key] = _author(key, names.get(key, "untrusted"))
        date = dates.get(ms // 1000)
        if date is None:
            date = dates[ms // 1000] = _date(ms)
        merge = "Merge: " + " ".join(p[:SHORT] for p in parents) + "\n" if len(parents) > 1 else ""
        lines = message.splitlines()
        text = "    " + "\n    ".join(lines) + "\n" if lines else ""
        return (
            f"commit {cid}{deco.get(cid, '')}\n{merge}Author: {author}\nDate:   {date}\n\n{text}\n"
        )

    return body


@main.command()
@click.argument("rev", default="HEAD", shell_complete=complete_revisions)
@click.option(
    "--format", "fmt", type=click.Choice(["text", "dag-json"]), default="text", show_default=True
)
def show(rev: str, fmt: str) -> None:
    """Show a commit and its basin (or any stored block)."""
    from . import porcelain
    from .codec import dagjson

    with _repo() as repo:
        cid = repo.resolve(rev)
        kind, obj = porcelain.describe_block(repo, cid)
        if fmt == "dag-json":
            click.echo(dagjson.encode(obj.to_node() if kind != "block" else obj))
            return
        names = {t.key: t.name for t in repo.config.trusted}
        if kind == "commit":
            click.echo(f"commit {cid}")
            for p in obj.parents:
                click.echo(f"Parent: {p}")
            click.echo(f"Author: {_author(obj.author, names.get(obj.author, 'untrusted'))}")
            if not obj.signature_valid():
                click.echo("Signature: BAD: the author's key did not sign this commit")
                click.echo(f"warning: commit {cid} has a bad signature", err=True)
            click.echo(f"Date:   {_date(obj.time)}")
            if obj.specialize:
                click.echo(f"Specialize: {obj.specialize}")
            click.echo("")
            for line in obj.message.splitlines():
                click.echo(f"    {line}")
            if obj.metrics:
                click.echo("")
                for key, value in sorted(obj.metrics.items()):
                    click.echo(f"    {key}: {value:.6g}")
            click.echo("")
            if obj.record is not None:
                record = repo.read_record(obj.record)
                click.echo(
                    f"record {obj.record} ({len(record.taken)} updates taken, "
                    f"{len(record.refused)} refused: basin show {obj.record})"
                )
            click.echo(f"basin {obj.basin}")
            _show_basin(repo.read_basin(obj.basin), repo.block_size(obj.basin))
        elif kind == "basin":
            click.echo(f"basin {cid}")
            _show_basin(obj, repo.block_size(cid))
        elif kind == "round":
            from .identity import format_key

            taken, refused = len(obj.taken), len(obj.refused)
            click.echo(f"round record {cid}: {taken} updates taken, {refused} refused")
            for update, signer in obj.taken:
                click.echo(f"taken {update} {format_key(signer)}")
            for update, why in obj.refused:
                click.echo(f"refused {update} {why}")
        else:
            click.echo(f"block {cid} ({cid.codec_name}, {repo.block_size(cid)} bytes)")


def _show_basin(basin, size: int) -> None:
    nonzero = sum(1 for v in basin.z if v)
    click.echo(f"  chart:      {basin.chart}")
    click.echo(f"  substrate:  {basin.substrate.name if basin.substrate else '(none)'}")
    click.echo(f"  labels:     {', '.join(basin.labels) or '(none)'}")
    click.echo(
        f"  |z|:        {basin.norm():.6g} ({nonzero} of {basin.chart.dim} coordinates nonzero)"
    )
    click.echo(f"  fisher:     {'yes' if basin.fisher is not None else 'no (identity metric)'}")
    click.echo(f"  beta:       {', '.join(f'{b:g}' for b in basin.beta)}")
    for e in basin.entanglements:
        click.echo(f"  entangled:  {e.a} ~ {e.b} ({e.strength:+.3f})")
    click.echo(f"  size:       {size} bytes")


@main.command()
@click.argument("ref", default="HEAD", shell_complete=complete_branches)
@click.option("-n", "--max-count", "limit", type=click.IntRange(0, 1 << 62), default=None)
def reflog(ref: str, limit: int | None) -> None:
    """How REF (a branch, or HEAD) moved, newest first."""
    from . import porcelain

    with _repo() as repo:
        name, entries = porcelain.reflog(repo, ref, -1 if limit is None else limit)
    for i, e in enumerate(entries):
        new = (
            "(deleted)" if e.new is None else e.new if e.new.startswith("refs/") else e.new[:SHORT]
        )
        click.echo(f"{new} {short_name(name)}@{{{i}}}: {e.message}")


def _strategies() -> list[str]:
    from .merge import STRATEGIES

    return list(STRATEGIES)


def _merge_options(fn):
    """The options `merge` and `pull` share: strategy, weight, thresholds, force, trust, message."""
    from .merge import DEFAULT_STRATEGY

    options = [
        click.option(
            "--strategy",
            type=click.Choice(_strategies()),
            default=DEFAULT_STRATEGY,
            show_default=True,
            help="How coordinates several sides changed combine.",
        ),
        click.option(
            "--weight",
            type=click.FloatRange(min=0, min_open=True),
            default=1.0,
            show_default=True,
            help="Extra weight of the incoming side.",
        ),
        click.option(
            "--max-distance",
            type=click.FloatRange(min=0),
            default=None,
            help="Refuse above this Fisher distance (× the smaller change); default from config.",
        ),
        click.option(
            "--max-interference",
            type=click.FloatRange(0, 1),
            default=None,
            help="Refuse above this share of opposed Fisher mass; default from config.",
        ),
        click.option("--force", is_flag=True, help="Merge even if the conflict check refuses."),
        click.option(
            "--no-ff", is_flag=True, help="Make a merge commit even when a fast-forward would do."
        ),
        click.option(
            "--allow-untrusted", is_flag=True, help="Accept commits by keys not on the trust list."
        ),
        click.option("-m", "--message", help="Merge commit message."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _merge(repo, revs: str | list[str], **options):
    """porcelain.merge, printing the conflict report (on stderr) when it refuses."""
    from . import porcelain

    try:
        return porcelain.merge(repo, revs, **options)
    except porcelain.MergeRefused as exc:
        for line in exc.report:
            click.echo(line, err=True)
        raise


def _report_merge(result) -> None:
    if result.kind == "up-to-date":
        click.echo("Already up to date.")
    elif result.kind == "fast-forward":
        click.echo(f"Fast-forward to {short(result.cid)}")
    else:
        click.echo(f"Merge made by the '{result.strategy}' strategy: {short(result.cid)}")
        several = len(result.assessments) > 1
        for k, v in enumerate(result.assessments):
            theirs = f"{result.revs[k]} " if several else ""
            click.echo(
                f"  weights ours {result.weights[0]:.3g}, theirs {theirs}"
                f"{result.weights[k + 1]:.3g}; "
                f"{v.shared} shared coordinates, Fisher distance {v.distance:.4g} "
                f"({v.relative:.3g}x), interference {v.interference:.3g}"
            )
        if result.bases > 1:
            click.echo(f"  {result.bases} best common ancestors: merged against their mean")
        for note in result.notes:
            click.echo(f"note: {note}", err=True)
    click.echo(result.cid)


@main.command()
@click.argument(
    "revs", metavar="REV...", nargs=-1, required=True, shell_complete=complete_revisions
)
@click.option(
    "--into",
    metavar="BRANCH",
    shell_complete=complete_branches,
    help="Merge into BRANCH instead of HEAD's branch.",
)
@_merge_options
def merge(revs: tuple[str, ...], into: str | None, **options) -> None:
    """Merge REV (or several: one merge of them all) into HEAD, refusing conflicting or
    suspicious updates."""
    with _repo() as repo:
        result = _merge(repo, list(revs), into=into, **options)
    _report_merge(result)


# -- branches, status, verify -------------------------------------------------------------------


@main.command()
@click.argument("name", required=False, shell_complete=complete_branches)
@click.argument("start", required=False, default="HEAD", shell_complete=complete_revisions)
@click.option(
    "-d", "--delete", "delete", is_flag=True, help="Delete branch NAME if HEAD holds its commits."
)
@click.option("-D", "force_delete", is_flag=True, help="Delete branch NAME even if not merged.")
@click.option("-f", "--force", is_flag=True, help="With -d: delete even if not merged.")
def branch(name: str | None, start: str, delete: bool, force_delete: bool, force: bool) -> None:
    """List branches, create NAME at START, or delete NAME with -d (-D: even if not merged)."""
    from . import porcelain

    if force and not (delete or force_delete):
        raise click.UsageError("-f goes with -d")
    delete = delete or force_delete
    with _repo() as repo:
        if name is None:
            if delete:
                raise click.UsageError("branch -d needs a branch name")
            current = repo.current_branch()
            for bname, cid in repo.branches():
                mark = "*" if current == f"refs/heads/{bname}" else " "
                click.echo(f"{mark} {bname:<20} {short(cid)}")
            return
        if delete:
            cid = porcelain.delete_branch(repo, name, force=force or force_delete)
            click.echo(f"Deleted branch {name} (was {short(cid)}).")
        else:
            cid = porcelain.create_branch(repo, name, start)
            click.echo(f"Created branch {name} at {short(cid)}")


@main.command()
def status() -> None:
    """Where HEAD is and what the basin there holds."""
    from . import porcelain

    with _repo() as repo:
        st = porcelain.status(repo)
        size = repo.block_size(st.commit.basin)
    click.echo(f"On branch {st.branch}" if st.branch else f"HEAD detached at {short(st.head)}")
    click.echo(f"commit {st.head}")
    click.echo(f"  {st.commit.message.partition(chr(10))[0]}")
    _show_basin(st.basin, size)
    click.echo(f"{st.branches} branch{'es' if st.branches != 1 else ''}; chart {st.chart}")


@main.command()
@click.option("--require-trusted", is_flag=True, help="Fail if any commit's signer is not trusted.")
def verify(require_trusted: bool) -> None:
    """Check every reachable block: hashes, links, packets, signatures, trusted signers."""
    from . import porcelain
    from .identity import format_key

    with _repo() as repo:
        report = porcelain.verify(repo)
    for where, problem in report.problems:
        click.echo(f"error: {where}: {problem}", err=True)
    for key, cids in report.untrusted.items():
        click.echo(
            f"warning: {len(cids)} commit(s) signed by untrusted key {format_key(key)}, "
            f"e.g. {cids[0]}",
            err=True,
        )
    shallow = f", {report.shallow} held without their parents (shallow)" if report.shallow else ""
    plural = "s" if report.records != 1 else ""
    records = f", {report.records} round record{plural}" if report.records else ""
    click.echo(
        f"checked {report.commits} commits and {report.packets} basin packets{records}{shallow}"
    )
    if not report.ok or (require_trusted and report.untrusted):
        raise SystemExit(1)
    click.echo("ok")


# -- keys ---------------------------------------------------------------------------------------


@main.group(invoke_without_command=True)
@click.option(
    "--public-key",
    "only_key",
    is_flag=True,
    help="Print only your public key (z6Mk...), for scripts.",
)
@click.pass_context
def key(ctx: click.Context, only_key: bool) -> None:
    """Your identity and the repository's trusted signers."""
    if ctx.invoked_subcommand is None:
        from .identity import format_key, require_identity

        ident = require_identity()
        public = format_key(ident.public_key)
        click.echo(public if only_key else f"{ident.name} <{public}>")
    elif only_key:
        raise click.UsageError(
            f"--public-key is an option of 'basin key' alone, not of {ctx.invoked_subcommand}"
        )


@key.command("generate")
@click.option("--name", help="Your display name.")
def key_generate(name: str | None) -> None:
    """Create your identity if you have none (it is never overwritten)."""
    from . import porcelain
    from .identity import format_key, identity_path

    ident, made = porcelain.generate_identity(name)
    verb = "created" if made else "exists already"
    click.echo(
        f"identity {verb}: {ident.name} <{format_key(ident.public_key)}> ({identity_path()})"
    )


@key.command("list")
def key_list() -> None:
    """Trusted signers: key, name, weight, cohort (where one is given)."""
    from .identity import format_key

    with _repo() as repo:
        for t in repo.config.trusted:
            cohort = "" if t.cohort is None else f"  cohort={t.cohort}"
            click.echo(f"{format_key(t.key)}  {t.name}  weight={t.weight:g}{cohort}")


@key.command("add")
@click.argument("public_key")
@click.option("--name", required=True, help="Who this key belongs to.")
@click.option(
    "--weight", default=1.0, show_default=True, type=float, help="Trust weight in merges."
)
@click.option(
    "--cohort",
    help="The task this signer trains in a hive: a coordinator quarantines a signer whose "
    "updates work against the rest of its cohort (docs/hive.md).",
)
def key_add(public_key: str, name: str, weight: float, cohort: str | None) -> None:
    """Trust PUBLIC_KEY (z6Mk... or did:key:z6Mk...); a key trusted already is replaced whole."""
    from . import porcelain

    with _repo() as repo:
        entry = porcelain.trust(repo, public_key, name, weight, cohort)
    where = "" if cohort is None else f", cohort {cohort}"
    click.echo(f"trusted {entry.name} (weight {entry.weight:g}{where})")


@key.command("remove")
@click.argument("key_or_name")
def key_remove(key_or_name: str) -> None:
    """Stop trusting a key, given by key or by name."""
    from . import porcelain

    with _repo() as repo:
        entry = porcelain.untrust(repo, key_or_name)
    click.echo(f"removed {entry.name}")


# -- plumbing: block and dag --------------------------------------------------------------------


def _read_input(file, what: str = "block") -> bytes:
    """FILE's bytes (stdin without one), at most one block: `/dev/zero` is refused, not read."""
    from .inputs import read_stream
    from .store.base import MAX_BLOCK_SIZE

    stream = file or sys.stdin.buffer
    return read_stream(stream, MAX_BLOCK_SIZE, f"{what} {getattr(stream, 'name', 'input')}")


@main.group()
def block() -> None:
    """Raw blocks, as `ipfs block` has them."""


@block.command("put")
@click.argument("file", type=click.File("rb"), required=False)
@click.option(
    "--cid-codec",
    type=click.Choice(["raw", "dag-cbor", "dag-json"]),
    default="raw",
    show_default=True,
)
def block_put(file, cid_codec: str) -> None:
    """Store FILE (or stdin) as one block and print its CID (DAG codecs are checked strictly)."""
    from .cid import CODECS

    data = _read_input(file)
    with _repo() as repo:
        click.echo(repo.put_block(data, CODECS[cid_codec]))


@block.command("get")
@click.argument("cid")
def block_get(cid: str) -> None:
    """Write a block's raw bytes to stdout (verified against the CID)."""
    with _repo() as repo:
        data = repo.get_block(repo.resolve(cid))
    out = sys.stdout.buffer
    out.write(data)
    out.flush()


@block.command("stat")
@click.argument("cid")
def block_stat(cid: str) -> None:
    """Key and size of a block."""
    with _repo() as repo:
        resolved = repo.resolve(cid)
        size = len(repo.get_block(resolved))
    click.echo(f"Key: {resolved}\nSize: {size}")


@main.group()
def dag() -> None:
    """IPLD DAG nodes, as `ipfs dag` has them."""


@dag.command("put")
@click.argument("files", type=click.File("rb"), nargs=-1)
@click.option(
    "--input-codec",
    type=click.Choice(["dag-json", "dag-cbor"]),
    default="dag-json",
    show_default=True,
)
@click.option(
    "--store-codec",
    type=click.Choice(["dag-cbor", "dag-json"]),
    default="dag-cbor",
    show_default=True,
)
def dag_put(files, input_codec: str, store_codec: str) -> None:
    """Store each FILE (or stdin) as a node; print each CID. Non-canonical input is refused."""
    from . import porcelain

    inputs = [_read_input(file) for file in files or (None,)]
    with _repo() as repo:
        for cid in porcelain.dag_put(repo, inputs, input_codec, store_codec):
            click.echo(cid)


@dag.command("get")
@click.argument("path")
@click.option(
    "--output-codec",
    type=click.Choice(["dag-json", "dag-cbor"]),
    default="dag-json",
    show_default=True,
)
def dag_get(path: str, output_codec: str) -> None:
    """Print the node at CID[/path] (links are followed)."""
    from . import porcelain

    with _repo() as repo:
        data = porcelain.dag_get(repo, path, output_codec)
    out = sys.stdout.buffer
    out.write(data)
    if output_codec == "dag-json" and sys.stdout.isatty():
        out.write(b"\n")
    out.flush()


# -- substrates ---------------------------------------------------------------------------------


def _count(n: int) -> str:
    """A parameter count the way model cards print it: 1.03M, 1.01B."""
    for unit, scale in (("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(n)


@main.group()
def substrate() -> None:
    """Model architectures with base weights θ0 that basins decode into."""


@substrate.command("list")
def substrate_list() -> None:
    """Every substrate: name, parameters, layers, fingerprint, preset or user."""
    from .model.registry import list_substrates

    for s in list_substrates():
        click.echo(
            f"{s.name:<16} {_count(s.num_params):>8} {s.num_layers:>4} layers  "
            f"{s.fingerprint.hex()[:16]}  {s.family:<3}  {s.kind}"
        )


@substrate.command("add")
@click.argument("name")
@click.option(
    "--from",
    "source",
    type=click.Path(path_type=Path),
    help="A Hugging Face model folder: config.json and safetensors (single or sharded).",
)
@click.option("--weights", help="Base weights θ0 of a GPT-family model (safetensors).")
@click.option(
    "--config", "config_file", help="With --weights: GPTConfig fields as JSON; n_head at least."
)
@click.option(
    "--architecture",
    help="With --from: the transformers class to build (default: the config's architectures), "
    "e.g. BertForSequenceClassification for a classification head.",
)
@click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="KEY=VALUE",
    help="With --from: override a config field (VALUE as JSON, else a string), e.g. num_labels=3.",
)
@click.option(
    "--zero-init",
    multiple=True,
    metavar="PATTERN",
    help="With --from: parameters the checkpoint lacks that match PATTERN (a new head, "
    "'classifier.*') start at zero inside θ0.",
)
def substrate_add(
    name: str,
    source: Path | None,
    weights: str | None,
    config_file: str | None,
    architecture: str | None,
    settings: tuple[str, ...],
    zero_init: tuple[str, ...],
) -> None:
    """Register NAME: a Hugging Face folder (--from DIR) or a GPT-family model (--weights)."""
    from .model.registry import add_hf_substrate, add_substrate

    if (source is None) == (weights is None):
        raise click.UsageError("give exactly one of --from DIR and --weights FILE")
    if source is not None:
        if config_file:
            raise click.UsageError("--config goes with --weights; --from reads DIR/config.json")
        s = add_hf_substrate(
            name,
            source,
            architecture=architecture,
            config_overrides=dict(_setting(kv) for kv in settings),
            zero_init=zero_init,
        )
    else:
        if architecture or settings or zero_init:
            raise click.UsageError("--architecture, --set and --zero-init go with --from")
        s = add_substrate(name, Path(weights), Path(config_file) if config_file else None)
    click.echo(
        f"added substrate {s.name}: {_count(s.num_params)} parameters, {s.num_layers} layers, "
        f"fingerprint {s.fingerprint.hex()}"
    )
    if s.family == "hf":
        fixed = [sp.name for sp in s.specs if not sp.projected]
        click.echo(f"family hf: {s.architecture}; {len(s.specs)} tensors, {len(fixed)} fixed")


@substrate.command("verify")
@click.argument("names", nargs=-1)
def substrate_verify(names: tuple[str, ...]) -> None:
    """Hash every user substrate's θ0 (or those NAMES) against the digest it was registered
    with; exits 1 if any differs. Loading one hashes θ0 only when its file has changed."""
    from .model.registry import verify_substrates

    results = verify_substrates(names)
    for name, problem in results:
        click.echo(f"ok       {name}" if problem is None else f"corrupt  {name}: {problem}")
    if not results:
        click.echo("no user substrates")
    if any(problem for _, problem in results):
        raise SystemExit(1)


def _setting(text: str) -> tuple[str, object]:
    """KEY=VALUE with VALUE read as JSON (3, true, "x", [1]) or else taken as a string."""
    from .inputs import InputError, NotJSON, parse_json

    key, sep, value = text.partition("=")
    if not sep or not key:
        raise click.BadParameter(f"{text!r} is not KEY=VALUE", param_hint="--set")
    try:
        return key, parse_json(value, f"the value of {key}")
    except NotJSON:
        return key, value
    except InputError as exc:  # nested too deeply, NaN, an integer beyond the digit limit
        raise click.BadParameter(str(exc), param_hint="--set") from None


# -- diff / concepts ----------------------------------------------------------------------------


@main.command()
@click.argument("rev_a", metavar="A", shell_complete=complete_revisions)
@click.argument("rev_b", metavar="B", shell_complete=complete_revisions)
@click.option("--stat", is_flag=True, help="One summary line.")
@click.option(
    "-n",
    "top",
    type=click.IntRange(0),
    default=10,
    show_default=True,
    help="How many of the most changed coordinates to show.",
)
def diff(rev_a: str, rev_b: str, stat: bool, top: int) -> None:
    """Compare the basins of commits A and B: Fisher distance, coordinates, β, labels, links."""
    from . import concepts

    with _repo() as repo:
        d = concepts.diff(repo, rev_a, rev_b, top)
    links = f"links +{len(d.links_added)} -{len(d.links_removed)} ~{len(d.links_changed)}"
    if stat:
        click.echo(
            f"{rev_a}..{rev_b}: Fisher distance {d.distance:.6g}, |dz| {d.norm:.6g}, "
            f"{d.changed} of {d.dim} coordinates changed, labels +{len(d.labels_added)} "
            f"-{len(d.labels_removed)}, {links}"
        )
        return
    click.echo(f"Fisher distance: {d.distance:.6g}")
    click.echo(f"  metric: {d.metric}")
    click.echo(f"|z_B - z_A|:     {d.norm:.6g} ({d.changed} of {d.dim} coordinates changed)")
    if d.top:
        click.echo(f"most changed coordinates (index, z_A, z_B, sqrt(F)*change): {len(d.top)}")
        for i, za, zb, w in d.top:
            click.echo(f"  {i:5d}  {za:+.6g}  {zb:+.6g}  {w:+.6g}")
    beta_a, beta_b = (", ".join(f"{b:g}" for b in beta) for beta in d.beta)
    click.echo(f"beta:      {beta_a if beta_a == beta_b else f'{beta_a} -> {beta_b}'}")
    changes = [f"+{x}" for x in d.labels_added] + [f"-{x}" for x in d.labels_removed]
    click.echo(f"labels:    {' '.join(changes) if changes else '(unchanged)'}")
    sub_a, sub_b = (s or "(none)" for s in d.substrate)
    click.echo(f"substrate: {sub_a if sub_a == sub_b else f'{sub_a} -> {sub_b}'}")
    if not (d.links_added or d.links_removed or d.links_changed):
        click.echo("concepts:  (links unchanged)")
        return
    click.echo("concepts:")
    for e in d.links_added:
        click.echo(f"  + {e.a} ~ {e.b}  {e.strength:+.2f}")
    for e in d.links_removed:
        click.echo(f"  - {e.a} ~ {e.b}  {e.strength:+.2f}")
    for old, new in d.links_changed:
        click.echo(f"  ~ {old.a} ~ {old.b}  {old.strength:+.2f} -> {new.strength:+.2f}")


@main.command("concepts")
def concepts_cmd() -> None:
    """The concepts (specialisation directions) and the links between them."""
    from . import concepts

    with _repo() as repo:
        graph = concepts.concept_graph(repo)
    metric = "mean Fisher of the concept heads" if graph.graph["fisher"] else "identity"
    if not graph.number_of_nodes():
        click.echo("no concepts: fork a specialisation branch with 'basin fork'")
        return
    click.echo(f"concepts ({graph.number_of_nodes()}, metric: {metric}):")
    width = max(len(n) for n in graph.nodes)
    for name, data in sorted(graph.nodes(data=True)):
        click.echo(f"  {name:<{width}}  |u| = {data['norm']:.6g}  branch {data['branch']}")
    edges = sorted(graph.edges(data="weight"), key=lambda e: (-abs(e[2]), min(e[:2]), max(e[:2])))
    click.echo(f"links ({len(edges)}, |strength| >= {concepts.MIN_STRENGTH:g}):")
    for a, b, w in edges:
        a, b = sorted((a, b))
        click.echo(f"  {a} ~ {b}  {w:+.2f}")


# -- remotes, push, pull, clone, CAR files, discovery ---------------------------------------------


@main.group(invoke_without_command=True)
@click.pass_context
def remote(ctx: click.Context) -> None:
    """IPFS nodes to push to and pull through (lists them with no subcommand)."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(remote_list)


@remote.command("list")
def remote_list() -> None:
    with _repo() as repo:
        for name, r in sorted(repo.config.remotes.items()):
            follow = f"  follows {r.follow}" if r.follow else ""
            click.echo(f"{name}\t{r.node}{follow}")


@remote.command("add")
@click.argument("name")
@click.argument("multiaddr")
@click.option("--follow", help="IPNS name or heads-record CID that `basin pull` fetches.")
def remote_add(name: str, multiaddr: str, follow: str | None) -> None:
    """Name the IPFS node at MULTIADDR (its RPC API, e.g. /ip4/127.0.0.1/tcp/5001)."""
    from . import remote

    with _repo() as repo:
        remote.add_remote(repo, name, multiaddr, follow)
    click.echo(f"remote {name}: {multiaddr}" + (f", follows {follow}" if follow else ""))


@remote.command("remove")
@click.argument("name", shell_complete=complete_remotes)
def remote_remove(name: str) -> None:
    from . import remote

    with _repo() as repo:
        remote.remove_remote(repo, name)
    click.echo(f"removed remote {name}")


@main.command()
@click.argument(
    "remote_name", metavar="[REMOTE]", default="origin", shell_complete=complete_remotes
)
@click.argument("branch_name", metavar="[BRANCH]", required=False, shell_complete=complete_branches)
def push(remote_name: str, branch_name: str | None) -> None:
    """Send BRANCH (default: the current one) to REMOTE's node and publish the signed heads."""
    from . import remote

    with _repo() as repo:
        result = remote.push(repo, remote_name, branch_name)
    click.echo(
        f"pushed {', '.join(sorted(result.branches))} ({result.blocks} blocks, "
        f"{result.bytes} bytes sent)"
    )
    click.echo(f"heads record: {result.heads} (seq {result.seq})")
    click.echo(f"IPNS name: {result.name}")
    if not result.announced:
        click.echo("(no pubsub peer listening for these heads)", err=True)


@main.command()
@click.argument(
    "remote_name", metavar="[REMOTE]", default="origin", shell_complete=complete_remotes
)
@click.argument("branch_name", metavar="[BRANCH]", required=False, shell_complete=complete_branches)
def fetch(remote_name: str, branch_name: str | None) -> None:
    """Fetch BRANCH from the heads REMOTE follows into REMOTE/BRANCH, verifying everything."""
    with _repo() as repo:
        _fetch(repo, remote_name, branch_name)


def _fetch(repo, remote_name: str, branch_name: str | None) -> str:
    from . import remote
    from .refnames import remote_ref

    fetched = remote.fetch(repo, remote_name, branch_name or remote.current_branch(repo))
    click.echo(
        f"fetched {fetched.branch} from heads record {fetched.heads} (seq {fetched.seq}): "
        f"{fetched.fetched} new blocks"
    )
    return remote_ref(remote_name, fetched.branch)


@main.command()
@click.argument(
    "remote_name", metavar="[REMOTE]", default="origin", shell_complete=complete_remotes
)
@click.argument("branch_name", metavar="[BRANCH]", required=False, shell_complete=complete_branches)
@_merge_options
def pull(remote_name: str, branch_name: str | None, **options) -> None:
    """Fetch BRANCH from the heads REMOTE follows, verify everything, then merge it into HEAD."""
    with _repo() as repo:
        result = _merge(repo, _fetch(repo, remote_name, branch_name), **options)
    _report_merge(result)


@main.command()
@click.argument("source")
@click.argument("directory", type=click.Path(file_okay=True, path_type=Path))
@click.option("--node", help="IPFS node RPC multiaddr (default: $BASIN_IPFS_API).")
@click.option("--trust", "trust_key", help="Require the heads record to be signed by this key.")
def clone(source: str, directory: Path, node: str | None, trust_key: str | None) -> None:
    """Make DIRECTORY a copy of the repository whose heads SOURCE names (IPNS name or CID)."""
    from . import remote

    result = remote.clone(source, directory, node, trust_key)
    click.echo(
        f"Cloned into {result.path}: {len(result.branches)} branch(es), "
        f"{result.fetched} blocks, heads record {result.heads} (seq {result.seq})"
    )
    if result.trusted_new and not trust_key:
        click.echo(f"trusting the heads signer {result.trusted} as 'origin' (check it out of band)")
    click.echo(f"On branch {result.checked_out}")


@main.command("export")
@click.argument("rev", default="HEAD", shell_complete=complete_revisions)
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path))
def export_cmd(rev: str, output: Path) -> None:
    """Write REV's history as a CARv1 file (the commit is its root)."""
    from . import carfile

    with _repo() as repo:
        root, blocks, size = carfile.export_car(repo, rev, output)
    click.echo(f"wrote {output}: root {root}, {blocks} blocks, {size} bytes")


@main.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--branch", help="Create this branch at the file's root commit.")
def import_cmd(file: Path, branch: str | None) -> None:
    """Store the history a CARv1 file holds, every block verified first."""
    from . import carfile

    with _repo() as repo:
        result = carfile.import_car(repo, file, branch)
    click.echo(
        f"imported {file}: root {result.root}, {result.written} new of {result.blocks} blocks"
    )
    if result.ignored:
        click.echo(f"  {result.ignored} blocks not reachable from the root were not stored")
    if branch:
        click.echo(f"branch {branch} -> {short(result.root)}")


@main.command()
@click.option("--specialization", required=True, help="What this repository offers.")
@click.option(
    "--substrate",
    "substrate_name",
    shell_complete=complete_substrates,
    help="The substrate its basins were fitted on.",
)
@click.option(
    "--remote", "remote_name", default="origin", show_default=True, shell_complete=complete_remotes
)
@click.option(
    "--ttl", default=3600.0, show_default=True, type=click.FloatRange(min=1), help="Seconds."
)
@click.option("--repeat", default=1, show_default=True, type=click.IntRange(min=1))
@click.option("--interval", default=5.0, show_default=True, type=click.FloatRange(min=0))
def announce(
    specialization: str,
    substrate_name: str | None,
    remote_name: str,
    ttl: float,
    repeat: int,
    interval: float,
) -> None:
    """Announce, signed and expiring, that this repository offers SPECIALIZATION."""
    from . import discovery

    with _repo() as repo:
        record, cid, heard = discovery.announce(
            repo, remote_name, specialization, substrate_name, ttl, repeat, interval
        )
    click.echo(
        f"announced {specialization} as {record.name} (record {cid}, expires "
        f"{_date(record.expires)})"
    )
    if not heard:
        click.echo("no peer of the node was listening: nobody heard it (try --repeat)", err=True)


@main.command()
@click.option("--specialization", required=True)
@click.option(
    "--substrate",
    "substrate_name",
    shell_complete=complete_substrates,
    help="Only basins fitted on this substrate.",
)
@click.option("--node", help="IPFS node RPC multiaddr (default: $BASIN_IPFS_API).")
@click.option(
    "--wait", default=10.0, show_default=True, type=click.FloatRange(min=0), help="Seconds."
)
def discover(
    specialization: str, substrate_name: str | None, node: str | None, wait: float
) -> None:
    """Listen for announcements of SPECIALIZATION and list who offers it."""
    from . import discovery, remote
    from .identity import format_key

    found, dropped = discovery.discover(remote.connect(node), specialization, substrate_name, wait)
    for f in found:
        r = f.record
        click.echo(
            f"{r.name}  heads {r.heads}  substrate {r.substrate or '-'}  "
            f"by {format_key(r.author)}  expires {_date(r.expires)}"
        )
    if not found:
        click.echo(f"no announcements of {specialization} heard in {wait:g} s")
    if dropped:
        click.echo(f"({dropped} invalid or expired announcements ignored)", err=True)


# -- git's habits: help, tag, switch, reset, revert, log ranges ---------------------------------


def _complete_commands(ctx: click.Context, param: click.Parameter, incomplete: str):
    from click.shell_completion import CompletionItem

    group = ctx.find_root().command
    names = group.list_commands(ctx) if isinstance(group, click.Group) else []
    return [CompletionItem(n) for n in names if n.startswith(incomplete)]


@main.command("help")
@click.argument("command", nargs=-1, shell_complete=_complete_commands)
@click.pass_context
def help_cmd(ctx: click.Context, command: tuple[str, ...]) -> None:
    """Show the help of COMMAND (as 'basin COMMAND --help'), or of basin itself."""
    from .refnames import shown

    target = ctx.find_root()
    for i, name in enumerate(command):
        group = target.command
        sub = group.get_command(target, name) if isinstance(group, click.Group) else None
        if sub is None:
            listing = " ".join(["basin help", *command[:i]])
            raise BasinError(f"no such command {shown(name)}: see '{listing}'")
        target = click.Context(sub, info_name=name, parent=target)
    click.echo(target.get_help())


@main.command()
@click.argument("name", required=False, shell_complete=complete_tags)
@click.argument("rev", required=False, shell_complete=complete_revisions)
@click.option("-d", "--delete", is_flag=True, help="Delete tag NAME.")
@click.option("-f", "--force", is_flag=True, help="Replace tag NAME if it exists.")
@click.option(
    "-l", "--list", "listing", is_flag=True, help="List tags; NAME and REV are then patterns."
)
def tag(name: str | None, rev: str | None, delete: bool, force: bool, listing: bool) -> None:
    """List tags, tag REV (default HEAD) as NAME, or delete NAME with -d."""
    from fnmatch import fnmatchcase

    from . import porcelain

    if delete and listing:
        raise click.UsageError("-d and -l cannot be used together")
    if delete and (name is None or rev is not None):
        raise click.UsageError("tag -d takes one tag name")
    with _repo() as repo:
        if listing or name is None:
            patterns = [p for p in (name, rev) if p is not None]
            for tname, _ in porcelain.tags(repo):
                if not patterns or any(fnmatchcase(tname, p) for p in patterns):
                    click.echo(tname)
        elif delete:
            cid = porcelain.delete_tag(repo, name)
            click.echo(f"Deleted tag '{name}' (was {short(cid)})")
        else:
            _, old = porcelain.create_tag(repo, name, rev or "HEAD", force=force)
            if old is not None:
                click.echo(f"Updated tag '{name}' (was {short(old)})")


def _report_switch(done, summary: str | None = None) -> None:
    if done.kind == "already":
        click.echo(f"Already on '{done.name}'")
    elif done.kind == "new-branch":
        click.echo(f"Switched to a new branch '{done.name}'")
    elif done.kind == "branch":
        click.echo(f"Switched to branch '{done.name}'")
    else:
        click.echo(f"HEAD is now at {short(done.cid)} {summary or ''}".rstrip())


@main.command()
@click.argument(
    "target", metavar="[BRANCH|START]", required=False, shell_complete=complete_branches
)
@click.option(
    "-c",
    "--create",
    "new",
    metavar="NEW",
    help="Create branch NEW at START (a revision; default HEAD) and switch to it.",
)
@click.option("--detach", is_flag=True, help="Detach HEAD at the commit START names.")
def switch(target: str | None, new: str | None, detach: bool) -> None:
    """Switch HEAD to BRANCH. With -c NEW, create branch NEW at START (default HEAD) first;
    with --detach, detach HEAD at the commit START names."""
    from . import porcelain

    if new is not None and detach:
        raise click.UsageError("-c and --detach cannot be used together")
    if new is None and target is None and not detach:
        raise click.UsageError("missing branch or commit argument")
    with _repo() as repo:
        if new is not None:
            done = porcelain.switch(repo, new, create=True, start=target or "HEAD")
        else:
            done = porcelain.switch(repo, target or "HEAD", detach=detach)
        summary = repo.read_commit(done.cid).message.partition("\n")[0]
    _report_switch(done, summary)


@main.command()
@click.argument("rev", default="HEAD", shell_complete=complete_revisions)
@click.option("--soft", "mode", flag_value="soft", help="Move the branch only (as all modes do).")
@click.option("--mixed", "mode", flag_value="mixed", help="The same: basin has no index.")
@click.option("--hard", "mode", flag_value="hard", help="The same: basin has no working tree.")
def reset(rev: str, mode: str | None) -> None:
    """Move the current branch (or a detached HEAD) to REV; only the ref moves."""
    from . import porcelain

    with _repo() as repo:
        _, new = porcelain.reset(repo, rev)
        summary = repo.read_commit(new).message.partition("\n")[0]
    click.echo(f"HEAD is now at {short(new)} {summary}")


@main.command()
@click.argument("rev", shell_complete=complete_revisions)
@click.option(
    "-m",
    "--mainline",
    type=click.IntRange(1),
    metavar="PARENT",
    help="For a merge commit: undo its change relative to parent number PARENT.",
)
def revert(rev: str, mainline: int | None) -> None:
    """Record a new commit whose basin undoes the change REV made (z -= z_REV - z_parent)."""
    from . import porcelain

    with _repo() as repo:
        cid = porcelain.revert(repo, rev, mainline)
        branch = repo.current_branch()
        message = repo.read_commit(cid).message
    _report_commit(branch, cid, message)
    click.echo(cid)


def _log_range(repo, spec: str, graph: bool, limit: int | None, all_refs: bool):
    """`log A..B` entries as `log` prints them: (lanes or None, CID, commit)."""
    from . import porcelain

    if graph:
        from .loggraph import graph_log_range

        order = porcelain.range_commits(repo, spec, all_refs=all_refs, topo=True)
        return graph_log_range(repo, order, limit)
    count = -1 if limit is None else limit
    return ((None, c, m) for c, m in porcelain.log_range(repo, spec, count, all_refs))


# -- the hive -------------------------------------------------------------------------------------


@main.group()
def hive() -> None:
    """Train in one shared basin with others: a coordinator and the edges that join it, or
    replicas that gossip updates over IPFS."""


class _RegistryHelp(click.Option):
    """An option whose help lists what a registry holds, formatted only when help is shown: the
    registries import numpy, which `basin --help` and the light commands must not pay for."""

    def __init__(self, *args, choices: Callable[[], dict[str, str]], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._template, self._choices = self.help or "", choices

    def get_help_record(self, ctx: click.Context):
        self.help = self._template.format(**self._choices())
        return super().get_help_record(ctx)


def _hive_choices() -> dict[str, str]:
    """The hive's registries and defaults, for the help of the options that name them."""
    from .hive import outer, rules
    from .hive.coordinator import Settings

    def listed(options: dict[str, dict]) -> str:
        return "; ".join(f"{name}: {', '.join(keys)}" for name, keys in options.items() if keys)

    return {
        "rules": ", ".join(rules.REGISTRY),
        "rule": rules.DEFAULT_RULE,
        "optimizers": ", ".join(outer.REGISTRY),
        "optimizer": Settings.optimizer,
        "c": f"{Settings.outlier_c:g}",
        "tau": f"{Settings.quarantine_tau:g}",
        "after": str(Settings.quarantine_after),
        "rule_options": listed({k: r.options for k, r in rules.REGISTRY.items()}),
        "optimizer_options": listed({k: o.defaults for k, o in outer.REGISTRY.items()}),
    }


def _hive_option(*names: str, **kwargs):
    """A click option whose help names the hive's registries ({rules}, {optimizers}, ...)."""
    return click.option(*names, cls=_RegistryHelp, choices=_hive_choices, **kwargs)


def _key_values(pairs: tuple[str, ...], option: str, number: Callable[[str], float]) -> dict:
    """KEY=VALUE pairs as a dict, each VALUE read by `number`; bad ones are one `error:` line."""
    from .errors import InputError

    out = {}
    for text in pairs:
        key, sep, value = text.partition("=")
        try:
            if not sep or not key:
                raise ValueError
            out[key] = number(value)
        except ValueError:
            raise InputError(f"{option} {text!r} is not KEY=NUMBER") from None
    return out


def _int_or_float(text: str) -> int | float:
    """An integer where the text is one (a rule's iterations), else a float (trim, tau)."""
    try:
        return int(text)
    except ValueError:
        return float(text)


@hive.command("serve")
@click.option("--branch", default="general", show_default=True, help="The shared basin's branch.")
@click.option("--listen", default="127.0.0.1:8765", show_default=True, help="HOST:PORT.")
@click.option("--round-updates", type=click.IntRange(1, 5_000), default=10, show_default=True)
@click.option(
    "--round-seconds", type=click.FloatRange(0.01, 86_400), default=30.0, show_default=True
)
@click.option(
    "--freshness",
    type=click.IntRange(1, 1000),
    default=2,
    show_default=True,
    help="An update's parent must be the head of one of this many last rounds.",
)
@_hive_option(
    "--rule",
    default=None,
    help="Aggregation rule: {rules} (default {rule}).",
)
@_hive_option(
    "--rule-option",
    "rule_options",
    multiple=True,
    metavar="KEY=VALUE",
    help="An option of the rule (repeatable): {rule_options}.",
)
@_hive_option(
    "--optimizer",
    default=None,
    help="Outer optimiser applied to the round's aggregate: {optimizers} (default {optimizer}).",
)
@_hive_option(
    "--optimizer-option",
    "optimizer_options",
    multiple=True,
    metavar="KEY=VALUE",
    help="A hyperparameter of the outer optimiser (repeatable): {optimizer_options}.",
)
@_hive_option(
    "--outlier-c",
    type=float,
    default=None,
    help="Outlier factor c: an update is refused beyond median + c·MAD (default {c}).",
)
@click.option("--open", "open_", is_flag=True, help="Take updates from untrusted signers too.")
@_hive_option(
    "--quarantine",
    "quarantine_tau",
    type=click.FloatRange(0, 1, max_open=True),
    default=None,
    help="Quarantine a signer whose summed updates point against every other of its cohort "
    "(basin key add --cohort) by a cosine below minus this, while those agree (default {tau}).",
)
@_hive_option(
    "--quarantine-after",
    type=click.IntRange(1, 1 << 30),
    default=None,
    help="Judge a signer once this many of its updates are summed (default {after}).",
)
@click.option("--no-quarantine", is_flag=True, help="Quarantine no one (releases stay yours).")
@click.option(
    "--keep-rounds",
    type=click.IntRange(1, None),
    default=None,
    help="Keep the updates of only this many last rounds in the journal (default: all).",
)
@click.option(
    "--body-timeout",
    type=click.FloatRange(0.1, 3600),
    default=30.0,
    show_default=True,
    help="Seconds an update's body may take to arrive (else 408 and the connection closes).",
)
@click.option(
    "--header-timeout",
    type=click.FloatRange(0.1, 3600),
    default=10.0,
    show_default=True,
    help="Seconds a request's headers may take to arrive (else the connection closes).",
)
@click.option(
    "--max-connections",
    type=click.IntRange(1, 1_000_000),
    default=4096,
    show_default=True,
    help="Connections open at once (within the open-file limit); past it, 503 and closed.",
)
@click.option(
    "--publish",
    metavar="REMOTE",
    shell_complete=complete_remotes,
    help="Push the branch to this remote (basin remote add) at start and after every round.",
)
def hive_serve(
    branch,
    listen,
    round_updates,
    round_seconds,
    freshness,
    rule,
    rule_options,
    optimizer,
    optimizer_options,
    outlier_c,
    open_,
    quarantine_tau,
    quarantine_after,
    no_quarantine,
    keep_rounds,
    body_timeout,
    header_timeout,
    max_connections,
    publish,
):
    """Coordinate a hive over HTTP in front of this repository (Ctrl-C stops it)."""
    from .hive import coordinator as hc
    from .hive.lock import sole
    from .hive.server import listening, serve

    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise click.BadParameter(f"{listen!r} is not HOST:PORT", param_hint="--listen")
    if no_quarantine and (quarantine_tau is not None or quarantine_after is not None):
        raise click.UsageError("--no-quarantine with --quarantine or --quarantine-after")
    given = (
        ("rule", rule),
        ("optimizer", optimizer),
        ("outlier_c", outlier_c),
        ("quarantine_tau", quarantine_tau),
        ("quarantine_after", quarantine_after),
    )
    settings = hc.Settings(
        branch,
        round_updates,
        round_seconds,
        freshness,
        open=open_,
        keep_rounds=keep_rounds,
        rule_options=_key_values(rule_options, "--rule-option", _int_or_float),
        optimizer_options=_key_values(optimizer_options, "--optimizer-option", float),
        **{k: v for k, v in given if v is not None},
        **({"quarantine_tau": None} if no_quarantine else {}),
    ).check()  # bad settings: refused before the repository is touched
    with _repo() as repo:
        if publish is not None:
            from .remote import get_remote

            get_remote(repo, publish)  # a remote that is not there: refused before anything
        if repo.branch_commit(branch) is None:
            raise RefError(f"no branch {branch!r} to coordinate")
        with listening(host, int(port)) as sock, sole(repo, "coordinator"):
            coordinator = hc.Coordinator(repo, settings)
            info = coordinator.head_info()
            click.echo(
                f"hive on http://{host}:{port}: branch {branch} at {short(info['head'])}, "
                f"round {info['round']}, key {info['key']}"
            )
            if publish is not None:
                click.echo(f"publishing {branch} to {publish} after every round")
            serve(
                coordinator,
                sock,
                publish,
                body_seconds=body_timeout,
                header_seconds=header_timeout,
                max_connections=max_connections,
            )


@hive.command("join")
@click.argument("url")
@click.option(
    "--force",
    is_flag=True,
    help="Join even where this repository has joined a hive already or the branch holds "
    "commits the hive's head lacks (the branch is moved off them).",
)
@click.option(
    "--wait",
    type=click.FloatRange(0, 3600),
    default=0,
    metavar="SECONDS",
    help="Keep asking a coordinator that does not answer yet (still starting) this long.",
)
@click.option(
    "--depth",
    type=click.IntRange(1),
    default=None,
    metavar="N",
    help="Take only the head and the N-1 rounds below it, not the whole history (a shallow "
    "repository: it cannot push or export).",
)
def hive_join(url: str, force: bool, wait: float, depth: int | None) -> None:
    """Join the hive coordinated at URL: trust its key and start from its head."""
    from .hive import edge

    with _repo() as repo:
        state, trusted = edge.join(repo, url, force, wait, depth)
    click.echo(f"joined {state.url}: branch {state.branch} at {short(state.synced)}")
    if trusted:
        click.echo(f"trusting the coordinator's key {state.key} as 'hive' (check it out of band)")
    else:
        click.echo(f"the coordinator's key {state.key} is trusted here already")


@hive.command("submit")
@click.option(
    "--samples",
    type=click.IntRange(1, 1 << 62),
    default=1,
    show_default=True,
    help="Samples (or steps) behind this change.",
)
@click.option(
    "--node",
    metavar="MULTIADDR",
    help="Gossip the update to the replicas through this IPFS node instead (no coordinator).",
)
@click.option(
    "--branch",
    default=None,
    help="With --node: the hive's branch, whose tip is the update's parent [default: general].",
)
def hive_submit(samples: int, node: str | None, branch: str | None) -> None:
    """Send the change since the last sync as a signed update (with --node: the change of HEAD
    since the hive's head, gossiped to its replicas)."""
    if node is None:
        if branch is not None:
            raise click.UsageError("--branch goes with --node")
        from .hive import edge

        with _repo() as repo:
            answer = edge.submit(repo, samples)
        click.echo(
            f"submitted update {answer['cid']} for round {answer['round']} "
            f"({answer['bytes']} bytes, {_plural(answer['coordinates'], 'coordinate')})"
        )
        return
    from .hive import replica
    from .ipfs import Node

    with _repo() as repo:  # the node is first asked to store the update, once it is made
        cid, update = replica.gossip(repo, Node(node), branch or "general", samples)
    click.echo(
        f"gossiped update {cid} after {short(update.parent)} "
        f"({len(update.encode())} bytes, {_plural(update.change.k, 'coordinate')})"
    )


@hive.command("replica")
@click.option(
    "--node", metavar="MULTIADDR", help="IPFS node RPC multiaddr (default: $BASIN_IPFS_API)."
)
@click.option("--branch", default="general", show_default=True, help="The hive's branch.")
@_hive_option(
    "--rule",
    default=None,
    help="Aggregation rule, the same on every replica: {rules} (default {rule}).",
)
@click.option(
    "--window",
    type=click.FloatRange(0.1, 86_400),
    default=10.0,
    show_default=True,
    help="Seconds a round stays open after its first update is heard.",
)
@click.option(
    "--rounds", type=click.IntRange(1), default=None, help="Stop after N rounds [default: never]."
)
def hive_replica(
    node: str | None, branch: str, rule: str | None, window: float, rounds: int | None
) -> None:
    """Run a replica of the hive without a coordinator: hear updates on the IPFS node's pubsub,
    make each round's head by the deterministic rule and move BRANCH there (Ctrl-C stops it)."""
    from . import remote
    from .hive import replica, rules
    from .hive.lock import sole

    rule = rules.get(rule or rules.DEFAULT_RULE).name
    with _repo() as repo:
        head = repo.branch_commit(branch)
        if head is None:
            raise RefError(f"no branch named {branch!r}")
        with sole(repo, "replica"):
            client = remote.connect(node)
            events = replica.follow(
                repo, client, branch, rule, window, log=lambda line: click.echo(line, err=True)
            )
            genesis = replica.hive_genesis(repo, head)
            click.echo(f"replica of {branch} at {head} on {replica.topic(genesis)}: listening")
            closed = 0
            for event in events:
                if event.kind == "adopted":
                    taken = f"{event.taken} updates taken"
                    click.echo(f"adopted {event.head} ({taken}), from the others")
                    continue
                closed += 1
                click.echo(f"round {closed}: {event.head} ({event.taken} updates taken)")
                if rounds is not None and closed >= rounds:
                    break


def _plural(n: int, noun: str) -> str:
    """Counted: "1 update", "2 updates"."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


@hive.command("status")
def hive_status() -> None:
    """Where this edge and its coordinator stand: the head synced, local work, the round."""
    from .hive import edge

    with _repo() as repo:
        here = edge.local_status(repo)
    click.echo(f"hive {here.url}, branch {here.branch}; {_plural(here.sent, 'update')} sent")
    click.echo(f"synced to {short(here.synced)}; {here.branch}: {here.work}")
    there = edge.coordinator_status(here.url)  # down: the local part is printed, then the error
    newer = "" if there.head == here.synced else " (newer than synced: basin hive sync)"
    click.echo(f"coordinator: round {there.round}, head {short(there.head)}{newer}")
    held = f"; {_plural(there.quarantined, 'signer')} quarantined" if there.quarantined else ""
    click.echo(
        f"updates: {there.pending} pending this round, {there.taken} taken, {there.refused} "
        f"refused{held}"
    )


def _hive_journal(repo) -> Journal:
    """This repository's coordinator journal, open (the caller closes it)."""
    from .hive.coordinator import JOURNAL_FILE
    from .hive.journal import Journal

    path = Path(repo.basin_dir) / JOURNAL_FILE
    if not path.is_file():
        raise BasinError(f"no hive journal in {repo.basin_dir}: basin hive serve keeps one")
    return Journal(path)


@hive.command("signers")
@click.option(
    "--since", type=click.IntRange(0), default=0, show_default=True, help="The first round counted."
)
def hive_signers(since: int) -> None:
    """What each signer did, from this coordinator's journal: updates taken, refused, pending,
    which other signer its updates (taken, or refused as outliers), summed, point most against
    and most along, its cohort and whether it is quarantined."""
    from .hive import signers
    from .identity import format_key
    from .progress import progress_bar

    with _repo() as repo:
        journal = _hive_journal(repo)
        try:
            with progress_bar(journal.held(since), "signers", unit="updates") as update:
                rows = signers.report(journal.history(since), repo.config.chart, update)
            held = dict(journal.quarantined())
        finally:
            journal.close()
        trusted = {t.key: t for t in reversed(repo.config.trusted)}  # the first entry's

    def name(key: bytes) -> str:
        return trusted[key].name if key in trusted else f"{format_key(key)[:12]}… (not trusted)"

    def other(pair: tuple[bytes, float] | None) -> str:
        return "-" if pair is None else f"{name(pair[0])} {pair[1]:+.2f}"

    if not rows:
        click.echo(f"no updates from round {since} on")
        return
    table = [
        (
            "signer",
            "cohort",
            "taken",
            "refused",
            "pending",
            "last round",
            "most against",
            "most along",
            "quarantined",
        )
    ]
    table += [
        (
            name(r.author),
            (trusted[r.author].cohort or "-") if r.author in trusted else "-",
            r.taken,
            r.refused,
            r.pending,
            r.last_round,
            other(r.against),
            other(r.along),
            f"since round {held[r.author][0]}" if r.author in held else "-",
        )
        for r in sorted(rows, key=lambda r: name(r.author))
    ]
    widths = [max(len(str(row[k])) for row in table) for k in range(len(table[0]))]
    for row in table:
        click.echo("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    for author, (round_, why) in sorted(held.items(), key=lambda kv: name(kv[0])):
        click.echo(f"{name(author)} quarantined at round {round_}: {why}")


@hive.command("release")
@click.argument("key_or_name")
def hive_release(key_or_name: str) -> None:
    """Lift a signer's quarantine (given by name or key); its summed direction starts again.
    Works beside a running coordinator, which takes the signer's next update."""
    from . import porcelain
    from .identity import format_key, parse_key

    with _repo() as repo:
        try:
            key = porcelain.trusted_entry(repo, key_or_name).key
        except BasinError:
            if any(t.name == key_or_name for t in repo.config.trusted):
                raise  # a name several signers share: trusted_entry says to give the key
            try:  # a signer no longer trusted, by its key
                key = parse_key(key_or_name)
            except BasinError:
                raise BasinError(f"no trusted signer or key {key_or_name!r}") from None
        journal = _hive_journal(repo)
        try:
            held = journal.release(key)
        finally:
            journal.close()
    if not held:
        raise BasinError(f"{key_or_name} is not quarantined")
    click.echo(f"released {key_or_name} ({format_key(key)})")


@hive.command("sync")
def hive_sync() -> None:
    """Bring this repository to the coordinator's head (local unsubmitted work is merged)."""
    from .hive import edge

    with _repo() as repo:
        result = edge.sync(repo)
    note = f" ({result.note})" if result.note else ""
    click.echo(f"{result.kind}: {short(result.head)}{note}")


if __name__ == "__main__":  # pragma: no cover
    main()
