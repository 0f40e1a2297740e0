"""The model bridge end to end on the `tiny` substrate: commit --model, checkout --model."""

import json
import pickle

import pytest
import torch
from safetensors.torch import load_file, save_file

from basinvcs import porcelain
from basinvcs.model import bridge
from basinvcs.model.registry import load_substrate
from basinvcs.objects import Basin
from basinvcs.repository import Repository
from tests.conftest import state


@pytest.fixture(scope="module")
def tiny():
    return load_substrate("tiny")


@pytest.fixture
def repo1024(tmp_path, monkeypatch):
    """A default repository (d = 1024) as the working directory."""
    path = tmp_path / "r"
    porcelain.init(path).close()
    monkeypatch.chdir(path)
    return path


def commit_random_basin(path, scale=0.05, seed=0) -> Basin:
    with Repository.open(path) as repo:
        gen = torch.Generator().manual_seed(seed)
        z = (torch.randn(repo.config.chart.dim, generator=gen) * scale).tolist()
        basin = Basin.create(repo.config.chart, z)
        porcelain.commit(repo, basin, "a random basin")
        return repo.read_basin(repo.read_commit(repo.head_commit()).basin)


def test_checkout_then_commit_gives_the_same_coordinates(repo1024, cli):
    basin = commit_random_basin(repo1024)
    out = cli("checkout", "HEAD", "--model", "tiny", "-o", "m.safetensors").output
    assert "wrote tiny (1,033,600 parameters, float32)" in out
    cli("fork", "general~1", "--specialize", "again")  # from genesis, so the basin is new there
    out = cli("commit", "--model", "m.safetensors", "-m", "round trip").output
    captured = float(out.split("captured ")[1].split("%")[0]) / 100
    assert captured >= 0.9999
    with Repository.open(repo1024) as repo:
        back = repo.read_basin(repo.read_commit(repo.head_commit()).basin)
    z, z2 = torch.tensor(basin.z), torch.tensor(back.z)
    assert float((z2 - z).norm() / z.norm()) <= 1e-5
    assert back.substrate.name == "tiny"


def test_a_full_parameter_random_change_is_mostly_lost_and_said_so(repo1024, cli, tiny):
    gen = torch.Generator().manual_seed(1)
    state_ = {
        s.name: tiny.theta0(s) + 0.01 * torch.randn(s.shape, generator=gen) for s in tiny.specs
    }
    save_file(state_, "ft.safetensors")
    result = cli("commit", "--model", "ft.safetensors", "-m", "outside the basin")
    captured = float(result.output.split("captured ")[1].split("%")[0]) / 100
    expected = 1024 / tiny.num_params
    assert 0.5 * expected < captured < 2 * expected
    assert "trained outside it" in result.stderr


def test_checkout_into_another_substrate_says_so(repo1024, cli, tiny):
    save_file({s.name: tiny.theta0(s) + 0.001 for s in tiny.specs}, "ft.safetensors")
    cli("commit", "--model", "ft.safetensors", "-m", "fitted on tiny")
    same = cli("checkout", "HEAD", "--model", "tiny", "-o", "t.safetensors")
    assert "note:" not in same.stderr
    other = cli("checkout", "HEAD", "--model", "100M", "-o", "big", "--dtype", "bfloat16")
    assert "fitted on tiny" in other.stderr and "not that of the tiny model" in other.stderr
    with Repository.open(repo1024) as repo:
        z = torch.tensor(repo.read_basin(repo.read_commit(repo.head_commit()).basin).z)
    big = load_substrate("100M")
    written = load_file(next((repo1024 / "big").glob("*.safetensors")))
    spec = next(s for s in big.specs if s.name in written)
    assert written[spec.name].shape == spec.shape  # the same coordinates, 100M's tensors
    assert float(z.norm()) > 0


