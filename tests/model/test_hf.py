"""The `hf` family end to end: tiny GPT-2, Llama and BERT made from configs (no download), added
with `basin substrate add --from`, trained in the basin, committed, checked out as folders and
reloaded with transformers' own `from_pretrained`; and the bad inputs, each refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers", reason="the hf family needs transformers")

from basinvcs.model import bridge  # noqa: E402
from basinvcs.model.families.hf import _depths  # noqa: E402
from basinvcs.model.registry import load_substrate  # noqa: E402
from basinvcs.model.train import BasinModel, commit_model_in_basin, logits_of  # noqa: E402
from basinvcs.repository import Repository  # noqa: E402
from tests.conftest import flip_last_byte, state  # noqa: E402

SMALL = dict(vocab_size=100)
MODELS = {
    "gpt2": (
        lambda: transformers.GPT2Config(
            n_layer=2, n_embd=32, n_head=2, n_positions=64, bos_token_id=0, eos_token_id=0, **SMALL
        ),
        "GPT2LMHeadModel",
        "AutoModelForCausalLM",
        [],
    ),
    "llama": (
        lambda: transformers.LlamaConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            **SMALL,
        ),
        "LlamaForCausalLM",
        "AutoModelForCausalLM",
        [],
    ),
    "bert": (  # a base encoder checkpoint, registered with a new classification head at zero
        lambda: transformers.BertConfig(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            **SMALL,
        ),
        "BertModel",
        "AutoModelForSequenceClassification",
        [
            "--architecture",
            "BertForSequenceClassification",
            "--set",
            "num_labels=3",
            "--zero-init",
            "classifier.*",
        ],
    ),
}


def make_folder(path: Path, kind: str, seed: int = 0) -> Path:
    config, arch, _, _ = MODELS[kind]
    torch.manual_seed(seed)
    getattr(transformers, arch)(config()).save_pretrained(str(path))
    (path / "tokenizer_config.json").write_text('{"model_max_length": 64}\n')  # carried along
    return path


@pytest.mark.parametrize("kind", list(MODELS))
def test_train_commit_checkout_reload(cli, repo_dir, tmp_path, kind):
    _, _, auto, options = MODELS[kind]
    src = make_folder(tmp_path / f"{kind}-src", kind)
    cli("substrate", "add", kind, "--from", str(src), *options)
    sub = load_substrate(kind)
    ids = torch.randint(0, 100, (4, 12), generator=torch.Generator().manual_seed(1))
    with Repository.open(repo_dir) as repo:
        model = BasinModel(sub, repo.config.chart)
        opt = torch.optim.Adam([model.z], lr=0.05)
        for _ in range(4):
            logits = logits_of(model(input_ids=ids))
            loss = logits.square().mean() if logits.dim() == 3 else logits[:, 0].mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        commit_model_in_basin(repo, model, f"{kind} trained in the basin")
        model.eval()
        with torch.no_grad():
            trained = logits_of(model(input_ids=ids))
    out = tmp_path / f"{kind}-out"
    result = cli("checkout", "HEAD", "--model", kind, "-o", str(out))
    assert f"to {out}" in result.stdout
    assert {"config.json", "model.safetensors", "tokenizer_config.json"} <= {
        p.name for p in out.iterdir()
    }
    loaded = getattr(transformers, auto).from_pretrained(str(out)).eval()
    with torch.no_grad():
        got = loaded(input_ids=ids).logits
    assert not torch.allclose(trained, torch.zeros_like(trained))
    torch.testing.assert_close(got, trained, rtol=1e-5, atol=1e-6)
    base = transformers.AutoModel.from_pretrained(str(out))  # the base class loads it too
    assert base is not None
    # the checked-out folder commits back to the same basin: nothing to commit
    result = cli.fails("commit", "--model", str(out), "-m", "again")
    assert "nothing to commit" in result.stderr


def test_tied_weights_projected_once_and_buffers_fixed(tmp_path):
    from basinvcs.model.registry import add_hf_substrate

    gpt2 = add_hf_substrate("g", make_folder(tmp_path / "g", "gpt2"))
    names = [s.name for s in gpt2.specs]
    assert "transformer.wte.weight" in names and "lm_head.weight" not in names  # tied: once
    assert all(s.projected for s in gpt2.specs)
    bert_dir = make_folder(tmp_path / "b", "bert")
    # a checkpoint carrying an integer position_ids buffer, as older BERT checkpoints do
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(bert_dir / "model.safetensors"))
    tensors["embeddings.position_ids"] = torch.arange(512)[None]
    save_file(tensors, str(bert_dir / "model.safetensors"), metadata={"format": "pt"})
    bert = add_hf_substrate("b", bert_dir)
    fixed = [s for s in bert.specs if not s.projected]
    assert [(s.name, s.dtype) for s in fixed] == [("embeddings.position_ids", torch.int64)]
    assert torch.equal(bert.theta0(fixed[0]), torch.arange(512)[None])


def test_llama_inv_freq_is_supplied(tmp_path):
    from basinvcs.model.registry import add_hf_substrate

    sub = add_hf_substrate("l", make_folder(tmp_path / "l", "llama"))
    assert not any("inv_freq" in s.name for s in sub.specs)
    model = sub.build()  # the architecture computes the rotary buffer itself
    assert not model.model.rotary_emb.inv_freq.is_meta


def test_threads_building_at_once_print_no_bar_and_leave_the_setting_as_it_was(tmp_path, capfd):
    """transformers' progress-bar switch is process-wide; `build` turns it off around its load
    and back on after, one thread at a time (hive instances are threads that build at once: a
    thread finishing turned the bars back on under another's load, and they printed)."""
    import threading

    from transformers.utils import logging

    from basinvcs.model.registry import add_hf_substrate

    sub = add_hf_substrate("g", make_folder(tmp_path / "g", "gpt2"))
    capfd.readouterr()
    assert logging.is_progress_bar_enabled()
    threads = [threading.Thread(target=sub.build) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert logging.is_progress_bar_enabled()
    assert "Loading weights" not in capfd.readouterr().err


def test_depth_rule():
    names = [
        "embed.weight",
        "encoder.layers.0.w",
        "encoder.layers.1.w",
        "encoder.norm.weight",
        "decoder.layers.0.w",
        "decoder.layers.1.w",
        "decoder.norm.weight",
        "head.weight",
    ]
    assert _depths(names) == [0.0, 0.2, 0.4, 0.4, 0.6, 0.8, 1.0, 1.0]
    # decoder stacks listed first still come after the encoder
    swapped = ["decoder.block.0.w", "encoder.block.0.w"]
    assert _depths(swapped) == [2 / 3, 1 / 3]
    gpt2 = ["wte", "h.0.a", "h.1.a", "ln_f"]
    assert _depths(gpt2) == [0.0, 1 / 3, 2 / 3, 1.0]


def test_fingerprint_pins_weights_config_and_depths(tmp_path):
    from basinvcs.model.registry import add_hf_substrate

    a = add_hf_substrate("a", make_folder(tmp_path / "a", "gpt2", seed=0))
    b = add_hf_substrate("b", make_folder(tmp_path / "b", "gpt2", seed=1))
    c = add_hf_substrate("c", make_folder(tmp_path / "c", "gpt2", seed=0))
    assert a.fingerprint != b.fingerprint  # other θ0
    assert a.fingerprint == c.fingerprint  # same folder contents, other name
    meta = json.loads((a.path / "meta.json").read_text())
    assert meta["transformers"] == transformers.__version__
    assert meta["depth_rule"] == "stacks/v1"


def test_sharded_folder_commits_and_checks_out_sharded(cli, repo_dir, tmp_path):
    src = tmp_path / "src"
    config, arch, _, _ = MODELS["llama"]
    torch.manual_seed(0)
    getattr(transformers, arch)(config()).save_pretrained(str(src), max_shard_size="20KB")
    assert (src / "model.safetensors.index.json").exists()
    cli("substrate", "add", "sharded", "--from", str(src))
    out = tmp_path / "out"
    cli("checkout", "HEAD", "--model", "sharded", "-o", str(out), "--max-shard-size", "1")
    # 1 MiB shards of a 100 KB model: one file; the reader takes the source's index as well
    loaded = transformers.AutoModelForCausalLM.from_pretrained(str(out))
    assert loaded is not None
    # a fine-tune saved sharded commits
    tuned = transformers.AutoModelForCausalLM.from_pretrained(str(src))
    with torch.no_grad():
        tuned.model.layers[0].mlp.up_proj.weight.add_(0.01)
    tuned.save_pretrained(str(tmp_path / "tuned"), max_shard_size="20KB")
    result = cli("commit", "--model", str(tmp_path / "tuned"), "-m", "tuned")
    assert "substrate sharded" in result.stdout


def test_chart_mask_leaves_tensors_at_theta0(cli, tmp_path, monkeypatch):
    src = make_folder(tmp_path / "src", "gpt2")
    cli("substrate", "add", "g", "--from", str(src))
    monkeypatch.chdir(tmp_path)
    cli("init", "masked", "--dim", "64", "--exclude", "*.wte.*", "--exclude", "*.wpe.*")
    monkeypatch.chdir(tmp_path / "masked")
    sub = load_substrate("g")
    with Repository.open() as repo:
        assert repo.config.chart.exclude == ("*.wpe.*", "*.wte.*")
        model = BasinModel(sub, repo.config.chart, z=torch.ones(64))
        weights = model.weights()
        assert "transformer.wte.weight" not in weights  # the module keeps θ0 there
        commit_model_in_basin(repo, model, "masked")
        dec = bridge.decode(repo, "HEAD", "g")
        out = dict(dec.tensors())
    wte = next(s for s in sub.specs if s.name == "transformer.wte.weight")
    assert torch.equal(out[wte], sub.theta0(wte))
    h0 = next(s for s in sub.specs if s.name == "transformer.h.0.attn.c_attn.weight")
    assert not torch.equal(out[h0], sub.theta0(h0))
    shown = cli("show").stdout
    assert "exclude=*.wpe.*,*.wte.*" in shown


def test_mask_that_leaves_nothing_is_refused(cli, tmp_path, monkeypatch):
    src = make_folder(tmp_path / "src", "gpt2")
    cli("substrate", "add", "g", "--from", str(src))
    monkeypatch.chdir(tmp_path)
    cli("init", "nothing", "--dim", "64", "--exclude", "*")
    monkeypatch.chdir(tmp_path / "nothing")
    before = state(tmp_path / "nothing")
    result = cli.fails("commit", "--model", str(src), "-m", "x")
    assert "leaves no tensor to project" in result.stderr
    assert state(tmp_path / "nothing") == before


def test_cross_family_checkout_is_allowed_with_a_note(cli, repo_dir, tmp_path):
    src = make_folder(tmp_path / "src", "gpt2")
    cli("substrate", "add", "g", "--from", str(src))
    tuned = transformers.GPT2LMHeadModel.from_pretrained(str(src))
    with torch.no_grad():
        tuned.transformer.h[1].mlp.c_fc.weight.add_(0.05)
    tuned.save_pretrained(str(tmp_path / "tuned"))
    cli("commit", "--model", str(tmp_path / "tuned"), "-m", "tuned gpt2")
    result = cli("checkout", "HEAD", "--model", "tiny", "-o", str(tmp_path / "tiny.safetensors"))
    assert "fitted on g" in result.stderr and "measure it" in result.stderr


# -- bad input: one line, non-zero exit, nothing changed --------------------------------------


def test_theta0_changed_in_place_is_refused(cli, basin_home, tmp_path):
    """The registry's copy of θ0 edited under the same size and mtime: every command that loads
    the substrate refuses it, and `basin substrate verify` names it."""
    cli("substrate", "add", "llama", "--from", str(make_folder(tmp_path / "src", "llama")))
    assert cli("substrate", "verify").stdout == "ok       llama\n"
    flip_last_byte(basin_home / "substrates" / "llama" / "model.safetensors")
    result = cli.fails("substrate", "list")
    assert "substrate llama is corrupt: θ0 in" in result.stderr
    result = cli("substrate", "verify", "llama", ok=False)
    assert result.exit_code == 1 and result.stdout.startswith("corrupt  llama: substrate llama")


def _bad_folder(tmp_path: Path, how: str) -> Path:
    src = make_folder(tmp_path / how, "gpt2")
    if how == "no-config":
        (src / "config.json").unlink()
    elif how == "unknown-architecture":
        doc = json.loads((src / "config.json").read_text())
        doc["architectures"] = ["NoSuchModelForAnything"]
        (src / "config.json").write_text(json.dumps(doc))
    elif how == "shape-disagrees":
        doc = json.loads((src / "config.json").read_text())
        doc["n_embd"] = 64
        (src / "config.json").write_text(json.dumps(doc))
    elif how == "pickle-only":
        (src / "model.safetensors").unlink()
        (src / "pytorch_model.bin").write_bytes(b"\x80\x04 never unpickled")
    elif how == "gguf-only":
        (src / "model.safetensors").unlink()
        (src / "model.gguf").write_bytes(b"GGUF")
    elif how == "not-json-config":
        (src / "config.json").write_text("{not json")
    elif how == "deep-config":
        (src / "config.json").write_text('{"a": ' + "[" * 100_000)
    elif how == "nan-config":
        doc = json.loads((src / "config.json").read_text())
        (src / "config.json").write_text(json.dumps({**doc, "layer_norm_epsilon": float("nan")}))
    elif how == "fifo-config":
        import os

        (src / "config.json").unlink()
        os.mkfifo(src / "config.json")
    return src


@pytest.mark.parametrize(
    "how, message",
    [
        ("no-config", "has no config.json"),
        ("unknown-architecture", "cannot build architecture 'NoSuchModelForAnything'"),
        ("shape-disagrees", "but the config makes it"),
        ("pickle-only", "a pickle, which basin never unpickles"),
        ("gguf-only", "GGUF"),
        ("not-json-config", "is not valid JSON"),
        ("deep-config", "nests deeper than 100 levels"),
        ("nan-config", "holds NaN, which JSON does not allow"),
        ("fifo-config", "is not a regular file"),
    ],
)
def test_bad_folders_are_refused(cli, basin_home, tmp_path, how, message, no_hang):
    src = _bad_folder(tmp_path, how)
    result = cli.fails("substrate", "add", "bad", "--from", str(src))
    assert message in result.stderr
    registry = basin_home / "substrates"
    assert not registry.exists() or not [p for p in registry.iterdir()]


@pytest.mark.parametrize(
    "how, message",
    [
        ("pickle-only", "never unpickles"),
        ("gguf-only", "GGUF"),
    ],
)
def test_bad_models_are_not_committed(cli, repo_dir, tmp_path, how, message):
    src = _bad_folder(tmp_path, how)
    before = state(repo_dir)
    result = cli.fails("commit", "--model", str(src), "-m", "x")
    assert message in result.stderr
    assert state(repo_dir) == before


def test_gguf_file_given_to_commit(cli, repo_dir, tmp_path):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF\x03\x00\x00\x00")
    before = state(repo_dir)
    result = cli.fails("commit", "--model", str(gguf), "-m", "x")
    assert "GGUF file" in result.stderr and "gguf_to_hf" in result.stderr
    assert state(repo_dir) == before


@pytest.mark.parametrize(
    "setting, message",
    [
        ('n_layer="x"', "cannot set config n_layer"),
        ("n_embd=[[1]]", "cannot set config n_embd"),
        ("n_layer=100000000000", "the config has 100000000000 layers"),  # refused before building
        ("x=" + "[" * 100_000, "nests deeper than 100 levels"),
        ("layer_norm_epsilon=NaN", "holds NaN, which JSON does not allow"),
        ("n_layer=" + "9" * 5000, "is not usable JSON"),
        ("=3", "is not KEY=VALUE"),
    ],
)
def test_bad_config_settings_are_refused(cli, basin_home, tmp_path, setting, message):
    src = make_folder(tmp_path / "src", "gpt2")
    result = cli("substrate", "add", "bad", "--from", str(src), "--set", setting, ok=False)
    assert result.exit_code != 0 and message in result.stderr
    assert "Traceback" not in result.stderr
    registry = basin_home / "substrates"
    assert not registry.exists() or not list(registry.iterdir())


def test_missing_head_needs_zero_init(cli, tmp_path):
    src = make_folder(tmp_path / "src", "bert")
    result = cli.fails(
        "substrate", "add", "cls", "--from", str(src), "--architecture",
        "BertForSequenceClassification",
    )  # fmt: skip
    assert "--zero-init 'classifier.*'" in result.stderr


def test_checked_out_files_get_the_umask_mode(cli, repo_dir, tmp_path):
    import os

    src = make_folder(tmp_path / "src", "gpt2")
    cli("substrate", "add", "g", "--from", str(src))
    old = os.umask(0o022)
    try:
        cli("checkout", "HEAD", "--model", "g", "-o", str(tmp_path / "out"))
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "out").iterdir()}
    assert modes and set(modes.values()) == {0o644}, modes


