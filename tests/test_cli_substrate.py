"""`basin substrate list` and `basin substrate add`, including every refusal of a bad input."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

from basinvcs.model.gpt import GPT, GPTConfig

SMALL = GPTConfig(d_model=32, n_layer=2, n_head=4, context=16)


@pytest.fixture
def weights(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "small.safetensors"
    save_file(GPT(SMALL).state_dict(), str(path))
    return path


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "small.json"
    path.write_text(json.dumps({"n_head": 4}))
    return path


def registry(home) -> list[str]:
    root = home / "substrates"
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def test_list_presets(cli):
    lines = cli("substrate", "list").stdout.splitlines()
    assert [ln.split()[:4] for ln in lines] == [
        ["tiny", "1.03M", "5", "layers"],
        ["100M", "100.10M", "14", "layers"],
        ["1B", "1.01B", "20", "layers"],
        ["10B", "10.08B", "50", "layers"],
    ]
    assert all(ln.endswith("  preset") and len(ln.split()[4]) == 16 for ln in lines)


def test_add_then_list(cli, weights, config, basin_home):
    out = cli("substrate", "add", "small", "--weights", str(weights), "--config", str(config))
    fingerprint = out.stdout.split("fingerprint ")[1].strip()
    assert out.stdout.startswith("added substrate small: 33.44K parameters, 2 layers")
    assert len(fingerprint) == 64
    last = cli("substrate", "list").stdout.splitlines()[-1].split()
    assert last == ["small", "33.44K", "2", "layers", fingerprint[:16], "gpt", "user"]
    assert registry(basin_home) == ["small"]


def test_full_config_is_accepted(cli, weights, tmp_path):
    full = tmp_path / "full.json"
    full.write_text(
        json.dumps({"vocab_size": 256, "d_model": 32, "n_layer": 2, "n_head": 4, "context": 16})
    )
    cli("substrate", "add", "full", "--weights", str(weights), "--config", str(full))


class Trap:
    """Unpickling this creates a file: proof that a loader executed pickle code."""

    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
def test_pickle_is_never_loaded(cli, tmp_path, config, basin_home, writer):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.safetensors"
    if writer == "pickle":
        evil.write_bytes(pickle.dumps(Trap(marker)))
    else:
        torch.save({"tok_emb.weight": Trap(marker)}, evil)
    pickle.loads(pickle.dumps(Trap(tmp_path / "probe")))  # the trap works when unpickled
    assert (tmp_path / "probe").exists()
    result = cli.fails("substrate", "add", "evil", "--weights", str(evil), "--config", str(config))
    assert "is not a safetensors file" in result.stderr
    assert not marker.exists()
    assert registry(basin_home) == []


@pytest.mark.parametrize(
    "name, config_doc, message",
    [
        (
            "mine",
            {"n_head": 4, "d_model": 64},
            "does not fit its config: tensor tok_emb.weight has shape",
        ),
        (
            "mine",
            {"n_head": 4, "n_layer": 3},
            "does not fit its config: missing tensor blocks.2.ln1",
        ),
        ("mine", {"n_head": 5}, "d_model 32 is not divisible by n_head 5"),
        ("mine", {"n_head": 4, "heads": 4}, "unknown config field 'heads'"),
        ("mine", [4], "must hold a JSON object"),
        ("mine", {"n_head": 10**400}, "n_head must be a positive integer below 2^31"),
        ("mine", {"n_head": 2**40}, "n_head must be a positive integer below 2^31"),
        ("mine", {"n_head": 4.0}, "n_head must be a positive integer"),
        ("mine", "deep", "nests deeper than 100 levels"),
        ("mine", "nan", "holds NaN, which JSON does not allow"),
        ("mine", None, "n_head is not revealed by any tensor shape"),
        ("tiny", {"n_head": 4}, "substrate name 'tiny' is taken by a preset"),
        ("TINY", {"n_head": 4}, "substrate name 'TINY' is taken by a preset"),
        ("bad name", {"n_head": 4}, "bad substrate name: bad label 'bad name'"),
        ("../up", {"n_head": 4}, "bad substrate name"),
        (".hidden", {"n_head": 4}, "bad substrate name"),
    ],
)
def test_add_refusals(cli, weights, tmp_path, basin_home, name, config_doc, message):
    args = ["substrate", "add", name, "--weights", str(weights)]
    if config_doc is not None:
        path = tmp_path / "c.json"
        raw = {"deep": "[" * 100_000, "nan": '{"n_head": NaN}'}
        path.write_text(raw[config_doc] if isinstance(config_doc, str) else json.dumps(config_doc))
        args += ["--config", str(path)]
    assert message in cli.fails(*args).stderr
    assert registry(basin_home) == []


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "is not a safetensors file"),
        (b"not a model at all, just text", "is not a safetensors file"),
        (None, "does not exist"),
        ("dir", "is a directory, not a safetensors file"),
    ],
)
def test_add_refuses_unreadable_weights(cli, tmp_path, config, basin_home, content, message):
    path = tmp_path / "w.safetensors"
    if content == "dir":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    result = cli.fails("substrate", "add", "mine", "--weights", str(path), "--config", str(config))
    assert message in result.stderr
    assert registry(basin_home) == []


@pytest.mark.parametrize(
    ("name", "tensor", "message"),
    [
        (
            "ln_f.weight",
            torch.ones(32, dtype=torch.float64),
            "tensor ln_f.weight has unsupported dtype F64",
        ),
        # refused from the header alone: a billion layers are never built
        (
            "blocks.999999999.ln1.weight",
            torch.ones(32),
            "does not fit its config: 16 tensors, 1000000000 layers",
        ),
    ],
    ids=["unsupported-dtype", "absurd-block-index"],
)
def test_add_refuses_a_tensor_it_cannot_use(
    cli, tmp_path, config, basin_home, name, tensor, message
):
    torch.manual_seed(0)
    state = GPT(SMALL).state_dict()
    state[name] = tensor
    path = tmp_path / "w.safetensors"
    save_file(state, str(path))
    result = cli.fails("substrate", "add", "mine", "--weights", str(path), "--config", str(config))
    assert message in result.stderr
    assert registry(basin_home) == []


def test_add_refuses_an_existing_name(cli, weights, config, basin_home):
    cli("substrate", "add", "small", "--weights", str(weights), "--config", str(config))
    before = (basin_home / "substrates" / "small" / "meta.json").read_bytes()
    for name in ("small", "Small"):
        result = cli.fails(
            "substrate", "add", name, "--weights", str(weights), "--config", str(config)
        )
        assert "substrate small exists already" in result.stderr
    assert registry(basin_home) == ["small"]
    assert (basin_home / "substrates" / "small" / "meta.json").read_bytes() == before


def test_verify(cli, weights, config, basin_home):
    assert cli("substrate", "verify").stdout == "no user substrates\n"
    cli("substrate", "add", "small", "--weights", str(weights), "--config", str(config))
    assert cli("substrate", "verify").stdout == "ok       small\n"
    assert cli("substrate", "verify", "small").stdout == "ok       small\n"
    assert "tiny is a preset" in cli.fails("substrate", "verify", "tiny").stderr
    assert "unknown substrate 'big'" in cli.fails("substrate", "verify", "big").stderr
    (basin_home / "substrates" / "small" / "weights.safetensors").write_bytes(b"")
    result = cli("substrate", "verify", ok=False)
    assert result.exit_code == 1 and result.stdout.startswith("corrupt  small: substrate small")


def test_substrate_help_does_not_import_torch():
    probe = (
        "import sys\nfrom basinvcs.cli import main\n"
        "try:\n    main(['substrate', '--help'], standalone_mode=False)\n"
        "finally:\n    print('torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.stdout.strip().endswith("False"), done.stdout + done.stderr
