"""The GPT family: parameter names, tied head, causal forward, meta-device construction."""

from __future__ import annotations

import pytest
import torch

from basinvcs.errors import SchemaError
from basinvcs.model.gpt import GPT, GPTConfig

SMALL = GPTConfig(d_model=32, n_layer=2, n_head=4, context=16)


def test_parameter_names_are_stable_and_match_state_dict():
    model = GPT(SMALL)
    names = [n for n, _ in model.named_parameters()]
    block = ["ln1", "attn.qkv", "attn.proj", "ln2", "mlp.fc", "mlp.fc2"]
    expected = ["tok_emb.weight", "pos_emb.weight"]
    expected += [f"blocks.{i}.{m}.weight" for i in range(2) for m in block]
    assert names == expected + ["ln_f.weight"]
    assert list(model.state_dict()) == names  # no buffers, no separate head tensor


def test_shapes_and_tied_head():
    model = GPT(SMALL)
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    assert shapes["tok_emb.weight"] == (256, 32)
    assert shapes["pos_emb.weight"] == (16, 32)
    assert shapes["blocks.0.attn.qkv.weight"] == (96, 32)
    assert shapes["blocks.1.mlp.fc.weight"] == (128, 32)
    assert shapes["blocks.1.mlp.fc2.weight"] == (32, 128)
    idx = torch.randint(0, 256, (1, 8))
    with torch.no_grad():
        before = model(idx)
        model.tok_emb.weight[:, 0] += 1.0
        assert not torch.equal(model(idx), before)  # the head reads the token embedding


def test_forward_is_causal():
    torch.manual_seed(0)
    model = GPT(SMALL).eval()
    idx = torch.randint(0, 256, (2, 10))
    changed = idx.clone()
    changed[:, 6:] = (changed[:, 6:] + 1) % 256
    with torch.no_grad():
        a, b = model(idx), model(changed)
    assert a.shape == (2, 10, 256)
    torch.testing.assert_close(a[:, :6], b[:, :6])
    assert not torch.allclose(a[:, 6:], b[:, 6:])


def test_context_limit():
    with pytest.raises(SchemaError, match="17 tokens exceeds the context of 16"):
        GPT(SMALL)(torch.zeros(1, 17, dtype=torch.long))


def test_meta_device_allocates_nothing():
    config = GPTConfig(d_model=4096, n_layer=50, n_head=32, context=2048)
    model = GPT(config, device="meta")
    assert all(p.is_meta for p in model.parameters())
    assert sum(p.numel() for p in model.parameters()) == 10_076_180_480


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"d_model": 30, "n_layer": 1, "n_head": 4, "context": 8}, "not divisible by n_head"),
        ({"d_model": 32, "n_layer": 0, "n_head": 4, "context": 8}, "n_layer must be a positive"),
        ({"d_model": 32, "n_layer": 1, "n_head": 4, "context": 8.0}, "context must be a positive"),
        ({"d_model": 32, "n_layer": True, "n_head": 4, "context": 8}, "n_layer must be"),
    ],
)
def test_bad_config(fields, message):
    with pytest.raises(SchemaError, match=message):
        GPTConfig(**fields)
