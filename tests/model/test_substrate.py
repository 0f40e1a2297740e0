"""Substrates: preset sizes, deterministic θ0, depth, fingerprint, matching, the user registry."""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
from dataclasses import asdict, replace

import pytest
import torch
from safetensors.torch import save_file

from basinvcs.errors import SchemaError
from basinvcs.model.families.gpt import PRESETS, GPTSubstrate, _fingerprint, _seed
from basinvcs.model.gpt import GPT, GPTConfig
from basinvcs.model.registry import (
    add_substrate,
    find_substrate,
    list_substrates,
    load_substrate,
    preset_names,
    verify_substrates,
)
from basinvcs.model.substrate import Substrate, SubstrateError, read_header
from tests.conftest import flip_last_byte

# sha2-256 of every tiny θ0 tensor's float32 bytes in canonical order: θ0 must never drift.
TINY_THETA0_SHA256 = "bcce289ecabc928ba2ce1861fa8f1ccfdf41d26e48e7ce7547d7bed73433c1d8"
SMALL = GPTConfig(d_model=32, n_layer=2, n_head=4, context=16)


def header_of(sub: Substrate, dtype: str = "F32") -> dict[str, tuple[str, tuple[int, ...]]]:
    return {s.name: (dtype, s.shape) for s in sub.specs}


def small_state(seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return GPT(SMALL).state_dict()


def small_weights(path, dtype=torch.float32, seed: int = 0):
    save_file({k: v.to(dtype) for k, v in small_state(seed).items()}, str(path))
    return path


def config_file(tmp_path, doc):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(doc))
    return path


@pytest.fixture
def tiny() -> Substrate:
    return load_substrate("tiny")


# -- presets ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, params, layers",
    [
        ("tiny", 1_033_600, 5),
        ("100M", 100_095_744, 14),
        ("1B", 1_011_435_520, 20),
        ("10B", 10_076_180_480, 50),
    ],
)
def test_preset_sizes(name, params, layers):
    sub = load_substrate(name)
    meta = GPT(PRESETS[name], device="meta")
    assert sub.num_params == params == sum(p.numel() for p in meta.parameters())
    assert sub.num_layers == layers
    assert [s.name for s in sub.specs] == [n for n, _ in meta.named_parameters()]
    assert all(s.dtype == torch.float32 for s in sub.specs)


def test_preset_names_and_listing():
    assert preset_names() == ["tiny", "100M", "1B", "10B"]
    assert [s.name for s in list_substrates()] == preset_names()
    assert all(s.kind == "preset" for s in list_substrates())


def test_unknown_substrate_lists_known_names():
    with pytest.raises(SubstrateError, match=r"unknown substrate 'huge' \(known: tiny, 100M"):
        load_substrate("huge")


# -- θ0 -----------------------------------------------------------------------------------------


def test_theta0_is_pinned(tiny):
    h = hashlib.sha256()
    for spec in tiny.specs:
        h.update(tiny.theta0(spec).numpy().tobytes())
    assert h.hexdigest() == TINY_THETA0_SHA256


PROBE = """
import hashlib
from basinvcs.model.registry import load_substrate
sub = load_substrate("tiny")
spec = next(s for s in sub.specs if s.name == "blocks.3.mlp.fc.weight")
print(hashlib.sha256(sub.theta0(spec).numpy().tobytes()).hexdigest())
"""


def test_theta0_identical_across_processes(tiny):
    spec = next(s for s in tiny.specs if s.name == "blocks.3.mlp.fc.weight")
    here = hashlib.sha256(tiny.theta0(spec).numpy().tobytes()).hexdigest()
    run = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == here


def test_theta0_differs_between_tensors_and_substrates(tiny):
    qkv0, qkv1 = (
        tiny.theta0(next(s for s in tiny.specs if s.name == f"blocks.{i}.attn.qkv.weight"))
        for i in (0, 1)
    )
    assert not torch.equal(qkv0, qkv1)
    other = GPTSubstrate("other", tiny.config, tiny.specs, b"\0" * 32)  # same shapes, other name
    assert not torch.equal(other.theta0(tiny.specs[3]), qkv0)


