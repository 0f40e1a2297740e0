"""The chart projection: orthonormal columns, exact adjoint, determinism, streaming."""

import hashlib
import os
import subprocess
import sys
from dataclasses import dataclass

import pytest
import torch

from basinvcs.errors import SchemaError
from basinvcs.model import projection
from basinvcs.model.projection import (
    _KEPT_HEAD,
    BASES,
    BLOCK,
    GRAM_FORMAT,
    Projection,
    _kept_sizes,
    _seed_int,
    _seed_ints,
    beta_at,
    fwht,
    offset_fn,
)
from basinvcs.objects import Chart


@dataclass(frozen=True)
class Spec:
    name: str
    shape: tuple[int, ...]
    depth: float = 0.5


# Full blocks, short blocks, a tensor smaller than d, and one spanning several blocks.
SPECS = [
    Spec("tok_emb.weight", (256, 128), 0.0),
    Spec("blocks.0.attn.qkv.weight", (384, 128), 0.25),
    Spec("blocks.0.mlp.fc.weight", (512, 128), 0.25),
    Spec("blocks.0.ln1.weight", (128,), 0.25),
    Spec("blocks.1.mlp.fc2.weight", (1000, 300), 0.75),
    Spec("ln_f.weight", (128,), 1.0),
]


def flat(pairs) -> torch.Tensor:
    return torch.cat([t.reshape(-1).double() for _, t in pairs])


def test_fwht_matches_the_hadamard_matrix():
    m = 16
    h = torch.tensor(
        [[(-1) ** bin(i & j).count("1") for j in range(m)] for i in range(m)], dtype=torch.float64
    )
    x = torch.randn(3, m, dtype=torch.float64)
    assert torch.allclose(fwht(x), x @ h.T)
    with pytest.raises(ValueError):
        fwht(torch.zeros(12))


