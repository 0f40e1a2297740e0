"""The chart's projection P: coordinates z ∈ R^d to a weight offset for every tensor of a substrate.

Construction (chart kind ``srht``, see docs/projection.md). A substrate's parameters are cut, tensor
by tensor, into blocks of M = 2^16 elements (the last block of a tensor may be shorter). The chart
seed fixes L base transforms and T sign patterns of length M:

    u_a = H (D_a ⊙ scatter_{E_a}(z')) / √M          a < L   (one fast Walsh-Hadamard transform each)
    block k of tensor t  =  S_b ⊙ roll(u_a, s)        (a, b, s) = hash(seed, tensor name, shape, k)

D_a are random signs, E_a a random choice of d of the M positions, S_b random signs. Every full
block is an orthogonal transform of (H D_a E_a), so it has orthonormal columns; shorter blocks do
not, so the whole P has Gram matrix G = PᵀP = (#full blocks)·I + Σ(short blocks' Grams), computed
exactly (each short block's Gram comes from one more Walsh-Hadamard transform) and undone with
its Cholesky factor, G = L Lᵀ: decoding uses z' = L^{-T} z, encoding applies L^{-1} last.
Hence (P L^{-T})ᵀ(P L^{-T}) = I exactly, up to float rounding.

Cost: L transforms of length M per decode (independent of the substrate's size), then one fused
multiply-add per parameter; encode is the adjoint: one multiply-add per parameter into L
accumulators, then L transforms. Nothing of size N × d ever exists; work streams tensor by tensor.
The Gram correction is the one cost that grows with d (0.1-0.2 s at d = 1024): a Projection given
a `cache` folder keeps the factor L there between processes (see `_cholesky`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Protocol

import torch

from ..errors import InputError, SchemaError
from ..inputs import open_regular
from ..objects import Chart

BLOCK = 1 << 16  # M
BASES = 8  # L
SIGNS = 8  # T


class Spec(Protocol):
    """What the projection needs to know of a tensor (substrate.TensorSpec satisfies it)."""

    name: str
    shape: tuple[int, ...]
    depth: float


def projected_specs(chart: Chart, specs: Sequence[Spec]) -> list[Spec]:
    """The tensors P moves: floating-point parameters (a spec's `projected`, True if it has no
    such field) that the chart's mask does not exclude, in the substrate's order."""
    return [s for s in specs if getattr(s, "projected", True) and not chart.excludes(s.name)]


def fwht(x: torch.Tensor) -> torch.Tensor:
    """Unnormalised Walsh-Hadamard transform along the last axis (Sylvester order), new tensor.

    The stages alternate between two buffers, not a fresh tensor each: a decode runs one transform
    per call, and allocating (and page-faulting) sixteen 4 MB tensors made it 1.7 times slower."""
    n = x.shape[-1]
    if n & (n - 1):
        raise ValueError(f"Walsh-Hadamard length {n} is not a power of two")
    lead = x.shape[:-1]
    y = x.reshape(-1, n)
    spare = (torch.empty_like(y), torch.empty_like(y))  # stages alternate between two buffers
    h = 1
    while h < n:
        nxt = spare[1] if y is spare[0] else spare[0]
        v = y.view(y.shape[0], n // (2 * h), 2, h)
        w = nxt.view(v.shape)
        torch.add(v[:, :, 0], v[:, :, 1], out=w[:, :, 0])
        torch.sub(v[:, :, 0], v[:, :, 1], out=w[:, :, 1])
        y = nxt
        h *= 2
    return y.reshape(*lead, n)


def beta_at(beta: Sequence[float], depth: float) -> float:
    """β(depth) = Σ_k beta[k] · depth^k."""
    return math.fsum(c * depth**k for k, c in enumerate(beta))


def _seed_int(*parts: object) -> int:
    text = "\x1f".join(map(str, parts)).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little")


def _generator(*parts: object) -> torch.Generator:
    gen = torch.Generator()
    gen.manual_seed(_seed_int(*parts) & ((1 << 63) - 1))
    return gen


@dataclass(frozen=True)
class Block:
    """One block of one tensor: its span in the flattened tensor and its (base, signs, shift)."""

    start: int
    length: int
    base: int
    signs: int
    shift: int


class Projection:
    """P for one chart and one substrate: decode z to offsets, encode offsets to z (adjoints)."""

    def __init__(self, chart: Chart, specs: Sequence[Spec], *, cache: Path | None = None):
        """`cache`: a folder where the Gram factor is kept between processes (None: computed
        whenever a Projection first needs it)."""
        if chart.kind != "srht":
            raise SchemaError(f"unknown chart kind {chart.kind!r}")
        if chart.dim > BLOCK:
            raise SchemaError(f"chart dimension {chart.dim} is over the srht limit {BLOCK}")
        self.chart = chart
        self.cache = cache
        self._hashes: dict[tuple[str, tuple[int, ...]], list[int]] = {}
        self.specs = projected_specs(chart, specs)
        if not self.specs:
            raise SchemaError(
                f"the chart's mask ({', '.join(chart.exclude)}) leaves no tensor to project"
            )
        self.numel = sum(math.prod(s.shape) for s in self.specs)
        if self.numel < chart.dim:
            raise SchemaError(
                f"substrate has {self.numel} parameters, "
                f"fewer than the chart's {chart.dim} coordinates"
            )

    # -- the chart's random objects -------------------------------------------------------------

    @cached_property
    def _positions(self) -> torch.Tensor:
        """E_a: for each base, the d of M positions that coordinates are scattered to. (L, d)."""
        return torch.stack(
            [
                torch.randperm(BLOCK, generator=_generator("srht/1", self.chart.seed, "E", a))[
                    : self.chart.dim
                ]
                for a in range(BASES)
            ]
        )

    def _sign_rows(self, what: str, count: int) -> torch.Tensor:
        rows = [
            torch.randint(0, 2, (BLOCK,), generator=_generator("srht/1", self.chart.seed, what, i))
            for i in range(count)
        ]
        return torch.stack(rows).to(torch.float32).mul_(2).sub_(1)

    @cached_property
    def _in_signs(self) -> torch.Tensor:
        """D_a, (L, M)."""
        return self._sign_rows("D", BASES)

    @cached_property
    def _out_signs(self) -> torch.Tensor:
        """S_b, (T, M)."""
        return self._sign_rows("S", SIGNS)

    @cached_property
    def _out_sign_rows(self) -> tuple[torch.Tensor, ...]:
        """S_b one by one, kept: unbinding them on every add_offset took 3 of the 14 µs that
        offsetting a small tensor (a bias, a norm) took."""
        return self._out_signs.unbind()

    def blocks(self, spec: Spec, start: int = 0, stop: int | None = None) -> list[Block]:
        """The blocks of `spec` in order; with `start`/`stop` (positions in the flattened tensor)
        only those that begin in [start, stop): a tensor offset piece by piece hashes each block
        once."""
        n = math.prod(spec.shape)
        stop = n if stop is None else min(stop, n)
        hashes = self._block_hashes(spec.name, tuple(spec.shape))
        out = []
        for k in range(-(-start // BLOCK), -(-stop // BLOCK)):
            begin, h = k * BLOCK, hashes[k]
            out.append(
                Block(begin, min(BLOCK, n - begin), h % BASES, (h >> 8) % SIGNS, (h >> 16) % BLOCK)
            )
        return out

    def _block_hashes(self, name: str, shape: tuple[int, ...]) -> list[int]:
        """The hash of each block of one tensor, computed once per Projection (some 40 bytes
        per 64K parameters): every decode and encode asks again, and hashing took 6 ms of each
        SmolLM2 checkout."""
        key = (name, shape)
        if key not in self._hashes:
            count = -(-math.prod(shape) // BLOCK)
            seed = self.chart.seed
            self._hashes[key] = [_seed_int("srht/1", seed, name, shape, k) for k in range(count)]
        return self._hashes[key]

    # -- the Gram correction --------------------------------------------------------------------

    @cached_property
    def _cholesky(self) -> torch.Tensor:
        """L with G = PᵀP = L Lᵀ (d × d, float64); P L^{-T} then has orthonormal columns.

        With a `cache` folder, read from there when a file for this very chart and these tensors
        holds it intact, else computed and written there for the next process.
        """
        if self.cache is None:
            return self._gram_factor()
        key = self.gram_key()
        path = self.cache / f"{key.hex()}{GRAM_SUFFIX}"
        factor = _read_factor(path, key, self.chart.dim)
        if factor is None:
            factor = self._gram_factor()
            _write_factor(path, key, factor)
        return factor

    def gram_key(self) -> bytes:
        """sha2-256 of everything the Gram correction depends on: the construction (its version
        and constants), the chart (kind, seed, dimension, mask) and every projected tensor's name
        and shape, in order: projections with one key have one Gram matrix."""
        chart = self.chart
        doc = [
            GRAM_FORMAT.decode().strip(),
            [BLOCK, BASES, SIGNS],
            [chart.kind, chart.seed, chart.dim, list(chart.exclude)],
            [[s.name, list(s.shape)] for s in self.specs],
        ]
        return hashlib.sha256(json.dumps(doc, separators=(",", ":")).encode()).digest()

    def _gram_factor(self) -> torch.Tensor:
        """L computed. Short blocks' Grams are summed per base in the Walsh domain (the transform
        is linear), so the work is one transform and one d × d gather per base, whatever the
        substrate.
        """
        d = self.chart.dim
        full, windows = self._windows()
        spectra = fwht(windows) / BLOCK
        signs = self._in_signs.to(torch.float64)
        gram = torch.eye(d, dtype=torch.float64) * full
        for a in range(BASES):
            e = self._positions[a]
            de = signs[a, e]
            # the signs' products are ±1, so each term is exact and only the sum rounds
            gram.addcmul_(spectra[a].take(e[:, None] ^ e[None, :]), torch.outer(de, de))
        factor, info = torch.linalg.cholesky_ex(gram)
        if info or factor.diagonal().min() <= 1e-6 * factor.diagonal().max():
            raise SchemaError("substrate too small for the chart: its projection is singular")
        return factor

    def _windows(self) -> tuple[int, torch.Tensor]:
        """(full blocks, per base and row how many short blocks keep that row), float64.

        Only a tensor's last block can be short. Seen through its roll, a block of length n and
        shift s keeps row j iff (j + s) mod M < n: a circular run of n rows from (M - s) mod M,
        counted as two marks in a difference array and summed up once per base (whole numbers,
        exact), not one length-M comparison per short block.
        """
        full, bases, rows, marks = 0, [], [], []
        for spec in self.specs:
            n = math.prod(spec.shape)
            full += n // BLOCK
            if n % BLOCK:
                (blk,) = self.blocks(spec, n - n % BLOCK)
                begin = (BLOCK - blk.shift) % BLOCK
                end = begin + blk.length
                runs = [(begin, end)] if end <= BLOCK else [(begin, BLOCK), (0, end - BLOCK)]
                for lo, hi in runs:
                    bases += [blk.base, blk.base]
                    rows += [lo, hi]
                    marks += [1, -1]
        diff = torch.zeros(BASES, BLOCK + 1, dtype=torch.int64)
        index = (torch.tensor(bases, dtype=torch.int64), torch.tensor(rows, dtype=torch.int64))
        diff.index_put_(index, torch.tensor(marks, dtype=torch.int64), accumulate=True)
        return full, diff[:, :BLOCK].cumsum(1).to(torch.float64)

    def _whiten(self, z: torch.Tensor) -> torch.Tensor:
        """L^{-T} z: coordinates as the raw blocks see them."""
        return torch.linalg.solve_triangular(self._cholesky.T, z[:, None], upper=True)[:, 0]

    def _unwhiten(self, v: torch.Tensor) -> torch.Tensor:
        """L^{-1} v: the adjoint of _whiten, applied after the raw encode."""
        return torch.linalg.solve_triangular(self._cholesky, v[:, None], upper=False)[:, 0]

    # -- decode: z -> offsets -------------------------------------------------------------------

    def bases(self, z: torch.Tensor) -> torch.Tensor:
        """u_a for corrected z, each row twice over, (L, 2M) float32: all the randomness a
        decode needs, laid out so that a block's roll of u_a is one slice (see add_offset)."""
        if z.shape != (self.chart.dim,):
            raise SchemaError(f"z has shape {tuple(z.shape)}, the chart needs ({self.chart.dim},)")
        zc = self._whiten(z.to(torch.float64))
        scattered = torch.zeros(BASES, BLOCK, dtype=torch.float64)
        scattered.scatter_(1, self._positions, zc.expand(BASES, -1).clone())
        u = fwht(scattered.mul_(self._in_signs)).div_(math.sqrt(BLOCK))  # fwht gives a new tensor
        out = torch.empty(BASES, 2 * BLOCK, dtype=torch.float32)
        out[:, :BLOCK] = u
        out[:, BLOCK:] = out[:, :BLOCK]
        return out

    def add_offset(
        self, out: torch.Tensor, spec: Spec, u: torch.Tensor, scale: float, start: int = 0
    ) -> None:
        """out += scale · (P z)_spec in place, `out` (float32) holding the flattened tensor `spec`
        from position `start` on, `u` from `bases`. A piece must start and end on block boundaries
        (multiples of M, or the tensor's end), so a tensor may be offset a piece at a time.

        Position i of a block takes u_a[(i - s) mod M] = doubled u_a[M - s + i]: one multiply-add
        call per block. Each value is θ + round(scale · u) · (±1), one rounding then the add's, so
        the bits do not depend on how positions are grouped into calls."""
        flat = out.view(-1)
        stop, numel = start + flat.numel(), math.prod(spec.shape)
        if start % BLOCK or stop > numel or (stop % BLOCK and stop != numel):
            raise ValueError(f"positions {start}..{stop} of {spec.name} are not whole blocks")
        rows, signs = u.unbind(), self._out_sign_rows
        for blk in self.blocks(spec, start, stop):
            at, s, n = blk.start - start, blk.shift, blk.length
            rolled = rows[blk.base][BLOCK - s : BLOCK - s + n]
            flat[at : at + n].addcmul_(rolled, signs[blk.signs][:n], value=scale)

    def decode(
        self, z: torch.Tensor, beta: Sequence[float] = (1.0,)
    ) -> Iterator[tuple[Spec, torch.Tensor]]:
        """(spec, β(depth)·(P z) for that tensor) for every tensor, one at a time."""
        u = self.bases(z)
        for spec in self.specs:
            out = torch.zeros(spec.shape, dtype=torch.float32)
            self.add_offset(out, spec, u, beta_at(beta, spec.depth))
            yield spec, out

    # -- encode: offsets -> z -------------------------------------------------------------------

    def encoder(self) -> Encoder:
        return Encoder(self)

    def encode(
        self, tensors: Iterable[tuple[Spec, torch.Tensor]], beta: Sequence[float] = (1.0,)
    ) -> torch.Tensor:
        """z = Pᵀ (Δ / β) from (spec, Δ) pairs, Δ the change of that tensor (float64 result)."""
        enc = self.encoder()
        for spec, delta in tensors:
            enc.add(spec, delta, 1.0 / beta_at(beta, spec.depth))
        return enc.finish()


