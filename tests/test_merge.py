"""Three-way merging: the arithmetic (basinvcs.merge) and `basin merge` end to end."""

import pytest
import torch

from basinvcs import merge as mm
from basinvcs import porcelain
from basinvcs.identity import Identity
from basinvcs.metrics import common_scale
from basinvcs.objects import Basin, Chart, Commit
from basinvcs.repository import Repository
from tests.conftest import CHART, DIM, commit_z, state, vec


def side(z, fisher=None, weight=1.0) -> mm.Side:
    return mm.Side(z, fisher, (1.0,), weight)


# -- the arithmetic ------------------------------------------------------------------------------


def test_disjoint_changes_are_both_kept_by_every_blending_strategy():
    base = vec()
    ours, theirs = side(vec(c0=1.0, c1=2.0)), side(vec(c2=3.0), weight=5.0)
    for strategy in ("fisher", "linear", "add"):
        assert mm.combine(base, [ours, theirs], strategy) == vec(c0=1.0, c1=2.0, c2=3.0)
    assert mm.assess(base, ours, theirs).shared == 0


def test_fisher_strategy_weights_shared_coordinates_by_information():
    base = vec(c0=1.0)
    ours = side(vec(c0=2.0), fisher=[3.0] + [1.0] * (DIM - 1))  # δ = +1 with F = 3
    theirs = side(vec(c0=-1.0), fisher=[1.0] * DIM)  # δ = -2 with F = 1
    merged = mm.combine(base, [ours, theirs], "fisher")
    f = 3.0 / ((3.0 + DIM - 1) / DIM)  # ours on the common scale: divided by its mean
    assert merged[0] == pytest.approx(1.0 + (f * 1 + 1 * -2) / (f + 1))
    assert mm.combine(base, [ours, theirs], "linear")[0] == pytest.approx(1.0 + (1 - 2) / 2)


def test_fisher_scale_alone_carries_no_weight():
    """A side whose Fisher is 1000x larger everywhere (less converged, or claiming more) gets no
    more say than one with the same shape at 1x: only where each side's information lies counts."""
    base = vec()
    shape = [4.0, 1.0] + [0.5] * (DIM - 2)
    loud = side(vec(c0=1.0, c1=1.0), fisher=[1000 * f for f in shape])
    quiet = side(vec(c0=-1.0, c1=3.0), fisher=shape)
    merged = mm.combine(base, [loud, quiet], "fisher")
    assert merged[:2] == pytest.approx([0.0, 2.0])  # equal weights at each coordinate
    assert mm.assess(base, loud, quiet).relative == pytest.approx(
        mm.assess(base, side(loud.z, shape), quiet).relative
    )


def random_deltas(n: int, seed: int) -> list[list[float]]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, DIM, generator=g, dtype=torch.float64).tolist()


def test_add_keeps_each_side_s_change_along_its_own_direction():
    """⟨m, δ_s⟩ = ‖δ_s‖² for every side: three random (nearly orthogonal) sides, any weights."""
    base = vec(c0=0.5)
    deltas = random_deltas(3, 0)
    sides = [
        side((torch.tensor(base) + torch.tensor(ds)).tolist(), weight=w)
        for ds, w in zip(deltas, (1, 3, 7), strict=True)
    ]
    m = torch.tensor(mm.combine(base, sides, "add")) - torch.tensor(base)
    for ds in torch.tensor(deltas):
        assert float(m @ ds) == pytest.approx(float(ds @ ds))
    plain_sum = torch.tensor(deltas).sum(0)  # nearly orthogonal: close to the sum
    assert torch.nn.functional.cosine_similarity(m, plain_sum, dim=0) > 0.99


def test_add_sums_orthogonal_changes_and_counts_equal_ones_once():
    base = vec()
    a, b = vec(c0=1.0, c1=1.0), vec(c0=1.0, c1=-1.0)  # orthogonal, on shared coordinates
    assert mm.combine(base, [side(a), side(b)], "add") == pytest.approx(vec(c0=2.0))
    for n in (2, 3, 5):  # the same change from n sides, whatever their weights: once
        sides = [side(a, weight=float(k + 1)) for k in range(n)]
        assert mm.combine(base, sides, "add") == pytest.approx(a)
    c = vec(c0=1.0, c1=0.5)  # equal sizes at cosine 0.8: each scaled by 1 / (1 + 0.8)
    d = vec(c0=0.5, c1=1.0)
    assert mm.combine(base, [side(c), side(d)], "add") == pytest.approx(vec(c0=5 / 6, c1=5 / 6))