def test_theta0_is_torch_rand_mapped_to_the_interval(tiny):
    spec = next(s for s in tiny.specs if s.name == "blocks.1.attn.proj.weight")
    a = 0.02 / math.sqrt(2 * 5) * math.sqrt(3)
    gen = torch.Generator().manual_seed(_seed("tiny", spec.name))
    u = torch.rand(spec.shape, generator=gen)
    assert torch.equal(tiny.theta0(spec), (u - 0.5) * (2 * a))


def test_theta0_is_fresh_and_contiguous(tiny):
    spec = tiny.specs[0]
    a = tiny.theta0(spec)
    a.zero_()
    b = tiny.theta0(spec)
    assert b.is_contiguous() and b.dtype == torch.float32 and b.abs().sum() > 0


def test_seeds_are_distinct_in_the_bits_torch_keeps():
    """torch's CPU generator keeps a seed's low 32 bits only: preset tensors must differ there."""
    seeds = [_seed(n, s.name) & 0xFFFFFFFF for n in PRESETS for s in load_substrate(n).specs]
    assert len(set(seeds)) == len(seeds)


def test_theta0_statistics(tiny):
    residual = 0.02 / math.sqrt(2 * 5)
    cases = {
        "tok_emb.weight": 0.02,
        "pos_emb.weight": 0.02,
        "blocks.0.attn.qkv.weight": 0.02,
        "blocks.2.mlp.fc.weight": 0.02,
        "blocks.1.attn.proj.weight": residual,
        "blocks.4.mlp.fc2.weight": residual,
    }
    by_name = {s.name: s for s in tiny.specs}
    for name, std in cases.items():
        t = tiny.theta0(by_name[name])
        assert abs(t.std().item() / std - 1) < 0.05, name
        assert abs(t.mean().item()) < 0.05 * std, name
        assert t.abs().max().item() <= std * math.sqrt(3), name
    for name in ("blocks.0.ln1.weight", "blocks.4.ln2.weight", "ln_f.weight"):
        assert torch.equal(tiny.theta0(by_name[name]), torch.ones(128))


def test_theta0_refuses_a_foreign_spec(tiny):
    with pytest.raises(SchemaError, match="not part of substrate tiny"):
        tiny.theta0(replace(tiny.specs[0], shape=(1, 1)))


def test_build_loads_theta0_and_runs(tiny):
    model = tiny.build()
    assert all(not p.is_meta and p.requires_grad for p in model.parameters())
    assert torch.equal(model.blocks[2].attn.qkv.weight, tiny.theta0(tiny.specs[15]))
    with torch.no_grad():
        logits = model(torch.randint(0, 256, (2, 128)))
    assert logits.shape == (2, 128, 256) and torch.isfinite(logits).all()


# -- depth and fingerprint ----------------------------------------------------------------------


def test_depth_rule(tiny):
    depth = {s.name: s.depth for s in tiny.specs}
    assert depth["tok_emb.weight"] == depth["pos_emb.weight"] == 0.0
    for i in range(5):
        assert depth[f"blocks.{i}.ln1.weight"] == depth[f"blocks.{i}.mlp.fc2.weight"] == (i + 1) / 6
    assert depth["ln_f.weight"] == 1.0


def test_fingerprint_stable_and_sensitive(tiny):
    assert len(tiny.fingerprint) == 32
    assert (
        tiny.fingerprint
        == GPTSubstrate("tiny", tiny.config, tiny.specs, tiny.theta0_digest).fingerprint
    )
    assert tiny.fingerprint != load_substrate("100M").fingerprint
    shapes = [replace(s, shape=(1,) + s.shape) if i == 4 else s for i, s in enumerate(tiny.specs)]
    dtypes = [replace(s, dtype=torch.bfloat16) if i == 4 else s for i, s in enumerate(tiny.specs)]
    assert _fingerprint(tiny.config, shapes, tiny.theta0_digest) != tiny.fingerprint
    assert _fingerprint(tiny.config, dtypes, tiny.theta0_digest) != tiny.fingerprint
    assert _fingerprint(tiny.config, tiny.specs, bytes(32)) != tiny.fingerprint
    heads = replace(tiny.config, n_head=8)
    assert _fingerprint(heads, tiny.specs, tiny.theta0_digest) != tiny.fingerprint


# -- match and find -----------------------------------------------------------------------------


def test_match_accepts_float_dtypes(tiny):
    for dtype in ("F32", "F16", "BF16"):
        tiny.match(header_of(tiny, dtype))