GRAM_FORMAT = b"basinvcs-gram/1\n"  # the first bytes of a cached factor's file
GRAM_SUFFIX = ".gram"


def _read_factor(path: Path, key: bytes, dim: int) -> torch.Tensor | None:
    """The factor a cache file holds, or None where it is missing, of another size, or does not
    match its digest (another key's, truncated, corrupted): the caller then computes it afresh.

    File: GRAM_FORMAT, sha2-256 of (key, data), data (d × d float64, little-endian)."""
    head = len(GRAM_FORMAT) + 32
    raw = bytearray(head + dim * dim * 8 + 1)  # one byte more: a longer file is not ours either
    try:
        with open_regular(path, "Gram factor") as fh:
            got = fh.readinto(raw)
    except (OSError, InputError):
        return None
    view = memoryview(raw)
    if got != len(raw) - 1 or not raw.startswith(GRAM_FORMAT):
        return None
    digest = hashlib.sha256(key)
    digest.update(view[head:-1])  # no copies of the 8 MB: hashed and wrapped where they lie
    if digest.digest() != view[len(GRAM_FORMAT) : head]:
        return None
    return torch.frombuffer(raw, dtype=torch.float64, offset=head, count=dim * dim).view(dim, dim)


def _write_factor(path: Path, key: bytes, factor: torch.Tensor) -> None:
    """Keep a factor in the cache, through a temporary file renamed into place (readers see the
    old file or the new one, whole). A cache that cannot be written is only a slower next run."""
    data = factor.contiguous().view(torch.uint8).numpy()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=GRAM_SUFFIX)
    except OSError:
        return
    try:
        digest = hashlib.sha256(key)
        digest.update(data)
        with os.fdopen(fd, "wb") as fh:
            fh.write(GRAM_FORMAT + digest.digest())
            fh.write(data)
        os.replace(tmp, path)
    except OSError:
        pass
    finally:
        Path(tmp).unlink(missing_ok=True)