def test_add_measures_overlap_in_the_fisher_metric():
    """(1, 1) and (1, −1) are orthogonal, but not where the model is three times as sensitive to
    the first coordinate: cosine 1/2 there, so each counts 2/3; a side whose change carries no
    Fisher information at all is kept whole."""
    base = vec()
    fisher = [3.0, 1.0] + [1.0] * (DIM - 2)
    a, b = side(vec(c0=1.0, c1=1.0), fisher), side(vec(c0=1.0, c1=-1.0), fisher)
    assert mm.combine(base, [a, b], "add")[:2] == pytest.approx([4 / 3, 0.0])
    blind = [0.0, 0.0] + [1.0] * (DIM - 2)  # neither side claims information at c0, c1
    a, b = side(vec(c0=1.0, c1=1.0), blind), side(vec(c0=1.0, c1=0.5), blind)
    assert mm.combine(base, [a, b], "add")[:2] == pytest.approx([2.0, 1.5])


def test_add_weighs_sides_that_cannot_all_be_met():
    """One side undoing the other: nothing of either; the same direction at two sizes: between
    them, nearer the heavier side."""
    base = vec()
    a = vec(c0=1.0, c1=2.0)
    assert mm.combine(base, [side(a), side(vec(c0=-1.0, c1=-2.0))], "add") == pytest.approx(
        vec(), abs=1e-9
    )
    double = vec(c0=2.0, c1=4.0)
    light = mm.combine(base, [side(a, weight=1.0), side(double, weight=0.001)], "add")[0]
    heavy = mm.combine(base, [side(a, weight=0.001), side(double, weight=1.0)], "add")[0]
    assert 1.0 < light < heavy < 2.0 and light == pytest.approx(1.0, abs=0.01)


def test_add_is_exact_at_the_edge_of_the_float_range():
    """The coefficients are scale-free: changes near the largest floats merge as small ones do."""
    base = vec()
    a, b = vec(c0=1e300, c1=1e300), vec(c0=1e300, c1=-1e300)
    assert mm.combine(base, [side(a), side(b)], "add") == pytest.approx(vec(c0=2e300))
    tiny = [v * 1e-300 for v in mm.combine(base, [side(a), side(a)], "add")]
    assert tiny == pytest.approx(vec(c0=1.0, c1=1.0))


def test_ties_trims_elects_a_sign_and_averages_the_agreeing():
    base = vec()
    small = [0.01 * (i + 1) for i in range(10)]
    ours = side(small + [1.0] + [0.0] * (DIM - 11))  # 11 changes: TIES keeps the largest 3
    theirs = side(vec(c10=3.0, c11=-1.0))
    merged = mm.combine(base, [ours, theirs], "ties")
    assert merged[:8] == [0.0] * 8 and merged[8:10] == pytest.approx([0.09, 0.1])
    assert merged[10] == pytest.approx(2.0)  # both kept it, signs agree: their mean
    assert merged[11] == 0.0  # theirs keeps only its largest of two changes
    opposed = mm.combine(base, [side(vec(c0=1.0)), side(vec(c0=-3.0))], "ties")
    assert opposed[0] == pytest.approx(-3.0)  # the elected sign is theirs; ours disagrees, dropped


def test_assessment_scales_and_sign_flips():
    base = vec()
    v = vec(c0=1.0, c1=-0.5, c2=0.25)
    same = mm.assess(base, side(v), side(v))
    assert same.distance == 0 and same.interference == 0
    scaled = mm.assess(base, side(v), side([100 * x for x in v]))
    assert scaled.relative == pytest.approx(99.0) and scaled.interference == 0
    flipped = mm.assess(base, side(v), side([-x for x in v]))
    assert flipped.relative == pytest.approx(2.0) and flipped.interference == 1.0
    assert scaled.refused(4.0, 0.5) and flipped.refused(4.0, 0.5)
    assert not same.refused(4.0, 0.5)
    assert scaled.worst[0][0] == 0  # the largest disagreement first