def test_match_names_the_first_mismatch(tiny):
    header = header_of(tiny)
    del header["blocks.1.ln1.weight"]
    del header["blocks.3.ln1.weight"]
    with pytest.raises(SchemaError, match=r"tiny: missing tensor blocks\.1\.ln1\.weight$"):
        tiny.match(header)

    header = header_of(tiny)
    header["zz.weight"] = ("F32", (1,))
    header["lm_head.weight"] = ("F32", (256, 128))
    with pytest.raises(SchemaError, match=r"unexpected tensor lm_head\.weight$"):
        tiny.match(header)

    header = header_of(tiny)
    header["blocks.2.mlp.fc.weight"] = ("F32", (128, 512))
    header["blocks.4.mlp.fc.weight"] = ("I64", (1,))
    with pytest.raises(
        SchemaError,
        match=r"blocks\.2\.mlp\.fc\.weight has shape \[128, 512\], expected \[512, 128\]",
    ):
        tiny.match(header)

    header = header_of(tiny)
    header["blocks.0.attn.proj.weight"] = ("I64", (128, 128))
    with pytest.raises(
        SchemaError, match=r"proj\.weight has unsupported dtype I64 \(accepted: F32"
    ):
        tiny.match(header)


def test_find_substrate(tiny):
    assert find_substrate(header_of(tiny, "BF16")) is tiny
    with pytest.raises(SchemaError, match="unsupported dtype F64"):
        find_substrate(header_of(tiny, "F64"))  # found by structure, then refused by dtype


def test_find_substrate_none(tiny):
    header = header_of(tiny)
    header["blocks.2.attn.qkv.weight"] = ("F32", (3, 3))
    with pytest.raises(
        SubstrateError,
        match=r"^no substrate matches: first difference from nearest tiny: tensor blocks\.2\.attn",
    ):
        find_substrate(header)


def test_find_substrate_ambiguous(tmp_path, tiny):
    save_file(tiny.theta0_dict(), str(tmp_path / "w.safetensors"))
    add_substrate("tiny-copy", tmp_path / "w.safetensors", config_file(tmp_path, {"n_head": 4}))
    with pytest.raises(
        SubstrateError, match=r"^several substrates match: tiny, tiny-copy; name one with"
    ):
        find_substrate(header_of(tiny))


# -- user substrates ----------------------------------------------------------------------------


def test_add_user_substrate(tmp_path, basin_home):
    weights = small_weights(tmp_path / "w.safetensors", dtype=torch.bfloat16)
    sub = add_substrate("mine", weights, config_file(tmp_path, {"n_head": 4}))
    assert (sub.kind, sub.config, sub.num_layers) == ("user", SMALL, 2)
    assert all(s.dtype == torch.bfloat16 for s in sub.specs)
    entry = basin_home / "substrates" / "mine"
    assert sorted(p.name for p in entry.iterdir()) == [
        "config.json",
        "meta.json",
        "theta0.checked",
        "weights.safetensors",
    ]
    assert json.loads((entry / "config.json").read_text()) == asdict(SMALL)
    assert json.loads((entry / "meta.json").read_text())["fingerprint"] == sub.fingerprint.hex()

    again = load_substrate("mine")
    assert again.fingerprint == sub.fingerprint and again.specs == sub.specs
    assert [s.name for s in list_substrates()] == preset_names() + ["mine"]
    t = again.theta0(again.specs[3])
    assert t.dtype == torch.float32
    expected = small_state()["blocks.0.attn.qkv.weight"].to(torch.bfloat16).float()
    assert torch.equal(t, expected)
    assert again.build()(torch.zeros(1, 4, dtype=torch.long)).shape == (1, 4, 256)
    depth = {s.name: s.depth for s in again.specs}
    assert (depth["pos_emb.weight"], depth["blocks.1.ln2.weight"], depth["ln_f.weight"]) == (
        0.0,
        2 / 3,
        1.0,
    )


def test_user_fingerprint_follows_the_weights(tmp_path):
    config = config_file(tmp_path, {"n_head": 4})
    a = add_substrate("a", small_weights(tmp_path / "a.safetensors", seed=1), config)
    b = add_substrate("b", small_weights(tmp_path / "b.safetensors", seed=1), config)
    c = add_substrate("c", small_weights(tmp_path / "c.safetensors", seed=2), config)
    assert a.fingerprint == b.fingerprint != c.fingerprint