@pytest.mark.parametrize("dim", [64, 1024])
def test_columns_are_orthonormal_on_probes(dim):
    p = Projection(Chart(seed=3, dim=dim), SPECS)
    eye = torch.eye(dim, dtype=torch.float64)
    for i in (0, 1, dim // 2, dim - 1):
        column = p.decode(eye[i])
        back = p.encode(column)
        assert (back - eye[i]).abs().max() < 1e-5  # Pᵀ P e_i = e_i
    z = torch.randn(dim, dtype=torch.float64)
    assert abs(flat(p.decode(z)).norm() / z.norm() - 1) < 1e-6  # ‖P z‖ = ‖z‖


def test_encode_is_the_exact_adjoint_of_decode():
    p = Projection(Chart(seed=5, dim=128), SPECS)
    z = torch.randn(128, dtype=torch.float64)
    x = [(s, torch.randn(s.shape)) for s in SPECS]
    lhs = (flat(p.decode(z)) * flat(x)).sum()
    rhs = (p.encode(x) * z).sum()
    assert torch.isclose(lhs, rhs, rtol=1e-5)


def test_beta_scales_by_depth_and_encode_divides_it_out():
    beta = (1.0, 2.0)  # β(depth) = 1 + 2·depth
    p = Projection(Chart(seed=5, dim=64), SPECS)
    z = torch.randn(64, dtype=torch.float64)
    plain = dict((s.name, t) for s, t in p.decode(z))
    scaled = list(p.decode(z, beta))
    for spec, t in scaled:
        assert torch.allclose(t, plain[spec.name] * beta_at(beta, spec.depth), atol=1e-6)
    assert (p.encode(scaled, beta) - z).abs().max() < 1e-5


def test_a_random_full_change_keeps_about_d_over_n_of_its_norm():
    p = Projection(Chart(seed=1, dim=256), SPECS)
    x = [(s, torch.randn(s.shape)) for s in SPECS]
    captured = (p.encode(x).norm() ** 2 / flat(x).norm() ** 2).item()
    expected = 256 / p.numel
    assert 0.7 * expected < captured < 1.3 * expected


DECODE = """
import hashlib, sys, torch
from tests.model.test_projection import SPECS
from basinvcs.objects import Chart
from basinvcs.model.projection import Projection
p = Projection(Chart(seed=int(sys.argv[1]), dim=256), SPECS)
z = torch.linspace(-1, 1, 256, dtype=torch.float64)
h = hashlib.sha256()
for _, t in p.decode(z):
    h.update(t.numpy().tobytes())
print(h.hexdigest())
"""


def test_same_chart_same_bytes_in_two_processes_other_seed_other_bytes():
    def run(seed: int) -> str:
        done = subprocess.run(
            [sys.executable, "-c", DECODE, str(seed)], capture_output=True, text=True, check=True
        )
        return done.stdout.strip()

    first, again, other = run(7), run(7), run(8)
    assert first == again != other


def test_decode_is_differentiable_with_the_encoder_as_backward():
    p = Projection(Chart(seed=2, dim=32), SPECS)
    f = offset_fn(p)
    z = torch.randn(32, requires_grad=True)
    w = torch.randn(p.numel)
    (f(z) * w).sum().backward()
    pieces, pos = [], 0
    for s in SPECS:
        n = torch.Size(s.shape).numel()
        pieces.append((s, w[pos : pos + n].reshape(s.shape)))
        pos += n
    assert torch.allclose(z.grad.double(), p.encode(pieces), atol=1e-5)


def test_refusals():
    with pytest.raises(SchemaError, match="fewer than the chart's 1024"):
        Projection(Chart(dim=1024), [Spec("x", (10, 10))])
    p = Projection(Chart(dim=64), SPECS)
    with pytest.raises(SchemaError, match="needs \\(64,\\)"):
        p.bases(torch.zeros(65))


def test_blocks_cover_each_tensor_exactly():
    p = Projection(Chart(dim=64), SPECS)
    for spec in SPECS:
        blocks = p.blocks(spec)
        assert blocks[0].start == 0 and all(b.length <= BLOCK for b in blocks)
        assert sum(b.length for b in blocks) == torch.Size(spec.shape).numel()
    digest = hashlib.sha256(repr(p.blocks(SPECS[4])).encode()).hexdigest()
    assert (
        digest
        == hashlib.sha256(
            repr(Projection(Chart(dim=64), SPECS).blocks(SPECS[4])).encode()
        ).hexdigest()
    )


def _stacked_fwht(x: torch.Tensor) -> torch.Tensor:
    """The radix-2 butterfly written plainly, a new tensor per stage: what `fwht` must equal."""
    n = x.shape[-1]
    y = x.reshape(-1, n)
    h = 1
    while h < n:
        y = y.view(y.shape[0], n // (2 * h), 2, h)
        y = torch.stack((y[:, :, 0] + y[:, :, 1], y[:, :, 0] - y[:, :, 1]), dim=2)
        h *= 2
    return y.reshape(x.shape)


@pytest.mark.parametrize("shape", [(1,), (2,), (3, 16), (8, BLOCK)])
def test_fwht_in_two_buffers_gives_the_same_bits_and_leaves_its_input(shape):
    x = torch.randn(shape, dtype=torch.float64)
    kept = x.clone()
    assert torch.equal(fwht(x), _stacked_fwht(x))
    assert torch.equal(x, kept)


def test_a_tensor_offset_piece_by_piece_gets_the_same_bits_as_at_once():
    p = Projection(Chart(seed=4, dim=64), SPECS)
    spec = SPECS[4]  # 300,000 values: four full blocks and a short one
    u = p.bases(torch.randn(64, dtype=torch.float64))
    base = torch.randn(spec.shape)
    whole = base.clone()
    p.add_offset(whole, spec, u, 0.3)
    for size in (BLOCK, 3 * BLOCK):
        pieced = base.clone().view(-1)
        for start in range(0, pieced.numel(), size):
            p.add_offset(pieced[start : start + size], spec, u, 0.3, start)
        assert torch.equal(pieced.view(spec.shape), whole)
    with pytest.raises(ValueError, match="not whole blocks"):
        p.add_offset(base.view(-1)[1 : BLOCK + 1], spec, u, 0.3, 1)
    with pytest.raises(ValueError, match="not whole blocks"):
        p.add_offset(base.view(-1)[: BLOCK + 5], spec, u, 0.3)


# -- the Gram factor kept between processes -------------------------------------------------------


def gram_files(folder) -> list:
    return sorted(folder.glob("*.gram")) if folder.exists() else []


def factor(chart: Chart, specs=SPECS, cache=None) -> torch.Tensor:
    """The Gram factor a new Projection uses: computed, or read from `cache`."""
    return Projection(chart, specs, cache=cache)._cholesky


def test_the_gram_factor_is_kept_and_reused_bit_for_bit(tmp_path, monkeypatch):
    chart = Chart(seed=5, dim=64)
    fresh = factor(chart, SPECS)
    first = factor(chart, SPECS, cache=tmp_path)
    (kept,) = gram_files(tmp_path)
    assert torch.equal(first, fresh)
    assert kept.name == f"{Projection(chart, SPECS).gram_key().hex()}.gram"

    def not_again(self):
        raise AssertionError("the kept factor should have been read")

    monkeypatch.setattr(Projection, "_gram_factor", not_again)
    again = Projection(chart, SPECS, cache=tmp_path)
    assert torch.equal(again._cholesky, fresh)
    z = torch.randn(64, dtype=torch.float64)
    assert torch.equal(
        flat(again.decode(z)), flat(Projection(chart, SPECS, cache=tmp_path).decode(z))
    )


@pytest.mark.parametrize(
    "other",
    [
        lambda: (Chart(seed=6, dim=64), SPECS),  # another seed
        lambda: (Chart(seed=5, dim=32), SPECS),  # another dimension
        lambda: (Chart(seed=5, dim=64, exclude=("ln_f.*",)), SPECS),  # another mask
        lambda: (Chart(seed=5, dim=64), [*SPECS[:-1], Spec("ln_f.bias", (128,))]),  # renamed
        lambda: (Chart(seed=5, dim=64), [*SPECS[:-1], Spec("ln_f.weight", (64, 2))]),  # reshaped
    ],
)
def test_another_chart_or_substrate_never_reuses_a_kept_factor(tmp_path, other):
    factor(Chart(seed=5, dim=64), SPECS, cache=tmp_path)
    chart, specs = other()
    got = Projection(chart, specs, cache=tmp_path)
    assert torch.equal(got._cholesky, factor(chart, specs))
    assert len(gram_files(tmp_path)) == 2  # a file of its own, keyed by what the factor depends on


def corrupt_flip(path):
    raw = bytearray(path.read_bytes())
    raw[-9] ^= 0x40
    path.write_bytes(bytes(raw))


def flip_at(where):
    """A corruption flipping one bit of the byte at `where(file size)`."""

    def corrupt(path):
        raw = bytearray(path.read_bytes())
        raw[where(len(raw))] ^= 0x01
        path.write_bytes(bytes(raw))

    return corrupt


def part_start(part: int) -> int:
    """Where data part `part` of the kept file of Chart(dim=64) and SPECS starts: positions,
    signs D, signs S, block hashes, factor."""
    blocks = sum(-(-torch.Size(s.shape).numel() // BLOCK) for s in SPECS)
    return _KEPT_HEAD + sum(_kept_sizes(64, blocks)[:part])


@pytest.mark.parametrize(
    "corrupt",
    [
        corrupt_flip,
        lambda path: path.write_bytes(path.read_bytes()[:-8]),  # truncated
        lambda path: path.write_bytes(path.read_bytes() + b"\0"),  # longer
        lambda path: path.write_bytes(b"x" + path.read_bytes()[1:]),  # not our format
        lambda path: path.write_bytes(b""),
        flip_at(lambda size: len(GRAM_FORMAT)),  # the key it holds
        flip_at(lambda size: len(GRAM_FORMAT) + 32),  # its CRC-32
        *(flip_at(lambda size, part=part: part_start(part) + 5) for part in range(5)),
        flip_at(lambda size: size - 1),  # the factor's last byte
    ],
)
def test_a_corrupt_kept_factor_is_recomputed_and_replaced(tmp_path, corrupt):
    chart = Chart(seed=5, dim=64)
    fresh = factor(chart, SPECS)
    factor(chart, SPECS, cache=tmp_path)
    (kept,) = gram_files(tmp_path)
    good = kept.read_bytes()
    corrupt(kept)
    assert torch.equal(factor(chart, SPECS, cache=tmp_path), fresh)
    assert kept.read_bytes() == good


def test_a_factor_under_another_keys_name_is_not_taken(tmp_path):
    """The file holds its key: a file renamed (or copied) to another key's name is refused."""
    a, b = Chart(seed=5, dim=64), Chart(seed=6, dim=64)
    factor(a, SPECS, cache=tmp_path)
    (kept,) = gram_files(tmp_path)
    kept.rename(tmp_path / f"{Projection(b, SPECS).gram_key().hex()}.gram")
    assert torch.equal(factor(b, SPECS, cache=tmp_path), factor(b, SPECS))


def test_a_kept_file_of_the_first_format_is_recomputed_never_misread(tmp_path):
    """basinvcs-gram/1 kept the factor alone under its sha2-256. Its files sit under other names
    (the format is in the key); one under this key's name is refused all the same, and replaced."""
    chart = Chart(seed=5, dim=64)
    fresh = Projection(chart, SPECS)
    key = fresh.gram_key()
    data = fresh._cholesky.contiguous().view(torch.uint8).numpy().tobytes()
    old = b"basinvcs-gram/1\n" + hashlib.sha256(key + data).digest() + data
    path = tmp_path / f"{key.hex()}.gram"
    path.write_bytes(old)
    assert torch.equal(factor(chart, SPECS, cache=tmp_path), fresh._cholesky)
    assert path.read_bytes().startswith(GRAM_FORMAT)


def test_writing_a_kept_file_removes_those_of_other_formats(tmp_path):
    """Files of the first format are never read again (other names): the next write removes
    them, and leaves the current format's files and everything else in the folder."""
    a, b = Chart(seed=5, dim=64), Chart(seed=6, dim=64)
    factor(a, SPECS, cache=tmp_path)
    (current,) = gram_files(tmp_path)
    old = tmp_path / f"{'ab' * 32}.gram"
    old.write_bytes(b"basinvcs-gram/1\n" + bytes(64))
    other = tmp_path / "notes.txt"
    other.write_text("not ours")
    factor(b, SPECS, cache=tmp_path)
    assert not old.exists() and other.exists() and current.exists()
    assert len(gram_files(tmp_path)) == 2


def test_the_kept_files_are_bounded_and_the_least_recently_used_go_first(tmp_path, monkeypatch):
    """A folder over GRAM_CACHE_BYTES loses the files used longest ago (a read counts as a use)
    until it fits again; the file just written stays even if it alone is over."""
    charts = [Chart(seed=s, dim=64) for s in (5, 6, 7)]
    for k, chart in enumerate(charts):
        factor(chart, SPECS, cache=tmp_path)
        path = tmp_path / f"{Projection(chart, SPECS).gram_key().hex()}.gram"
        os.utime(path, ns=(k * 10**9, k * 10**9))  # written one second after another
    paths = gram_files(tmp_path)
    size = paths[0].stat().st_size
    assert len(paths) == 3 and {p.stat().st_size for p in paths} == {size}
    names = {c.seed: f"{Projection(c, SPECS).gram_key().hex()}.gram" for c in charts}
    factor(charts[0], SPECS, cache=tmp_path)  # read: seed 5 is now the most recently used
    assert (tmp_path / names[5]).stat().st_mtime_ns > 2 * 10**9
    monkeypatch.setattr(projection, "GRAM_CACHE_BYTES", 3 * size)
    factor(Chart(seed=8, dim=64), SPECS, cache=tmp_path)  # four files: one over
    assert {p.name for p in gram_files(tmp_path)} == {
        names[5],
        names[7],
        f"{Projection(Chart(seed=8, dim=64), SPECS).gram_key().hex()}.gram",
    }
    monkeypatch.setattr(projection, "GRAM_CACHE_BYTES", size // 2)
    fresh = factor(Chart(seed=9, dim=64), SPECS)
    assert torch.equal(factor(Chart(seed=9, dim=64), SPECS, cache=tmp_path), fresh)
    (left,) = gram_files(tmp_path)
    assert left.name == f"{Projection(Chart(seed=9, dim=64), SPECS).gram_key().hex()}.gram"


def test_the_draws_and_block_hashes_are_kept_with_the_factor(tmp_path, monkeypatch):
    """A Projection that finds the kept file draws nothing and hashes no block: the same bits."""
    chart = Chart(seed=5, dim=64)
    fresh = Projection(chart, SPECS)
    names = ("_positions", "_in_signs", "_out_signs", "_cholesky")
    want = {name: getattr(fresh, name) for name in names}
    blocks = [fresh.blocks(s) for s in SPECS]
    factor(chart, SPECS, cache=tmp_path)

    def never(*args):
        raise AssertionError("the kept draws and hashes should have been read")

    monkeypatch.setattr(projection, "_generator", never)
    monkeypatch.setattr(projection, "_seed_ints", never)
    again = Projection(chart, SPECS, cache=tmp_path)
    assert [again.blocks(s) for s in SPECS] == blocks
    for name in names:
        assert torch.equal(getattr(again, name), want[name])


def test_a_kept_file_replaced_under_a_projection_leaves_what_it_uses(tmp_path):
    """The file is mapped, not read; another process replaces it by rename, never in place, so
    what a running Projection checked stays what it uses."""
    chart = Chart(seed=5, dim=64)
    factor(chart, SPECS, cache=tmp_path)
    (kept,) = gram_files(tmp_path)
    using = Projection(chart, SPECS, cache=tmp_path)
    want = using._cholesky.clone()
    other = tmp_path / "other"
    other.write_bytes(bytes(kept.stat().st_size))
    other.replace(kept)
    assert torch.equal(using._cholesky, want)


def test_a_kept_file_that_cannot_be_mapped_is_read(tmp_path, monkeypatch):
    chart = Chart(seed=5, dim=64)
    fresh = factor(chart, SPECS, cache=tmp_path)

    def cannot(*args, **kwargs):
        raise OSError("no mappings on this filesystem")

    def not_again(self):
        raise AssertionError("the kept factor should have been read")

    monkeypatch.setattr(projection.mmap, "mmap", cannot)
    monkeypatch.setattr(Projection, "_gram_factor", not_again)
    assert torch.equal(factor(chart, SPECS, cache=tmp_path), fresh)


def test_block_hashes_from_a_hashed_prefix_are_those_hashed_whole():
    prefix = ("srht/1", 5, "blocks.0.mlp.fc.weight", (512, 128))
    assert _seed_ints(prefix, 40) == [_seed_int(*prefix, k) for k in range(40)]


def test_the_gram_factor_has_the_bits_of_the_whole_matrix_factorised(monkeypatch):
    """G filled by blocks of rows, lower triangle only, factorises to the bits of the plain
    definition: the whole symmetric G, each base's term added in turn."""
    monkeypatch.setattr(projection, "GRAM_ROWS", 24)  # three blocks of rows, the last short
    specs = [*SPECS, Spec("odd", (3, 7)), Spec("tail", (BLOCK + 11,))]
    p = Projection(Chart(seed=8, dim=64), specs)
    full, windows = p._windows()
    spectra = fwht(windows) / BLOCK
    gram = torch.eye(64, dtype=torch.float64) * full
    for a in range(BASES):
        e = p._positions[a]
        de = p._in_signs[a, e].double()
        gram += spectra[a][e[:, None] ^ e[None, :]] * torch.outer(de, de)
    assert torch.equal(p._gram_factor(), torch.linalg.cholesky(gram))


def test_a_cache_that_cannot_be_written_only_costs_time(tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    chart = Chart(seed=5, dim=64)
    got = factor(chart, SPECS, cache=blocked / "gram")
    assert torch.equal(got, factor(chart, SPECS))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_short_block_windows_match_their_definition():
    """Row j of a short block (length n, shift s) is kept iff (j + s) mod M < n."""
    specs = [*SPECS, Spec("odd", (3, 7)), Spec("tail", (BLOCK + 11,))]
    p = Projection(Chart(seed=8, dim=64), specs)
    full, windows = p._windows()
    expected = torch.zeros_like(windows)
    j = torch.arange(BLOCK)
    blocks = [b for s in specs for b in p.blocks(s)]
    short = [b for b in blocks if b.length < BLOCK]
    for b in short:
        expected[b.base] += ((j + b.shift) % BLOCK < b.length).to(torch.float64)
    assert {b.length > b.shift for b in short} == {True, False}  # runs that wrap round, and not
    assert full == len(blocks) - len(short)
    assert torch.equal(windows, expected)


def test_each_block_is_its_rolled_base_times_its_signs_exactly():
    """The definition, computed plainly (torch.roll, a whole block at a time): the same bits as
    add_offset, which groups positions into calls differently (the signs are ±1, so only
    scale · u rounds before the add)."""
    p = Projection(Chart(seed=4, dim=64), SPECS)
    doubled = p.bases(torch.randn(64, dtype=torch.float64))
    u = doubled[:, :BLOCK]
    assert torch.equal(doubled[:, BLOCK:], u)
    for spec in SPECS:
        theta = torch.randn(spec.shape)
        got = theta.clone()
        p.add_offset(got, spec, doubled, 0.7)
        want = theta.clone().view(-1)
        for b in p.blocks(spec):
            rolled = torch.roll(u[b.base], b.shift)[: b.length]
            want[b.start : b.start + b.length] += 0.7 * rolled * p._out_signs[b.signs, : b.length]
        assert torch.equal(got.view(-1), want)


def test_a_fifo_where_the_factor_should_be_is_not_waited_on(tmp_path, no_hang):
    import os

    chart = Chart(seed=5, dim=64)
    os.mkfifo(tmp_path / f"{Projection(chart, SPECS).gram_key().hex()}.gram")
    assert torch.equal(factor(chart, SPECS, cache=tmp_path), factor(chart, SPECS))
    (kept,) = gram_files(tmp_path)
    assert kept.is_file()  # replaced by the factor, for the next process