def test_capacity_rule():
    assert mm.capacity(None) == 1.0 and mm.capacity(1_033_600) == pytest.approx(1.0145, abs=1e-3)
    assert mm.capacity(1_000_000_000) == pytest.approx(4.0)
    assert mm.merge_beta([side(vec()), mm.Side(vec(), None, (1.0, 2.0), 3.0)]) == (1.0, 1.5)


# -- basin merge ---------------------------------------------------------------------------------


def head_z(repo_dir) -> list[float]:
    with Repository.open(repo_dir) as repo:
        return list(repo.read_basin(repo.read_commit(repo.head_commit()).basin).z)


def two_branches(repo_dir, cli, za, zb, fisher=None):
    cli("fork", "general", "--specialize", "a")
    commit_z(repo_dir, za, "a's change", fisher=fisher)
    cli("fork", "general", "--specialize", "b")
    commit_z(repo_dir, zb, "b's change", fisher=fisher)
    cli("checkout", "a")


def test_disjoint_branches_merge_to_exactly_both_changes(repo_dir, cli):
    two_branches(repo_dir, cli, vec(c0=1.0, c1=2.0), vec(c5=-3.0))
    out = cli("merge", "b").output
    assert "Merge made by the 'add' strategy" in out and "0 shared coordinates" in out
    assert head_z(repo_dir) == vec(c0=1.0, c1=2.0, c5=-3.0)
    with Repository.open(repo_dir) as repo:
        c = repo.read_commit(repo.head_commit())
        assert len(c.parents) == 2 and c.strategy == "add"
        assert c.metrics["interference"] == 0 and "weight_theirs" in c.metrics
        assert repo.read_basin(c.basin).labels == ("general", "a", "b")
    assert cli("verify").output.rstrip().endswith("ok")
    assert "Merge:" in cli("log", "-n", "1").output


def test_fast_forward_and_up_to_date(repo_dir, cli):
    cli("fork", "general", "--specialize", "a")
    commit_z(repo_dir, vec(c0=1.0), "a")
    cli("checkout", "general")
    assert cli("merge", "a").output.startswith("Fast-forward")
    assert head_z(repo_dir) == vec(c0=1.0)
    assert cli("merge", "a").output.startswith("Already up to date.")


def test_no_ff_makes_a_merge_commit(repo_dir, cli):
    cli("fork", "general", "--specialize", "a")
    commit_z(repo_dir, vec(c0=1.0), "a")
    cli("checkout", "general")
    assert "Merge made" in cli("merge", "a", "--no-ff").output


HIGH_FISHER = [100.0] * 4 + [0.01] * (DIM - 4)


@pytest.mark.parametrize(
    "theirs, reason",
    [
        (vec(c0=100.0, c1=-50.0, c2=25.0, c3=100.0), "Fisher distance"),  # 100× ours
        (vec(c0=-1.0, c1=0.5, c2=-0.25, c3=-1.0), "interference"),  # sign-flipped
    ],
)
def test_poisoned_updates_are_refused_and_nothing_changes(repo_dir, cli, theirs, reason):
    two_branches(repo_dir, cli, vec(c0=1.0, c1=-0.5, c2=0.25, c3=1.0), theirs, HIGH_FISHER)
    before = state(repo_dir)
    result = cli("merge", "b", ok=False)
    assert result.exit_code == 1
    assert f"error: merge of b refused: {reason}" in result.stderr
    assert "most conflicting coordinates" in result.stderr
    assert state(repo_dir) == before
    assert "Merge made" in cli("merge", "b", "--force").output


@pytest.mark.parametrize("seed", range(7))
def test_independent_updates_merge_by_default(repo_dir, cli, seed):
    """Two unrelated dense updates oppose on about half their coordinates (interference ~0.5):
    honest specialists look like this (docs/merge.md), so the default check lets them through."""
    gen = torch.Generator().manual_seed(seed)
    za, zb = (torch.randn(DIM, generator=gen).tolist() for _ in range(2))
    two_branches(repo_dir, cli, za, zb)
    assert "Merge made" in cli("merge", "b").output


