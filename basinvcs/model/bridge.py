"""The model bridge: models into basins (`commit --model`), basins into models (`checkout`).

Both directions stream tensor by tensor: θ0 of one tensor is generated, compared or offset, and
dropped before the next, so memory stays at a few tensors whatever the substrate's size. A checkout
goes further where θ0 is a file (`hf`): it is read, offset, checked and written a piece (`PIECE`)
at a time through one buffer, which stays in cache meanwhile. The CLI and the Python API call the
same functions with different tensor sources and sinks.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import numeric, porcelain
from ..cid import CID
from ..errors import BasinError, InputError, SchemaError
from ..identity import basin_home
from ..objects import Basin, Chart, SubstrateRef
from ..repository import Repository
from .modelio import Pieces
from .projection import BLOCK, Projection, beta_at
from .registry import find_substrate, load_substrate
from .substrate import Header, Substrate, TensorSpec

LOW_CAPTURE = 0.5  # below this, tell the user plainly the basin lost most of the change
PIECE = 16 * BLOCK  # values a checkout reads, offsets, checks and writes at a time: 4 MB, cached

TensorSource = Callable[[str], torch.Tensor]


@dataclass(frozen=True)
class Extraction:
    """What `extract` found: the coordinates and how much of the model's change they hold."""

    substrate: Substrate
    z: torch.Tensor  # float64, as computed (before the packet's float24 rounding)
    delta_sq: float  # ‖θ − θ0‖²
    captured_sq: float  # ‖β·P z‖² with z as the packet stores it

    @property
    def captured(self) -> float:
        return self.captured_sq / self.delta_sq if self.delta_sq else 1.0


@dataclass(frozen=True)
class ModelCommit:
    cid: CID
    extraction: Extraction
    cross_substrate: bool = False


def projection_for(repo: Repository, substrate: Substrate) -> Projection:
    """The repository's chart on this substrate, shared while the process lives; its Gram
    correction (0.1-0.2 s to compute at d = 1024) is kept in `gram_cache()` for later processes."""
    return _projection(repo.config.chart, tuple(substrate.specs), gram_cache())


def gram_cache() -> Path:
    """Where Gram factors are kept, one file per (chart, projected tensors): see projection.py."""
    return basin_home() / "cache" / "gram"


@functools.lru_cache(maxsize=4)
def _projection(chart: Chart, specs: tuple[TensorSpec, ...], cache: Path) -> Projection:
    return Projection(chart, specs, cache=cache)


def _offset_norm_sq(proj: Projection, z: torch.Tensor, beta: Sequence[float]) -> float:
    """‖β·P z‖²: with constant β it is β²‖z‖² (P has orthonormal columns); else decode and sum."""
    if len(beta) == 1 or all(b == 0 for b in beta[1:]):
        return beta[0] ** 2 * float(z.double().square().sum())
    return math.fsum(float(t.double().square().sum()) for _, t in proj.decode(z, beta))


def extract(
    proj: Projection,
    substrate: Substrate,
    tensor: TensorSource,
    beta: Sequence[float],
    progress: Callable[[int], None] | None = None,
    names: dict[str, str] | None = None,
) -> Extraction:
    """z = Pᵀ((θ − θ0)/β) from a model given tensor by tensor; refuses non-finite weights.

    `names` maps spec names to the model's own tensor names (default: the same); a tensor it
    leaves out is taken to be at θ0. Changes to tensors the chart does not project (masked ones,
    fixed buffers) count in ‖θ − θ0‖ but cannot be captured: the captured fraction shows them.
    `progress(n)` is told the parameters done after each tensor.
    """
    names = {s.name: s.name for s in substrate.specs} if names is None else names
    projected = {s.name for s in proj.specs}
    enc = proj.encoder()
    delta_sq = 0.0
    for spec in substrate.specs:
        if spec.name in names and spec.dtype.is_floating_point:
            theta0 = substrate.theta0(spec)
            # into θ0's buffer: writing to the model's tensor would copy-on-write its mmapped pages
            value = tensor(names[spec.name]).to(torch.float32)
            delta = torch.sub(value, theta0, out=theta0)
            norm = float(torch.linalg.vector_norm(delta))  # NaN or inf anywhere: non-finite
            if not math.isfinite(norm):
                raise SchemaError(f"tensor {names[spec.name]} has NaN or infinite values")
            delta_sq += norm * norm
            if spec.name in projected:
                enc.add(spec, delta, 1.0 / beta_at(beta, spec.depth))
        if progress:
            progress(spec.numel)
    z = enc.finish()
    stored = torch.tensor(
        numeric.quantize(z.tolist()), dtype=torch.float64
    )  # as the packet keeps it
    return Extraction(substrate, z, delta_sq, _offset_norm_sq(proj, stored, beta))


