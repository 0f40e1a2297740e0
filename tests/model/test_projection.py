"""The chart projection: orthonormal columns, exact adjoint, determinism, streaming."""

import hashlib
import subprocess
import sys
from dataclasses import dataclass

import pytest
import torch

from basinvcs.errors import SchemaError
from basinvcs.model.projection import BLOCK, Projection, beta_at, fwht, offset_fn
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