def test_thresholds_come_from_config_and_options(repo_dir, cli):
    two_branches(repo_dir, cli, vec(c0=1.0), vec(c0=3.0))  # relative distance 2
    assert cli("merge", "b", "--max-distance", "1.5", ok=False).exit_code == 1
    with Repository.open(repo_dir) as repo:
        repo.change_config(lambda c: c.settings.update(merge={"max_distance": 1.0}))
    assert cli("merge", "b", ok=False).exit_code == 1
    assert "Merge made" in cli("merge", "b", "--max-distance", "2.5").output


def test_ours_and_theirs_resolve_deliberately(repo_dir, cli):
    two_branches(repo_dir, cli, vec(c0=1.0), vec(c0=-100.0))
    cli("merge", "b", "--strategy", "theirs")
    assert head_z(repo_dir) == vec(c0=-100.0)


def test_a_basin_of_another_chart_is_refused(repo_dir, cli):
    with Repository.open(repo_dir) as repo:
        ident = repo.identity()
        foreign = repo.write_basin(Basin.create(Chart(seed=8, dim=DIM), vec(c0=1.0)))
        c = Commit(foreign, (repo.head_commit(),), ident.public_key, 1, "foreign").signed(
            ident.sign
        )
        repo.create_branch("foreign", repo.write_commit(c), "test")
    before = state(repo_dir)
    result = cli.fails("merge", "foreign")
    assert "chart" in result.stderr and "mean different things" in result.stderr
    assert state(repo_dir) == before


def test_untrusted_commits_are_refused_unless_allowed(repo_dir, cli):
    stranger = Identity(bytes(range(32)), "stranger")
    with Repository.open(repo_dir) as repo:
        basin = repo.write_basin(Basin.create(CHART, vec(c3=1.0)))
        c = Commit(basin, (repo.head_commit(),), stranger.public_key, 1, "from a stranger")
        repo.create_branch("s", repo.write_commit(c.signed(stranger.sign)), "test")
    cli("fork", "general", "--specialize", "a")
    commit_z(repo_dir, vec(c0=1.0), "a")
    before = state(repo_dir)
    result = cli.fails("merge", "s")
    assert "signed by untrusted key" in result.stderr
    assert state(repo_dir) == before
    cli("merge", "s", "--allow-untrusted")
    assert head_z(repo_dir) == vec(c0=1.0, c3=1.0)


def test_a_bad_signature_is_refused_even_when_allowed(repo_dir, cli):
    with Repository.open(repo_dir) as repo:
        ident = repo.identity()
        basin = repo.write_basin(Basin.create(CHART, vec(c3=1.0)))
        c = Commit(basin, (repo.head_commit(),), ident.public_key, 1, "forged", signature=bytes(64))
        repo.create_branch("x", repo.write_commit(c), "test")
    cli("fork", "general", "--specialize", "a")
    commit_z(repo_dir, vec(c0=1.0), "a")
    assert "bad signature" in cli.fails("merge", "x", "--allow-untrusted").stderr


def test_criss_cross_merges_against_the_mean_of_the_bases(repo_dir, cli):
    two_branches(repo_dir, cli, vec(c0=1.0), vec(c1=1.0))
    cli("merge", "b")  # a: c0, c1
    cli("checkout", "b")
    with Repository.open(repo_dir) as repo:
        porcelain.merge(repo, "a~1", no_ff=True)  # b merges a's first commit: criss-cross
    cli("checkout", "a")
    out = cli("merge", "b").output
    assert "2 best common ancestors" in out
    assert head_z(repo_dir) == vec(c0=1.0, c1=1.0)  # base = mean of the two; both sides agree


def test_a_merge_updates_the_links_between_the_concepts_it_carries(repo_dir, cli):
    base = vec(c9=1.0)  # a shared, non-genesis base so both concepts start from it
    commit_z(repo_dir, base, "base")
    cli("fork", "general", "--specialize", "a")
    commit_z(repo_dir, vec(c9=1.0, c0=1.0, c1=1.0), "a")
    cli("fork", "general", "--specialize", "b")
    commit_z(repo_dir, vec(c9=1.0, c0=1.0, c2=1.0), "b")  # cosine with a's direction: 1/2
    cli("checkout", "a")
    cli("merge", "b")
    with Repository.open(repo_dir) as repo:
        links = repo.read_basin(repo.read_commit(repo.head_commit()).basin).entanglements
    assert [(e.a, e.b) for e in links] == [("a", "b")]
    assert links[0].strength == pytest.approx(0.5)