def commit_tensors(
    repo: Repository,
    tensor: TensorSource,
    header: Header,
    message: str,
    *,
    substrate: str | None = None,
    fisher: Sequence[float] | None = None,
) -> ModelCommit:
    """Commit the basin of a model whose tensors `tensor(name)` returns and `header` describes.

    A progress bar over the model's parameters shows on a terminal (see progress.py).
    """
    from ..progress import progress_bar

    sub = load_substrate(substrate) if substrate else find_substrate(header)
    names = sub.tensor_map(header)
    head = repo.read_basin(repo.read_commit(repo.head_commit()).basin)
    total = sum(s.numel for s in sub.specs)
    with progress_bar(total, f"commit {sub.name}", unit="params") as update:
        ex = extract(projection_for(repo, sub), sub, tensor, head.beta, update, names)
    basin = Basin.create(
        repo.config.chart,
        ex.z.tolist(),
        fisher=fisher,
        beta=head.beta,
        entanglements=head.entanglements,
        labels=head.labels,
        substrate=SubstrateRef(sub.name, sub.fingerprint, sub.num_params),
    )
    if basin.z == head.z and fisher is None:
        raise BasinError("nothing to commit: the model's basin is the same as HEAD's")
    metrics = {
        "captured": ex.captured,
        "delta_norm": math.sqrt(ex.delta_sq),
        "z_norm": basin.norm(),
    }
    cid = porcelain.commit(repo, basin, message, metrics=metrics)
    cross = head.substrate is not None and head.substrate.fingerprint != sub.fingerprint
    return ModelCommit(cid, ex, cross)


def commit_model(
    repo: Repository,
    path: Path,
    message: str,
    *,
    substrate: str | None = None,
    fisher: Sequence[float] | None = None,
) -> ModelCommit:
    """`basin commit --model PATH`: a model file (safetensors, or a torch file read safely) or a
    Hugging Face folder (single or sharded safetensors)."""
    from .modelio import open_model

    _refuse_foreign(path)
    with open_model(path) as model:
        return commit_tensors(
            repo, model.tensor, model.header(), message, substrate=substrate, fisher=fisher
        )


def _refuse_foreign(path: Path) -> None:
    """Formats a model may come in that basin does not read, each with what to do instead."""
    if path.suffix == ".gguf":
        raise SchemaError(
            f"{path} is a GGUF file (quantised weights): convert it to a Hugging Face folder "
            "first (python scripts/gguf_to_hf.py FILE -o DIR) and commit that"
        )
    weights = ("model.safetensors", "model.safetensors.index.json")
    if path.is_dir() and not any((path / name).exists() for name in weights):
        from .families.hf import check_source

        check_source(path)  # names a pickle-only or GGUF-only folder precisely


def commit_state_dict(
    repo: Repository,
    state: dict[str, torch.Tensor],
    message: str,
    *,
    substrate: str | None = None,
    fisher: Sequence[float] | None = None,
) -> ModelCommit:
    """Commit a model held in memory (a state dict), without writing weights to disk."""
    header = {name: (_st_dtype(t.dtype), tuple(t.shape)) for name, t in state.items()}
    return commit_tensors(
        repo,
        lambda name: state[name].detach(),
        header,
        message,
        substrate=substrate,
        fisher=fisher,
    )


