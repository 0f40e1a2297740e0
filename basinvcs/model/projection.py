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
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Protocol

import torch

from ..errors import SchemaError
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
    """Unnormalised Walsh-Hadamard transform along the last axis (Sylvester order), new tensor."""
    n = x.shape[-1]
    if n & (n - 1):
        raise ValueError(f"Walsh-Hadamard length {n} is not a power of two")
    lead = x.shape[:-1]
    y = x.reshape(-1, n)
    h = 1
    while h < n:
        y = y.view(y.shape[0], n // (2 * h), 2, h)
        a, b = y[:, :, 0, :], y[:, :, 1, :]
        y = torch.stack((a + b, a - b), dim=2)
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

    def __init__(self, chart: Chart, specs: Sequence[Spec]):
        if chart.kind != "srht":
            raise SchemaError(f"unknown chart kind {chart.kind!r}")
        if chart.dim > BLOCK:
            raise SchemaError(f"chart dimension {chart.dim} is over the srht limit {BLOCK}")
        self.chart = chart
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

    def blocks(self, spec: Spec) -> list[Block]:
        n = math.prod(spec.shape)
        out = []
        for k, start in enumerate(range(0, n, BLOCK)):
            h = _seed_int("srht/1", self.chart.seed, spec.name, tuple(spec.shape), k)
            out.append(
                Block(start, min(BLOCK, n - start), h % BASES, (h >> 8) % SIGNS, (h >> 16) % BLOCK)
            )
        return out

    # -- the Gram correction --------------------------------------------------------------------

    @cached_property
    def _cholesky(self) -> torch.Tensor:
        """L with G = PᵀP = L Lᵀ (d × d, float64); P L^{-T} then has orthonormal columns.

        Short blocks' Grams are summed per base in the Walsh domain (the transform is linear), so
        the work is one transform and one d × d gather per base, whatever the substrate.
        """
        d = self.chart.dim
        windows = torch.zeros(BASES, BLOCK, dtype=torch.float64)
        j = torch.arange(BLOCK)
        full = 0
        for spec in self.specs:
            for blk in self.blocks(spec):
                if blk.length == BLOCK:
                    full += 1
                else:  # rows kept, seen through the roll: w[j] = 1 iff (j + s) mod M < length
                    windows[blk.base] += ((j + blk.shift) % BLOCK < blk.length).to(torch.float64)
        spectra = fwht(windows) / BLOCK
        signs = self._in_signs.to(torch.float64)
        gram = torch.eye(d, dtype=torch.float64) * full
        for a in range(BASES):
            e = self._positions[a]
            de = signs[a, e]
            gram += spectra[a][e[:, None] ^ e[None, :]] * (de[:, None] * de[None, :])
        factor, info = torch.linalg.cholesky_ex(gram)
        if info or factor.diagonal().min() <= 1e-6 * factor.diagonal().max():
            raise SchemaError("substrate too small for the chart: its projection is singular")
        return factor

    def _whiten(self, z: torch.Tensor) -> torch.Tensor:
        """L^{-T} z: coordinates as the raw blocks see them."""
        return torch.linalg.solve_triangular(self._cholesky.T, z[:, None], upper=True)[:, 0]

    def _unwhiten(self, v: torch.Tensor) -> torch.Tensor:
        """L^{-1} v: the adjoint of _whiten, applied after the raw encode."""
        return torch.linalg.solve_triangular(self._cholesky, v[:, None], upper=False)[:, 0]

    # -- decode: z -> offsets -------------------------------------------------------------------

    def bases(self, z: torch.Tensor) -> torch.Tensor:
        """u_a for corrected z, (L, M) float32: all the randomness a decode needs."""
        if z.shape != (self.chart.dim,):
            raise SchemaError(f"z has shape {tuple(z.shape)}, the chart needs ({self.chart.dim},)")
        zc = self._whiten(z.to(torch.float64))
        scattered = torch.zeros(BASES, BLOCK, dtype=torch.float64)
        scattered.scatter_(1, self._positions, zc.expand(BASES, -1).clone())
        return (fwht(scattered * self._in_signs) / math.sqrt(BLOCK)).to(torch.float32)

    def add_offset(self, out: torch.Tensor, spec: Spec, u: torch.Tensor, scale: float) -> None:
        """out (the flattened tensor `spec`, float32) += scale · (P z)_spec, in place."""
        flat = out.view(-1)
        signs = self._out_signs
        for blk in self.blocks(spec):
            base, sg, s, n = u[blk.base], signs[blk.signs], blk.shift, blk.length
            head = min(s, n)  # positions [0, s): u[M - s + i]
            if head:
                dst = flat[blk.start : blk.start + head]
                dst.addcmul_(base[BLOCK - s : BLOCK - s + head], sg[:head], value=scale)
            if n > s:  # positions [s, n): u[i - s]
                dst = flat[blk.start + s : blk.start + n]
                dst.addcmul_(base[: n - s], sg[s:n], value=scale)

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