# -- nothing a packet says about itself switches the check off -----------------------------------

FLOAT_MAX = 1.7976931348623157e308


def agree_then_flip(dim: int, agree: int):
    """Ours: a dense change. Theirs: the same on `agree` coordinates, sign-flipped on the rest,
    with a Fisher diagonal at the float maximum where it agrees (the overflow attack)."""
    gen = torch.Generator().manual_seed(0)
    za = torch.randn(dim, generator=gen).tolist()
    zb = [a if i < agree else -a for i, a in enumerate(za)]
    fb = [FLOAT_MAX] * agree + [FLOAT_MAX * 2**-15] * (dim - agree)
    return za, zb, fb


@pytest.mark.parametrize("ours_fisher", [None, "flat", "huge"])
def test_a_fisher_at_the_float_maximum_cannot_pass_a_sign_flip(repo_dir, cli, ours_fisher):
    za, zb, fb = agree_then_flip(DIM, 4)
    fa = {None: None, "flat": [1.0] * DIM, "huge": [FLOAT_MAX] * DIM}[ours_fisher]
    cli("fork", "general", "--specialize", "a")
    commit_z(repo_dir, za, "ours", fisher=fa)
    cli("fork", "general", "--specialize", "b")
    commit_z(repo_dir, zb, "theirs, flipped, with an overflowing Fisher", fisher=fb)
    cli("checkout", "a")
    before = state(repo_dir)
    result = cli("merge", "b", ok=False)
    assert result.exit_code == 1 and "error: merge of b refused: interference" in result.stderr
    assert state(repo_dir) == before
    # forced through, the fisher strategy still keeps what we hold where they claim little,
    # and the merged Fisher is back on the common scale
    cli("merge", "b", "--force")
    with Repository.open(repo_dir) as repo:
        merged = repo.read_basin(repo.read_commit(repo.head_commit()).basin)
    assert sum(1 for x, a in zip(merged.z, za, strict=True) if x * a < 0) == 0
    assert max(merged.fisher) <= DIM


def test_the_assessment_cannot_overflow():
    za, zb, fb = agree_then_flip(1024, 4)
    for fa in (None, [FLOAT_MAX] * 1024):
        big = [3.4e38 * (1 if v > 0 else -1) for v in zb]  # the largest float32 coordinates
        verdict = mm.assess([0.0] * 1024, side(za, fa), side(big, fb))
        assert verdict.interference > 0.99 and verdict.relative > 1
        merged = mm.combine([0.0] * 1024, [side(za, fa), side(big, fb)], "fisher")
        assert all(abs(v) < 3.5e38 for v in merged)


def test_their_fisher_can_steer_the_weights_but_not_lower_the_interference():
    za, zb, fb = agree_then_flip(DIM, 4)
    identity_view = sum(a * a for a in za[4:]) / sum(a * a for a in za)
    verdict = mm.assess([0.0] * DIM, side(za), side(zb, fb))
    assert verdict.interference == pytest.approx(identity_view)  # our (identity) view counts
    fbar = [(1 + f) / 2 for f in common_scale(fb, DIM)]
    mean_view = sum(f * a * a for f, a in zip(fbar[4:], za[4:], strict=True)) / sum(
        f * a * a for f, a in zip(fbar, za, strict=True)
    )
    assert mean_view < 0.8 < identity_view  # F̄ alone would have let it through


def test_non_finite_results_are_refused_not_written():
    with pytest.raises(mm.MergeArithmeticError, match="value 0 of the merged β is inf"):
        mm.merge_beta(
            [mm.Side(vec(), None, (FLOAT_MAX,), 1.0), mm.Side(vec(), None, (FLOAT_MAX,), 1.0)]
        )
    with pytest.raises(porcelain.BasinError, match="side weight nan"):
        mm.Side(vec(), None, (1.0,), float("nan"))