def test_checkout_writes_shards_and_dtypes(repo1024, cli):
    commit_random_basin(repo1024)
    cli("checkout", "HEAD", "--model", "tiny", "-o", "sharded", "--max-shard-size", "1")
    index = json.loads((repo1024 / "sharded" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) >= 4
    cli("checkout", "HEAD", "--model", "tiny", "-o", "bf.safetensors", "--dtype", "bfloat16")
    assert load_file("bf.safetensors")["tok_emb.weight"].dtype == torch.bfloat16


def test_checkout_without_model_moves_head(repo1024, cli):
    cli("fork", "general", "--specialize", "med")
    assert cli("checkout", "general").output.strip() == "Switched to branch 'general'"
    assert cli("status").output.startswith("On branch general")
    out = cli("checkout", "HEAD").output
    assert "detached HEAD" in out and "HEAD detached" in cli("status").output


# -- bad input -----------------------------------------------------------------------------------


def refuses(cli, repo_path, *args, match):
    before = state(repo_path)
    result = cli.fails(*args)
    assert match in result.stderr, result.stderr
    assert state(repo_path) == before


def _renamed(theta):
    theta["extra.weight"] = theta.pop("ln_f.weight")


def _reshaped(theta):
    theta["ln_f.weight"] = torch.ones(7)


def _nan(theta):
    theta["ln_f.weight"] = theta["ln_f.weight"].clone()
    theta["ln_f.weight"][3] = float("nan")


def _ints(theta):
    theta["ln_f.weight"] = theta["ln_f.weight"].to(torch.int32)


@pytest.mark.parametrize(
    "mutate, extra, match",
    [
        (_renamed, [], "no substrate matches"),
        (_reshaped, ["--substrate", "tiny"], "ln_f.weight"),
        (_ints, ["--substrate", "tiny"], "ln_f.weight"),
        (_nan, [], "NaN"),
        (_nan, ["--substrate", "nosuch"], "nosuch"),
        (lambda theta: None, [], "nothing to commit"),
    ],
)
def test_bad_models_are_refused_and_change_nothing(
    repo1024, cli, tiny, tmp_path, mutate, extra, match
):
    theta = {s.name: tiny.theta0(s) for s in tiny.specs}
    mutate(theta)
    save_file(theta, tmp_path / "m.safetensors")
    refuses(
        cli,
        repo1024,
        "commit",
        "--model",
        str(tmp_path / "m.safetensors"),
        *extra,
        "-m",
        "x",
        match=match,
    )


def test_files_that_are_not_models_are_refused(repo1024, cli, tmp_path):
    (tmp_path / "notamodel.safetensors").write_text("hello")
    refuses(
        cli,
        repo1024,
        "commit",
        "--model",
        str(tmp_path / "notamodel.safetensors"),
        "-m",
        "x",
        match="error:",
    )
    refuses(cli, repo1024, "checkout", "HEAD", "--model", "nosuch", match="nosuch")


class _Evil:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_pickle_carrying_code_is_never_run(repo1024, cli, tmp_path):
    marker = tmp_path / "pwned"
    with open(tmp_path / "evil.pt", "wb") as fh:
        pickle.dump({"w": _Evil(str(marker))}, fh)
    refuses(
        cli, repo1024, "commit", "--model", str(tmp_path / "evil.pt"), "-m", "x", match="error:"
    )
    assert not marker.exists()


def test_python_api_commits_a_state_dict_and_checks_out_to_a_file(repo1024, tiny):
    gen = torch.Generator().manual_seed(5)
    state_ = {
        s.name: tiny.theta0(s) + 0.001 * torch.randn(s.shape, generator=gen) for s in tiny.specs
    }
    kept = {k: v.clone() for k, v in state_.items()}
    with Repository.open(repo1024) as repo:
        result = bridge.commit_state_dict(repo, state_, "from memory")
        assert all(torch.equal(state_[k], kept[k]) for k in kept)  # the caller's tensors untouched
        assert result.extraction.substrate.name == "tiny"
        assert repo.read_commit(result.cid).metrics["captured"] == pytest.approx(
            result.extraction.captured
        )
        dec, files = bridge.checkout_model(repo, "HEAD", "tiny", repo1024 / "out.safetensors")
    written = load_file(files[0])
    in_memory = dict((s.name, t) for s, t in dec.tensors())
    assert all(torch.equal(written[k], in_memory[k]) for k in in_memory)


def test_long_work_shows_progress_on_a_terminal_only(repo1024, cli, tiny, monkeypatch):
    save_file({s.name: tiny.theta0(s) + 0.001 for s in tiny.specs}, "ft.safetensors")
    quiet = cli("checkout", "HEAD", "--model", "tiny", "-o", "q.safetensors")
    assert quiet.stderr == ""  # CliRunner's stderr is not a terminal
    monkeypatch.setenv("BASIN_PROGRESS", "always")
    loud = cli("commit", "--model", "ft.safetensors", "-m", "with a bar")
    assert "commit tiny" in loud.stderr and "100%" in loud.stderr
    assert (
        "checkout tiny" in cli("checkout", "HEAD", "--model", "tiny", "-o", "l.safetensors").stderr
    )


def test_a_fifo_named_like_a_model_is_refused_not_waited_on(repo1024, cli, tmp_path, no_hang):
    import os

    os.mkfifo(tmp_path / "x.safetensors")
    refuses(
        cli,
        repo1024,
        "commit",
        "--model",
        str(tmp_path / "x.safetensors"),
        "-m",
        "x",
        match="is not a regular file",
    )


@pytest.mark.parametrize(
    "content, match",
    [
        ("[" * 100_000, "nests deeper than 100 levels"),
        ("[" + "9" * 400 + "]", "value 0 is an integer beyond the float range"),
        ("[" + "9" * 5000 + "]", "is not usable JSON"),
        ("[1, NaN]", "holds NaN"),
        ("[1, Infinity]", "holds Infinity"),
        ("[true]", "value 0 is bool, not a number"),
        ('{"a": 1}', "expected a JSON list of numbers"),
        ("[1, 2", "is not valid JSON"),
    ],
)
def test_bad_fisher_files_are_one_line(repo1024, cli, tiny, tmp_path, content, match):
    theta = {s.name: tiny.theta0(s) for s in tiny.specs}
    theta["ln_f.weight"] = theta["ln_f.weight"] + 0.5
    save_file(theta, tmp_path / "m.safetensors")
    (tmp_path / "f.json").write_text(content)
    refuses(
        cli,
        repo1024,
        "commit",
        "--model",
        str(tmp_path / "m.safetensors"),
        "--fisher",
        str(tmp_path / "f.json"),
        "-m",
        "x",
        match=match,
    )


def test_checkout_keeps_the_gram_factor_for_the_next_process(repo1024, tiny, monkeypatch):
    """The first checkout computes the chart's Gram correction for the substrate and keeps it
    under BASIN_HOME; a later process (the in-process cache cleared) reads it: same bytes out."""
    from basinvcs.model.projection import Projection

    commit_random_basin(repo1024)
    bridge._projection.cache_clear()
    with Repository.open(repo1024) as repo:
        bridge.checkout_model(repo, "HEAD", "tiny", repo1024 / "first.safetensors")
    assert len(list(bridge.gram_cache().glob("*.gram"))) == 1

    def not_again(self):
        raise AssertionError("the kept Gram factor should have been read")

    bridge._projection.cache_clear()
    monkeypatch.setattr(Projection, "_gram_factor", not_again)
    with Repository.open(repo1024) as repo:
        bridge.checkout_model(repo, "HEAD", "tiny", repo1024 / "again.safetensors")
    first = (repo1024 / "first.safetensors").read_bytes()
    assert (repo1024 / "again.safetensors").read_bytes() == first