def test_n_head_must_be_given(tmp_path):
    weights = small_weights(tmp_path / "w.safetensors")
    with pytest.raises(SchemaError, match="n_head is not revealed by any tensor shape"):
        add_substrate("mine", weights, None)


def test_corrupt_registry_entry(tmp_path, basin_home):
    add_substrate(
        "mine", small_weights(tmp_path / "w.safetensors"), config_file(tmp_path, {"n_head": 4})
    )
    meta = basin_home / "substrates" / "mine" / "meta.json"
    doc = json.loads(meta.read_text())
    meta.write_text(json.dumps(doc | {"theta0_sha256": "00" * 32}))
    with pytest.raises(SubstrateError, match="substrate mine is corrupt"):
        load_substrate("mine")


@pytest.fixture
def hashes(monkeypatch):
    """Counts the registry's full hashes of θ0 (the real hash still runs)."""
    import basinvcs.model.registry as registry

    calls = []
    real = registry.file_digest

    def counting(*args, **kw):
        calls.append(args[0])
        return real(*args, **kw)

    monkeypatch.setattr(registry, "file_digest", counting)
    return calls


def test_theta0_hashed_only_when_its_file_changed(tmp_path, basin_home, hashes):
    add_substrate(
        "mine", small_weights(tmp_path / "w.safetensors"), config_file(tmp_path, {"n_head": 4})
    )
    entry = basin_home / "substrates" / "mine"
    assert (entry / "theta0.checked").is_file() and hashes == []  # add hashed it already
    for _ in range(3):
        load_substrate("mine")
    list_substrates()
    assert hashes == []
    os.utime(entry / "weights.safetensors")  # touched, same bytes: hashed once, stamp renewed
    load_substrate("mine")
    load_substrate("mine")
    assert len(hashes) == 1
    (entry / "theta0.checked").unlink()  # an entry from before stamps: hashed once
    load_substrate("mine")
    load_substrate("mine")
    assert len(hashes) == 2


def test_theta0_changed_in_place_is_refused(tmp_path, basin_home):
    add_substrate(
        "mine", small_weights(tmp_path / "w.safetensors"), config_file(tmp_path, {"n_head": 4})
    )
    flip_last_byte(basin_home / "substrates" / "mine" / "weights.safetensors")
    for _ in range(2):  # a failed check leaves no stamp behind: refused every time
        with pytest.raises(SubstrateError, match=r"substrate mine is corrupt: θ0 in .* is not"):
            load_substrate("mine")
    results = verify_substrates()
    assert [name for name, _ in results] == ["mine"] and "is corrupt" in results[0][1]


def test_verify_hashes_whatever_the_stamp_says(tmp_path, basin_home, hashes):
    add_substrate(
        "mine", small_weights(tmp_path / "w.safetensors"), config_file(tmp_path, {"n_head": 4})
    )
    assert verify_substrates() == [("mine", None)] and len(hashes) == 1
    assert verify_substrates(["mine"]) == [("mine", None)] and len(hashes) == 2
    with pytest.raises(SubstrateError, match="tiny is a preset"):
        verify_substrates(["tiny"])
    with pytest.raises(SubstrateError, match="unknown substrate 'nope'"):
        verify_substrates(["nope"])


def test_read_header(tmp_path):
    header = read_header(small_weights(tmp_path / "w.safetensors", dtype=torch.float16))
    assert header["blocks.1.mlp.fc2.weight"] == ("F16", (32, 128))


def test_concurrent_add_loses_cleanly(tmp_path, basin_home, monkeypatch):
    """Two adds that both passed the name check: the rename lets one win and leaves no debris."""
    import basinvcs.model.registry as substrate

    weights, config = (
        small_weights(tmp_path / "w.safetensors"),
        config_file(tmp_path, {"n_head": 4}),
    )
    add_substrate("mine", weights, config)
    monkeypatch.setattr(substrate, "_check_new_name", lambda name: None)
    with pytest.raises(SubstrateError, match="^substrate mine exists already$"):
        add_substrate("mine", weights, config)
    assert sorted(p.name for p in (basin_home / "substrates").iterdir()) == ["mine"]