@pytest.mark.parametrize("weight", ["1e308", "1e-320", "nan", "inf", "-1", "0"])
def test_trust_weights_out_of_bounds_are_refused_when_set(repo_dir, cli, weight):
    key = "z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"
    before = state(repo_dir)
    result = cli.fails("key", "add", key, "--name", "mallory", "--weight", weight)
    assert "trust weight" in result.stderr and "between 0.001 and 1000" in result.stderr
    assert state(repo_dir) == before
    result = cli("merge", "general", "--weight", weight, ok=False)  # click's range, or ours
    assert result.exit_code in (1, 2) and "--weight" in result.stderr.splitlines()[-1]


@pytest.mark.parametrize("weight", [1e308, 1e-320, "1", True, None])
def test_trust_weights_out_of_bounds_are_refused_when_config_is_read(repo_dir, cli, weight):
    import json

    path = repo_dir / ".basin" / "config.json"
    doc = json.loads(path.read_text())
    doc["trusted"][0]["weight"] = weight
    path.write_text(json.dumps(doc))
    result = cli.fails("log")
    assert "config.json is unusable: trusted[0].weight" in result.stderr


@pytest.mark.parametrize("option", ["--max-interference", "--max-distance"])
@pytest.mark.parametrize("value", ["nan", "inf", "-1"])
def test_non_finite_thresholds_are_refused(repo_dir, cli, option, value):
    two_branches(repo_dir, cli, vec(c0=1.0), vec(c0=-1.0))  # interference 1: refused normally
    before = state(repo_dir)
    result = cli("merge", "b", option, value, ok=False)
    assert result.exit_code != 0
    # out of the option's range: a usage error (exit 2); NaN passes click and is ours to refuse
    last = result.stderr.splitlines()[-1]
    assert "must be a finite number >= 0" in last or "Invalid value" in last
    assert state(repo_dir) == before


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-1", '"0.5"', "[]"])
def test_non_finite_thresholds_in_config_are_refused(repo_dir, cli, value):
    path = repo_dir / ".basin" / "config.json"
    text = path.read_text().replace(
        '"settings": {}', f'"settings": {{"merge": {{"max_interference": {value}}}}}'
    )
    path.write_text(text)
    result = cli.fails("merge", "general")
    assert "config.json is unusable" in result.stderr


def test_capacity_counts_only_a_registered_substrate(repo_dir, cli):
    from basinvcs.objects import SubstrateRef

    claims = SubstrateRef("huge", bytes(32), 2**64 - 1)
    two_branches(repo_dir, cli, vec(c0=1.0), vec(c0=3.0))
    with Repository.open(repo_dir) as repo:
        basin = Basin.create(CHART, vec(c0=3.0), substrate=claims)
        porcelain.checkout(repo, "b")
        porcelain.commit(repo, basin, "claims 2^64 - 1 parameters", allow_empty=True)
        porcelain.checkout(repo, "a")
    result = cli("merge", "b", "--strategy", "linear")  # the mean: 2 only with equal weights
    assert "weights ours 1, theirs 1;" in result.output
    assert "theirs: substrate huge is not registered here" in result.stderr
    assert head_z(repo_dir) == vec(c0=2.0)


# -- any number of sides, into any branch, strategies from the registry ---------------------------


def test_three_sides_combine_where_several_changed_and_keep_single_changes():
    base = vec()
    a, b, c = side(vec(c0=1.0, c1=5.0)), side(vec(c0=4.0, c2=7.0)), side(vec(c0=-2.0), weight=2.0)
    merged = mm.combine(base, [a, b, c], "linear")
    assert merged[0] == pytest.approx((1.0 + 4.0 - 4.0) / 4)  # Σ w δ / Σ w over the three
    assert merged[1:3] == [5.0, 7.0]  # changed by one side each: whole
    assert mm.combine(base, [a, b, c], "ours") == a.z
    with pytest.raises(porcelain.BasinError, match="'theirs' takes one incoming side"):
        mm.combine(base, [a, b, c], "theirs")
    assert mm.merge_beta([a, b, mm.Side(vec(), None, (4.0,), 2.0)]) == (2.5,)