def _st_dtype(dtype: torch.dtype) -> str:
    from .modelio import DTYPES

    try:
        return DTYPES[dtype]
    except KeyError:
        raise SchemaError(f"unsupported tensor dtype {dtype}") from None


# -- checkout -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decoded:
    """A basin decoded into a substrate, ready to stream: the commit, basin and tensors."""

    commit: CID
    basin: Basin
    substrate: Substrate
    projection: Projection

    @property
    def cross_substrate(self) -> bool:
        """True when the basin was fitted on another substrate than the one it is decoded into."""
        fitted = self.basin.substrate
        return fitted is not None and fitted.fingerprint != self.substrate.fingerprint

    def tensors(self) -> Iterator[tuple[TensorSpec, torch.Tensor]]:
        """(spec, θ0 + β·P z) for every tensor, one at a time: float32, or the stored dtype for
        tensors the chart does not project (θ0 as it is)."""
        u = self.projection.bases(torch.tensor(self.basin.z, dtype=torch.float64))
        projected = {s.name for s in self.projection.specs}
        for spec in self.substrate.specs:
            theta = self.substrate.theta0(spec)
            if spec.name in projected:
                self.projection.add_offset(theta, spec, u, beta_at(self.basin.beta, spec.depth))
            yield spec, theta

    def pieces(
        self, theta0: Callable[[TensorSpec], Iterator[torch.Tensor]]
    ) -> Iterator[tuple[str, Pieces]]:
        """What `tensors` gives, for `write_model`, as pieces of θ0 from `theta0(spec)` offset in
        place (so a piece stays valid only until the next is asked for): the same values, bit
        for bit (see Projection.add_offset)."""
        u = self.projection.bases(torch.tensor(self.basin.z, dtype=torch.float64))
        projected = {s.name for s in self.projection.specs}
        for spec in self.substrate.specs:
            pieces = theta0(spec)
            if spec.name in projected:
                pieces = self._offset(spec, pieces, u, beta_at(self.basin.beta, spec.depth))
            yield spec.name, Pieces(spec.shape, pieces)

    def _offset(
        self, spec: TensorSpec, pieces: Iterator[torch.Tensor], u: torch.Tensor, scale: float
    ) -> Iterator[torch.Tensor]:
        start = 0
        for piece in pieces:
            self.projection.add_offset(piece, spec, u, scale, start)
            start += piece.numel()
            yield piece


def decode(repo: Repository, rev: str, substrate: str) -> Decoded:
    cid = repo.resolve(rev)
    basin = repo.read_basin(repo.read_commit(cid).basin)
    sub = load_substrate(substrate)
    if basin.chart != repo.config.chart:
        raise BasinError(f"basin chart {basin.chart} is not the repository's")
    return Decoded(cid, basin, sub, projection_for(repo, sub))


def write_decoded(
    dec: Decoded,
    out: Path,
    *,
    dtype: torch.dtype = torch.float32,
    max_shard_bytes: int = 2 << 30,
    progress: Callable[[int], None] | None = None,
) -> list[Path]:
    """Stream a decoded basin to safetensors (sharded above `max_shard_bytes`).

    A substrate with folder files (`hf`: config, tokenizer) is written as a folder transformers
    loads: those files beside the weights. Floating-point tensors are written as `dtype`, the
    others in their own dtype.
    """
    from .modelio import copy_file, write_model

    files = dec.substrate.folder_files()
    if files and out.suffix == ".safetensors":
        raise SchemaError(
            f"substrate {dec.substrate.name} checks out into a folder (config, tokenizer and "
            f"weights): give -o a directory, not {out}"
        )
    metadata = {
        "basinvcs.commit": str(dec.commit),
        "basinvcs.substrate": dec.substrate.name,
        "basinvcs.fingerprint": dec.substrate.fingerprint.hex(),
        "basinvcs.chart": str(dec.basin.chart),
    }
    specs = [
        (s.name, s.shape) if s.dtype.is_floating_point else (s.name, s.shape, s.dtype)
        for s in dec.substrate.specs
    ]
    with dec.substrate.theta0_pieces(PIECE) as theta0:
        written = write_model(
            out,
            specs,
            dec.pieces(theta0),
            dtype=dtype,
            max_shard_bytes=max_shard_bytes,
            metadata=metadata,
            progress=progress,
        )
    for name, source in files.items():
        copy_file(source, out / name)
        written.append(out / name)
    return written