class Encoder:
    """Accumulates Pᵀ x tensor by tensor: memory is L·M floats whatever the substrate's size."""

    def __init__(self, projection: Projection):
        self.p = projection
        self.acc = torch.zeros(BASES, BLOCK, dtype=torch.float64)
        self._partial = torch.zeros(BASES, BLOCK, dtype=torch.float32)
        self._pending = 0

    def add(self, spec: Spec, x: torch.Tensor, scale: float = 1.0) -> None:
        """Add Pᵀ(scale · x) for tensor `spec` (x has its shape; any float dtype)."""
        flat = x.reshape(-1).to(torch.float32)
        signs = self.p._out_signs
        for blk in self.p.blocks(spec):
            acc, sg, s, n = self._partial[blk.base], signs[blk.signs], blk.shift, blk.length
            seg = flat[blk.start : blk.start + n]
            head = min(s, n)
            if head:  # acc[M - s + i] += S[i] x[i] for i < s
                acc[BLOCK - s : BLOCK - s + head].addcmul_(sg[:head], seg[:head], value=scale)
            if n > s:  # acc[i - s] += S[i] x[i] for i >= s
                acc[: n - s].addcmul_(sg[s:n], seg[s:n], value=scale)
            self._pending += 1
            if self._pending >= 64:  # fold into float64 now and then: float32 sums drift
                self._flush()

    def _flush(self) -> None:
        self.acc += self._partial
        self._partial.zero_()
        self._pending = 0

    def finish(self) -> torch.Tensor:
        self._flush()
        t = fwht(self.acc) / math.sqrt(BLOCK) * self.p._in_signs
        v = t.gather(1, self.p._positions).sum(0)
        return self.p._unwhiten(v)


def offset_fn(projection: Projection) -> Callable[[torch.Tensor], torch.Tensor]:
    """P z as one flat float32 vector (all tensors concatenated), differentiable in z.

    For training inside the basin: backward is the encoder (the exact adjoint), so a step costs one
    decode and one encode, never N × d.
    """

    class _Decode(torch.autograd.Function):
        @staticmethod
        def forward(ctx, z: torch.Tensor) -> torch.Tensor:  # noqa: ARG004
            u = projection.bases(z.detach())
            out = torch.zeros(projection.numel, dtype=torch.float32)
            pos = 0
            for spec in projection.specs:
                n = math.prod(spec.shape)
                projection.add_offset(out[pos : pos + n], spec, u, 1.0)
                pos += n
            return out

        @staticmethod
        def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: ARG004
            enc = projection.encoder()
            pos = 0
            for spec in projection.specs:
                n = math.prod(spec.shape)
                enc.add(spec, grad[pos : pos + n])
                pos += n
            return enc.finish().to(grad.dtype)

    return _Decode.apply