def test_a_registered_strategy_is_offered_everywhere(cli, repo_dir):
    from basinvcs.merge import strategy

    @strategy.register
    class Largest(strategy.Strategy):
        name = "largest"
        summary = "the largest change"

        def coordinate(self, shares):
            return max((d for _, _, d in shares), key=abs)

    try:
        assert mm.combine(vec(), [side(vec(c0=1.0)), side(vec(c0=-3.0))], "largest")[0] == -3.0
        assert mm.get("largest").summary == "the largest change"
    finally:
        del strategy.REGISTRY["largest"]
    with pytest.raises(porcelain.BasinError, match="unknown merge strategy 'largest'"):
        mm.get("largest")


def test_an_octopus_merge_of_three_branches(repo_dir, cli):
    cli("fork", "general", "--specialize", "a")
    commit_z(repo_dir, vec(c0=1.0), "a")
    cli("fork", "general", "--specialize", "b")
    commit_z(repo_dir, vec(c1=2.0), "b")
    cli("fork", "general", "--specialize", "c")
    commit_z(repo_dir, vec(c2=3.0), "c")
    cli("checkout", "general")
    out = cli("merge", "a", "b", "c").output
    assert "Merge made by the 'add' strategy" in out
    assert "theirs a 1;" in out and "theirs c 1;" in out
    assert head_z(repo_dir) == vec(c0=1.0, c1=2.0, c2=3.0)
    with Repository.open(repo_dir) as repo:
        c = repo.read_commit(repo.head_commit())
        assert len(c.parents) == 4 and c.message == "Merge a, b and c into general"
        assert {"interference_1", "weight_theirs_3"} <= set(c.metrics)
    assert cli("verify").output.rstrip().endswith("ok")
    assert cli("merge", "a", "b").output.startswith("Already up to date.")


def test_basin_merge_with_add_keeps_both_changes_on_shared_coordinates(repo_dir, cli):
    """Two branches that changed the same coordinates in orthogonal directions: `add` keeps
    both whole where the mean (fisher, linear) halves each."""
    cli("fork", "general", "--specialize", "a")
    commit_z(repo_dir, vec(c0=0.5, c1=0.5), "a")
    cli("fork", "general", "--specialize", "b")
    commit_z(repo_dir, vec(c0=0.5, c1=-0.5), "b")
    cli("checkout", "a")
    out = cli("merge", "b", "--strategy", "add", "--force").output
    assert "Merge made by the 'add' strategy" in out
    assert head_z(repo_dir)[:3] == pytest.approx([1.0, 0.0, 0.0], abs=1e-3)  # float24 packets
    with Repository.open(repo_dir) as repo:
        assert repo.read_commit(repo.head_commit()).strategy == "add"


def test_a_refused_side_refuses_the_whole_octopus(repo_dir, cli):
    two_branches(repo_dir, cli, vec(c0=1.0, c1=-0.5), vec(c0=-1.0, c1=0.5))  # b flips a
    cli("fork", "general", "--specialize", "c")
    commit_z(repo_dir, vec(c5=1.0), "c")
    cli("checkout", "a")
    before = state(repo_dir)
    result = cli("merge", "c", "b", ok=False)
    assert result.exit_code == 1 and "error: merge of b refused: interference" in result.stderr
    assert state(repo_dir) == before


def test_merge_into_another_branch_leaves_head_alone(repo_dir, cli):
    two_branches(repo_dir, cli, vec(c0=1.0), vec(c1=2.0))
    cli("checkout", "general")
    out = cli("merge", "b", "--into", "a").output
    assert "Merge made" in out
    with Repository.open(repo_dir) as repo:
        a = repo.read_commit(repo.branch_commit("a"))
        assert a.message == "Merge b into a" and len(a.parents) == 2
        assert repo.current_branch() == "refs/heads/general"
        assert repo.reflog("refs/heads/a")[0].message == "merge b: add"
        assert not repo.reflog("HEAD")[0].message.startswith("merge")
    assert cli("merge", "a", "--into", "a").output.startswith("Already up to date.")
    assert "no such branch" in cli.fails("merge", "b", "--into", "nosuch").stderr