def check_output(out: Path, *, force: bool = False) -> None:
    """Refuse, before anything is written, a checkout output (`-o`) that would overwrite or
    create more than it names: an existing file, or a folder that is not empty, unless `force`;
    a file where a folder is meant; a parent directory that does not exist (never made silently).

    `out` ending in `.safetensors` is a file (its shards and index go beside it); anything else is
    a folder, which is created if missing.
    """
    import os

    parent = out.parent
    if not parent.is_dir():
        what = (
            "is not a directory" if os.path.lexists(parent) else "does not exist: create it first"
        )
        raise InputError(f"cannot write {out}: {parent} {what}")
    if out.suffix == ".safetensors":
        stem = out.name.removesuffix(".safetensors")
        taken = [p for p in (out, parent / f"{stem}.safetensors.index.json") if os.path.lexists(p)]
        if taken and out.is_dir():
            raise InputError(f"cannot write {out}: it is a directory")
        if taken and not force:
            raise InputError(f"{taken[0]} already exists: give --force to overwrite it")
        return
    if os.path.lexists(out) and not out.is_dir():
        raise InputError(f"cannot write the model folder {out}: a file of that name exists")
    if out.is_dir() and not force:
        try:
            full = any(out.iterdir())
        except OSError as exc:
            raise InputError(f"cannot read the folder {out}: {exc.strerror or exc}") from None
        if full:
            raise InputError(
                f"{out} is a folder that is not empty: give --force to write the model into it"
            )


def checkout_model(
    repo: Repository, rev: str, substrate: str, out: Path, **options
) -> tuple[Decoded, list[Path]]:
    """`basin checkout REV --model SUBSTRATE -o OUT`: write θ0 + β·P z as safetensors."""
    dec = decode(repo, rev, substrate)
    return dec, write_decoded(dec, out, **options)


def load_fisher(path: Path) -> list[float]:
    """A Fisher diagonal from a JSON list or a safetensors file holding exactly one tensor."""
    from ..inputs import parse_json, read_file

    try:
        if path.suffix == ".json":
            values = parse_json(read_file(path, MAX_FISHER_JSON, "Fisher file"), str(path))
            if not isinstance(values, list):
                raise SchemaError(f"{path}: expected a JSON list of numbers")
            return [_fisher_value(path, i, v) for i, v in enumerate(values)]
        from .modelio import open_model

        with open_model(path) as model:
            names = list(model.header())
            if len(names) != 1:
                raise SchemaError(f"{path}: expected one tensor, found {len(names)}")
            return model.tensor(names[0]).double().reshape(-1).tolist()
    except (OSError, ValueError, TypeError) as exc:
        raise SchemaError(f"cannot read Fisher diagonal {path}: {exc}") from None


MAX_FISHER_JSON = 64 << 20  # a few million numbers: far beyond any chart


def _fisher_value(path: Path, i: int, v: object) -> float:
    """One number of a Fisher list; packets refuse non-finite or negative values later."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise SchemaError(f"{path}: value {i} is {type(v).__name__}, not a number")
    try:
        return float(v)
    except OverflowError:
        raise SchemaError(f"{path}: value {i} is an integer beyond the float range") from None


def checkout_state_dict(repo: Repository, rev: str, substrate: str) -> dict[str, torch.Tensor]:
    """A basin as a state dict for `substrate`, in memory (small substrates)."""
    return {spec.name: t for spec, t in decode(repo, rev, substrate).tensors()}
