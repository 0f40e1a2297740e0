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
The Gram correction is the one cost that grows with d (tens of milliseconds at d = 1024, most of
it the Cholesky factorisation): a Projection given a `cache` folder keeps the factor L there between
processes, with the chart's draws (E, D, S) and the blocks' hashes, which took a new process 5 ms
to draw again (see `_kept`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import mmap
import os
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from itertools import accumulate, pairwise
from pathlib import Path
from typing import NamedTuple, Protocol

import numpy as np
import torch

from ..atomic import replacing
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


def _seed_text(parts: Iterable[object]) -> bytes:
    return "\x1f".join(map(str, parts)).encode()


def _seed_int(*parts: object) -> int:
    return int.from_bytes(hashlib.blake2b(_seed_text(parts), digest_size=8).digest(), "little")


def _seed_ints(prefix: tuple[object, ...], count: int) -> list[int]:
    """`_seed_int(*prefix, k)` for k < count, the prefix hashed once and its state copied: half
    the time (MiniLM's 431 blocks in 105 tensors: 0.30 against 0.57 ms)."""
    state = hashlib.blake2b(_seed_text((*prefix, "")), digest_size=8)
    out = []
    for k in range(count):
        h = state.copy()
        h.update(str(k).encode())
        out.append(int.from_bytes(h.digest(), "little"))
    return out


def _generator(*parts: object) -> torch.Generator:
    gen = torch.Generator()
    gen.manual_seed(_seed_int(*parts) & ((1 << 63) - 1))
    return gen


def _spec_key(spec: Spec) -> tuple[str, tuple[int, ...]]:
    return spec.name, tuple(spec.shape)


def _block_count(shape: Sequence[int]) -> int:
    return -(-math.prod(shape) // BLOCK)


class Block(NamedTuple):
    """One block of one tensor: its span in the flattened tensor and its (base, signs, shift).
    A named tuple: built 431 times per MiniLM checkout, in a third of a frozen dataclass's time."""

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
    def _kept(self) -> Kept | None:
        """The chart's draws, the blocks' hashes and the Gram factor as the cache file keeps them
        for this chart and these tensors, read once; None without a cache folder or an intact
        file there (all are then drawn, hashed and computed, and `_cholesky` keeps them)."""
        if self.cache is None:
            return None
        counts = [_block_count(s.shape) for s in self.specs]
        return _read_kept(*self._kept_file(), self.chart.dim, counts)

    def _kept_file(self) -> tuple[Path, bytes]:
        """The cache file for this chart and these tensors, and its key."""
        assert self.cache is not None
        key = self.gram_key()
        return self.cache / f"{key.hex()}{GRAM_SUFFIX}", key

    @cached_property
    def _positions(self) -> torch.Tensor:
        """E_a: for each base, the d of M positions that coordinates are scattered to. (L, d)."""
        if self._kept is not None:
            return self._kept.positions
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
        return _signs(torch.stack(rows))

    @cached_property
    def _in_signs(self) -> torch.Tensor:
        """D_a, (L, M)."""
        return self._kept.in_signs if self._kept is not None else self._sign_rows("D", BASES)

    @cached_property
    def _out_signs(self) -> torch.Tensor:
        """S_b, (T, M)."""
        return self._kept.out_signs if self._kept is not None else self._sign_rows("S", SIGNS)

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
        hashes = self._block_hashes(*_spec_key(spec))
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
        SmolLM2 checkout. The cache file keeps those of every projected tensor (0.3 ms for
        MiniLM's 431 blocks)."""
        if not self._hashes and self._kept is not None:
            self._hashes = dict(zip(map(_spec_key, self.specs), self._kept.hashes, strict=True))
        key = (name, shape)
        if key not in self._hashes:
            count = _block_count(shape)
            self._hashes[key] = _seed_ints(("srht/1", self.chart.seed, name, shape), count)
        return self._hashes[key]

    # -- the Gram correction --------------------------------------------------------------------

    @cached_property
    def _cholesky(self) -> torch.Tensor:
        """L with G = PᵀP = L Lᵀ (d × d, float64); P L^{-T} then has orthonormal columns.

        With a `cache` folder, read from there when a file for this very chart and these tensors
        holds it intact, else computed and written there, with the draws and the blocks' hashes,
        for the next process.
        """
        if self._kept is not None:
            return self._kept.factor
        factor = self._gram_factor()
        if self.cache is not None:
            draws = (self._positions, self._in_signs, self._out_signs)
            hashes = [self._block_hashes(*_spec_key(s)) for s in self.specs]
            _write_kept(*self._kept_file(), Kept(*draws, hashes, factor))
        return factor

    def gram_key(self) -> bytes:
        """sha2-256 of everything the Gram correction depends on: the construction (its version
        and constants), the chart (kind, seed, dimension, mask) and every projected tensor's name
        and shape, in order: projections with one key have one Gram matrix, the same draws and the
        same block hashes."""
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

        Only G's lower triangle is filled (the Cholesky factorisation reads nothing else: LAPACK's
        potrf with uplo L), by blocks of GRAM_ROWS rows, each through every base while it is in
        cache: 0.56 of the gathers at d = 1024, in reused buffers. Each entry is summed over the
        bases in the same order as before, so the factor has the same bits.
        """
        d = self.chart.dim
        full, windows = self._windows()
        spectra = fwht(windows) / BLOCK
        # positions as int32: the XOR and the gather (index_select, which takes int32, not take)
        # run on half the index bytes: 7 ms against 16-21 for MiniLM's G
        bases = [(e.int(), self._in_signs[a, e].double()) for a, e in enumerate(self._positions)]
        gram = torch.zeros(d, d, dtype=torch.float64)
        gram.diagonal().fill_(full)
        room = min(GRAM_ROWS, d) * d
        index = torch.empty(room, dtype=torch.int32)
        terms, signs = torch.empty(2, room, dtype=torch.float64)
        for top in range(0, d, GRAM_ROWS):
            end = min(top + GRAM_ROWS, d)
            block = gram[top:end, :end]  # the rows up to their block's end on the diagonal
            shape, size = block.shape, block.numel()
            for spectrum, (e, de) in zip(spectra, bases, strict=True):
                torch.bitwise_xor(e[top:end, None], e[None, :end], out=index[:size].view(shape))
                torch.index_select(spectrum, 0, index[:size], out=terms[:size])
                # the signs' products are ±1, so each term is exact and only the sum rounds
                block.addcmul_(
                    terms[:size].view(shape),
                    torch.outer(de[top:end], de[:end], out=signs[:size].view(shape)),
                )
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


GRAM_FORMAT = b"basinvcs-gram/2\n"  # the first bytes of a kept file; /1 kept the factor alone
GRAM_SUFFIX = ".gram"
GRAM_CACHE_BYTES = 512 * 2**20  # kept files in one folder: some 60 charts at d = 1024
GRAM_ROWS = 128  # rows of G filled at a time (see _gram_factor): 64 to 256 as fast as each other


@dataclass(frozen=True)
class Kept:
    """What a cache file keeps for one chart and its projected tensors: the chart's draws, the
    blocks' hashes and the Gram factor, as `Projection` uses them."""

    positions: torch.Tensor  # E, (L, d) int64
    in_signs: torch.Tensor  # D, (L, M) float32 ±1
    out_signs: torch.Tensor  # S, (T, M) float32 ±1
    hashes: list[list[int]]  # each projected tensor's block hashes, in order
    factor: torch.Tensor  # L, (d, d) float64


def _signs(bits: torch.Tensor) -> torch.Tensor:
    """0/1 to ±1 float32, as the draws are used."""
    return bits.to(torch.float32).mul_(2).sub_(1)


def _kept_sizes(dim: int, blocks: int) -> tuple[int, ...]:
    """Bytes of the positions (int64), the signs D and S (a bit each), the block hashes (uint64)
    and the factor (float64)."""
    return BASES * dim * 8, BASES * BLOCK // 8, SIGNS * BLOCK // 8, blocks * 8, dim * dim * 8


_KEPT_HEAD = len(GRAM_FORMAT) + 32 + 8  # the format, the key, the CRC-32 (8 bytes: data aligned)


def _read_kept(path: Path, key: bytes, dim: int, counts: list[int]) -> Kept | None:
    """What a cache file keeps, or None where it is missing, of another format or size, another
    key's, or does not match its CRC-32 (truncated, corrupted): the caller then draws and
    computes afresh.

    File: GRAM_FORMAT, the key, CRC-32 of the data (8 bytes), data: positions, signs D then S
    packed 8 to a byte, block hashes (`counts` per tensor), factor column by column (as the
    factorisation lays it out, so it is used in the same layout computed or read); all
    little-endian.

    CRC-32, not a cryptographic digest: the file is a cache in the user's own BASIN_HOME,
    checked against damage (CRC-32 misses random damage once in 2^32, and none within 32
    consecutive bits), not against a forger, who could as well rewrite θ0 beside it; the length
    is checked exactly and the key byte for byte. It takes 1.2 ms of the 8.6 MB at d = 1024,
    sha2-256 4.2 ms, blake2b 6.1 ms. The file is mapped (copy-on-write), not read: read into new
    memory and checked it took 4.9 ms, mapped and checked 1.3 ms (the page faults of new memory).
    basinvcs only ever replaces a kept file whole, by rename, so the pages checked stay those
    used; a file cut short in place under a running process would fault it, as any mapped file
    would (safetensors maps θ0 the same way)."""
    sizes = _kept_sizes(dim, sum(counts))
    size = _KEPT_HEAD + sum(sizes)
    try:
        with open_regular(path, "Gram factor") as fh:
            if os.fstat(fh.fileno()).st_size != size:
                return None
            try:
                raw: mmap.mmap | bytearray = mmap.mmap(fh.fileno(), size, access=mmap.ACCESS_COPY)
            except OSError:  # a filesystem that cannot map files: read it
                raw = bytearray(size)
                if fh.readinto(raw) != size:
                    return None
    except (OSError, InputError):
        return None
    view, start = memoryview(raw), len(GRAM_FORMAT)
    if (
        view[:start] != GRAM_FORMAT
        or view[start : start + 32] != key
        or zlib.crc32(view[_KEPT_HEAD:]) != int.from_bytes(view[start + 32 : _KEPT_HEAD], "little")
    ):
        return None
    with contextlib.suppress(OSError):  # its last use, for `_prune`
        os.utime(path)
    at = list(accumulate((_KEPT_HEAD, *sizes)))  # where each part starts; no copies of the 8 MB

    def signs(part: int, rows: int) -> torch.Tensor:
        bits = np.frombuffer(raw, np.uint8, sizes[part], at[part]).reshape(rows, BLOCK // 8)
        return _signs(torch.from_numpy(np.unpackbits(bits, axis=1)))

    hashes = np.frombuffer(raw, "<u8", sum(counts), at[3]).tolist()
    ends = list(accumulate(counts, initial=0))
    return Kept(
        torch.frombuffer(raw, dtype=torch.int64, offset=at[0], count=BASES * dim).view(BASES, -1),
        signs(1, BASES),
        signs(2, SIGNS),
        [hashes[a:b] for a, b in pairwise(ends)],
        torch.frombuffer(raw, dtype=torch.float64, offset=at[4], count=dim * dim).view(dim, dim).T,
    )


def _write_kept(path: Path, key: bytes, kept: Kept) -> None:
    """Keep draws and factor in the cache, through a temporary file renamed into place (readers
    see the old file or the new one, whole). A cache that cannot be written is only a slower
    next run."""
    parts = [
        kept.positions.contiguous().numpy(),
        np.packbits(kept.in_signs.numpy() > 0, axis=1),
        np.packbits(kept.out_signs.numpy() > 0, axis=1),
        np.array([h for hashes in kept.hashes for h in hashes], dtype="<u8"),
        kept.factor.T.contiguous().numpy(),  # no copy: the factorisation's L is column-major
    ]
    crc = 0
    for part in parts:
        crc = zlib.crc32(part, crc)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with replacing(path) as fh:
            fh.write(GRAM_FORMAT + key + crc.to_bytes(8, "little"))
            for part in parts:
                fh.write(part)
    except OSError:
        return
    _prune(path.parent, path)


def _prune(folder: Path, written: Path) -> None:
    """Remove kept files of other formats (older versions of basinvcs: their keys hold their
    format, so no file of this one's is ever read again), then the least recently used of the
    rest while the folder holds more than GRAM_CACHE_BYTES: every chart and
    substrate a user ever checked out leaves a file of megabytes (8.6 MB at d = 1024). `written`,
    the file just kept, stays. Reads touch a file's mtime (`_read_kept`), so mtime is its last
    use. A file another process has mapped is only unlinked: its mapping stays valid."""
    kept = []
    for other in folder.glob(f"*{GRAM_SUFFIX}"):
        try:
            with open(other, "rb") as fh:
                stale = fh.read(len(GRAM_FORMAT)) != GRAM_FORMAT
            if stale:
                other.unlink()
            elif other != written:
                st = other.stat()
                kept.append((st.st_mtime_ns, st.st_size, other))
        except OSError:
            continue
    try:
        total = written.stat().st_size + sum(size for _, size, _ in kept)
    except OSError:
        return
    for _, size, other in sorted(kept, key=lambda t: (t[0], t[2].name)):
        if total <= GRAM_CACHE_BYTES:
            break
        try:
            other.unlink()
        except OSError:
            continue
        total -= size


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