def test_hf_checkout_into_a_file_is_refused(cli, repo_dir, tmp_path):
    src = make_folder(tmp_path / "src", "gpt2")
    cli("substrate", "add", "g", "--from", str(src))
    result = cli.fails("checkout", "HEAD", "--model", "g", "-o", str(tmp_path / "x.safetensors"))
    assert "give -o a directory" in result.stderr


def commit_random(repo_dir: Path, scale: float = 0.5) -> None:
    from basinvcs import porcelain
    from basinvcs.objects import Basin

    with Repository.open(repo_dir) as repo:
        gen = torch.Generator().manual_seed(3)
        z = (torch.randn(repo.config.chart.dim, generator=gen) * scale).tolist()
        porcelain.commit(repo, Basin.create(repo.config.chart, z), "a random basin")


def big_llama(path: Path, dtype: torch.dtype) -> Path:
    """A Llama whose embeddings and head (96,000 values each) span a full block and a short one."""
    make_config, arch, _, _ = MODELS["llama"]
    config = make_config()
    config.vocab_size = 3000
    torch.manual_seed(0)
    getattr(transformers, arch)(config).to(dtype).save_pretrained(str(path))
    return path


@pytest.mark.parametrize("stored", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("written", [torch.float32, torch.bfloat16])
def test_checkout_streamed_in_pieces_has_the_bits_of_whole_tensors(
    repo_dir, tmp_path, monkeypatch, stored, written
):
    """write_decoded reads θ0 a piece at a time from the file into one buffer and offsets it
    there; Decoded.tensors() offsets whole tensors read through safetensors. Same bits."""
    from safetensors.torch import load_file

    from basinvcs.model.projection import BLOCK
    from basinvcs.model.registry import add_hf_substrate

    monkeypatch.setattr(bridge, "PIECE", BLOCK)  # several pieces per large tensor
    sub = add_hf_substrate("l", big_llama(tmp_path / "src", stored))
    assert max(s.numel for s in sub.specs) > BLOCK
    assert {s.dtype for s in sub.specs if s.projected} == {stored}
    commit_random(repo_dir)
    with Repository.open(repo_dir) as repo:
        dec = bridge.decode(repo, "HEAD", "l")
        bridge.write_decoded(dec, tmp_path / "out", dtype=written)
        expected = {s.name: t.to(written) for s, t in dec.tensors()}
    got = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert list(got) == list(expected)
    assert all(torch.equal(got[k], v) for k, v in expected.items())
    theta0 = {s.name: sub.theta0(s).to(written) for s in sub.specs}
    assert not any(torch.equal(got[k], theta0[k]) for k in got)  # every tensor moved


def test_checkout_carries_integer_buffers_through_the_pieces(repo_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    from basinvcs.model.registry import add_hf_substrate

    src = make_folder(tmp_path / "b", "bert")
    tensors = load_file(str(src / "model.safetensors"))
    tensors["embeddings.position_ids"] = torch.arange(512)[None]
    save_file(tensors, str(src / "model.safetensors"), metadata={"format": "pt"})
    add_hf_substrate("b", src)
    commit_random(repo_dir)
    with Repository.open(repo_dir) as repo:
        dec = bridge.decode(repo, "HEAD", "b")
        bridge.write_decoded(dec, tmp_path / "out")
        expected = dict((s.name, t) for s, t in dec.tensors())
    got = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert torch.equal(got["embeddings.position_ids"], torch.arange(512)[None])
    assert all(torch.equal(got[k], v) for k, v in expected.items())


def test_a_checkout_takes_the_theta0_header_its_substrate_parsed(repo_dir, tmp_path, monkeypatch):
    """Loading the substrate parses θ0's header; the checkout's reader takes it, not parsing it
    again (while the file holds those bytes: see test_modelio)."""
    from basinvcs.model import modelio
    from basinvcs.model.registry import add_hf_substrate

    add_hf_substrate("b", make_folder(tmp_path / "b", "bert"))
    commit_random(repo_dir)

    def not_again(*args):
        raise AssertionError("θ0's header was parsed when the substrate was loaded")

    with Repository.open(repo_dir) as repo:
        dec = bridge.decode(repo, "HEAD", "b")
        monkeypatch.setattr(modelio, "parse_json", not_again)
        bridge.write_decoded(dec, tmp_path / "out")
    assert (tmp_path / "out" / "model.safetensors").is_file()


def llama_with(tmp_path: Path, tensor: str, value: float) -> Path:
    """The tiny llama folder with one value of `tensor` set to `value`."""
    from safetensors.torch import load_file, save_file

    src = make_folder(tmp_path / "src", "llama")
    tensors = load_file(str(src / "model.safetensors"))
    tensors[tensor][3, 5] = value
    save_file(tensors, str(src / "model.safetensors"), metadata={"format": "pt"})
    return src


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_non_finite_weight_is_never_registered(cli, basin_home, tmp_path, value):
    src = llama_with(tmp_path, "model.layers.1.mlp.up_proj.weight", value)
    result = cli.fails("substrate", "add", "l", "--from", str(src))
    assert "tensor 'model.layers.1.mlp.up_proj.weight' has values that are not finite" in (
        result.stderr
    )
    assert not (basin_home / "substrates" / "l").exists()


@pytest.mark.parametrize("masked", [False, True])
def test_a_weight_the_dtype_cannot_hold_is_refused_and_nothing_written(
    cli, tmp_path, monkeypatch, masked
):
    """θ0 finite as registered, beyond float16 once written as float16: refused, whether the
    chart projects the tensor or leaves it at θ0 (written as θ0 is, checked all the same)."""
    tensor = "model.embed_tokens.weight" if masked else "model.layers.1.mlp.up_proj.weight"
    cli("substrate", "add", "l", "--from", str(llama_with(tmp_path, tensor, 1e6)))
    monkeypatch.chdir(tmp_path)
    cli("init", "r", "--dim", "64", *(["--exclude", "model.embed_tokens.*"] if masked else []))
    monkeypatch.chdir(tmp_path / "r")
    commit_random(tmp_path / "r")
    out = tmp_path / "out"
    result = cli.fails("checkout", "HEAD", "--model", "l", "-o", str(out), "--dtype", "float16")
    assert f"tensor '{tensor}' has values that are not finite as torch.float16" in result.stderr
    assert not out.exists() or list(out.iterdir()) == []
