"""Tests of the intrinsic-dimension measurement engine (idcompress.measure)."""

from __future__ import annotations

import csv
import functools
import glob
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from helpers import PNG_MAGIC

from idcompress.measure import (
    ResultStore,
    Series,
    format_table,
    load_recipe,
    measure,
    plot_series,
    read_rows,
    run_points,
    search_intrinsic_dimension,
)

REPO = Path(__file__).resolve().parents[1]


# -- synthetic score functions (module level: picklable for worker processes) ------------------
def step_score(d: int, seed: int, crossing: int = 437) -> float:
    """Rises slowly with d, jumps to the baseline (1.0) at ``crossing``; seeds shift it a little."""
    if d >= crossing:
        return 1.0
    return 0.5 + 0.05 * math.log10(d) + 0.01 * seed


def pid_score(d: int, seed: int) -> float:
    return float(os.getpid())


def device_score(d: int, seed: int, device: str | None = None) -> float:
    assert device == "cpu", device
    return float(d * 100 + seed)


class Counter:
    """Counts calls of a score function."""

    def __init__(self, fn):
        self.fn, self.calls = fn, []

    def __call__(self, d, seed):
        self.calls.append((d, seed))
        return self.fn(d, seed)


LOG_DIMS = [1, 3, 10, 30, 100, 300, 1000, 3000, 10000, 30000, 100000]


# -- search ------------------------------------------------------------------------------------
def test_search_finds_exact_crossing_with_few_evaluations():
    f = Counter(step_score)
    r = search_intrinsic_dimension(f, 1.0, LOG_DIMS, seeds=[0, 1, 2], rel_tol=0.0)
    assert r.d == 437 and r.status == "found"
    assert r.extra == [] and r.interval == (437, 437)
    # every d in [1, 100000] for 3 seeds would be 300,000 runs; sweep + bisection is ~60
    assert len(f.calls) == r.n_evaluations
    assert len(f.calls) < 100
    assert {s for _, s in f.calls} == {0, 1, 2}
    # every evaluated d was run for every seed
    assert all(len(v) == 3 for v in r.scores.values())


@pytest.mark.parametrize("crossing", [2, 11, 99, 101, 2999, 77777])
def test_search_exact_for_several_crossings(crossing):
    f = functools.partial(step_score, crossing=crossing)
    r = search_intrinsic_dimension(f, 1.0, LOG_DIMS, seeds=[0], rel_tol=0.0)
    assert r.d == crossing


def test_rel_tol_stops_early_and_brackets_the_crossing():
    exact, coarse = Counter(step_score), Counter(step_score)
    search_intrinsic_dimension(exact, 1.0, LOG_DIMS, seeds=[0], rel_tol=0.0)
    r = search_intrinsic_dimension(coarse, 1.0, LOG_DIMS, seeds=[0], rel_tol=0.05)
    assert len(coarse.calls) < len(exact.calls)
    low = max(d for d in r.scores if d < r.d)
    assert low < 437 <= r.d
    assert r.d - low <= 0.05 * r.d


def test_not_reached_and_all_pass():
    r = search_intrinsic_dimension(lambda d, s: 0.5, 1.0, [10, 100, 1000], seeds=[0, 1])
    assert r.d is None and r.status == "not_reached"
    assert "not reached up to d=1000" in r.message
    assert r.interval == (None, None)
    assert sorted(r.scores) == [10, 100, 1000]  # no bisection without a passing d

    r = search_intrinsic_dimension(lambda d, s: 0.95, 1.0, [10, 100, 1000], seeds=[0])
    assert r.d == 10 and r.status == "upper_bound"
    assert "upper bound" in r.message
    assert sorted(r.scores) == [10, 100, 1000]


def test_extra_fractions_come_from_evaluated_points_without_new_runs():
    plain, with_extra = Counter(step_score), Counter(step_score)
    search_intrinsic_dimension(plain, 1.0, LOG_DIMS, seeds=[0, 1], rel_tol=0.0)
    r = search_intrinsic_dimension(
        with_extra, 1.0, LOG_DIMS, seeds=[0, 1], rel_tol=0.0, extra_fractions=[0.6, 0.5]
    )
    assert plain.calls == with_extra.calls
    for e in r.extra:
        passing = [d for d in r.scores if r.mean(d) >= e.fraction * r.baseline]
        assert e.d == min(passing)
    by_g = {e.fraction: e for e in r.extra}
    # 0.6: first passing d is 100 (0.5 + 0.05·log10 100 + 0.005 = 0.605; at 30: 0.579)
    assert by_g[0.6].d == 100 and by_g[0.6].bracket_low == 30
    assert by_g[0.5].status == "upper_bound" and by_g[0.5].d == 1


def test_bootstrap_interval_over_seeds():
    crossings = {0: 50, 1: 200, 2: 700, 3: 120}

    def f(d, seed):  # each seed jumps at its own d; the mean passes 0.9 only when all have
        return 1.0 if d >= crossings[seed] else 0.5

    state = np.random.get_state()
    r1 = search_intrinsic_dimension(f, 1.0, LOG_DIMS, seeds=[0, 1, 2, 3], rel_tol=0.0)
    r2 = search_intrinsic_dimension(f, 1.0, LOG_DIMS, seeds=[0, 1, 2, 3], rel_tol=0.0)
    assert r1.d == 700
    lo, hi = r1.interval
    assert lo < r1.d and hi == r1.d
    assert lo in r1.scores and lo >= 50  # an evaluated dim
    assert r1.interval == r2.interval  # seeded, reproducible
    np.testing.assert_equal(np.random.get_state(), state)  # global RNG untouched
    narrow = search_intrinsic_dimension(
        f, 1.0, LOG_DIMS, seeds=[0, 1, 2, 3], rel_tol=0.0, confidence=0.5
    )
    assert narrow.interval[0] >= lo


def test_nan_scores_fail():
    r = search_intrinsic_dimension(
        lambda d, s: float("nan") if d < 100 else 1.0, 1.0, [10, 100], rel_tol=0.0
    )
    assert r.d == 100 and sorted(r.scores)[0] == 10


@pytest.mark.parametrize("fraction", [0, -0.1, 1.5, float("nan"), "x"])
def test_bad_fraction(fraction):
    with pytest.raises(ValueError, match="fraction"):
        search_intrinsic_dimension(step_score, 1.0, [1, 10], fraction=fraction)


@pytest.mark.parametrize("dims", [[], [10, 10], [100, 10], [0, 10], [1.5, 3], [-1]])
def test_bad_dims(dims):
    with pytest.raises(ValueError, match="dims"):
        search_intrinsic_dimension(step_score, 1.0, dims)


@pytest.mark.parametrize("seeds", [[], [0, 0], [-1], [1.5]])
def test_bad_seeds(seeds):
    with pytest.raises(ValueError, match="seeds"):
        search_intrinsic_dimension(step_score, 1.0, [1, 10], seeds=seeds)


@pytest.mark.parametrize("ref", [0, -0.5, float("nan")])
def test_bad_reference_score(ref, tmp_path):
    with pytest.raises(ValueError, match="baseline"):
        search_intrinsic_dimension(step_score, ref, [1, 10])
    with pytest.raises(ValueError, match="reference_score"):
        measure(step_score, task="t", model="m", projection="fastfood", dims=[1, 10],
                output_dir=tmp_path, reference_score=ref, plot=False)


def test_baseline_run_scoring_zero_is_refused(tmp_path):
    with pytest.raises(ValueError, match="baseline"):
        measure(step_score, task="t", model="m", projection="fastfood", dims=[1, 10],
                output_dir=tmp_path, baseline_evaluate=lambda seed: 0.0, plot=False)


# -- persistence -------------------------------------------------------------------------------
def _measure(tmp_path, evaluate, baseline=None, **kw):
    args = dict(task="toy", model="step", projection="fastfood", dims=[1, 10, 100, 1000],
                seeds=[0, 1], output_dir=tmp_path, rel_tol=0.0, plot=False)
    args.update(kw)
    if baseline is None:
        args.setdefault("reference_score", 1.0)
    else:
        args["baseline_evaluate"] = baseline
    return measure(evaluate, **args)


def test_resume_skips_finished_runs_and_baseline(tmp_path):
    f, base = Counter(step_score), []

    def full(seed):
        base.append(seed)
        return 1.0

    m1 = _measure(tmp_path, f, baseline=full)
    assert m1.result.d == 437 and base == [0, 1]
    n_first = len(f.calls)
    rows = read_rows(m1.csv_path)
    assert len(rows) == n_first + 2
    assert [r.d for r in rows[:2]] == ["full", "full"]

    f2, base[:] = Counter(step_score), []
    m2 = _measure(tmp_path, f2, baseline=full)
    assert f2.calls == [] and base == []
    assert m2.result.d == 437 and m2.result.scores == m1.result.scores
    assert len(read_rows(m2.csv_path)) == n_first + 2

    # another projection in the same directory runs its own points, and keeps the baseline
    f3 = Counter(step_score)
    _measure(tmp_path, f3, baseline=full, projection="dense")
    assert len(f3.calls) == n_first and base == []
    data = json.loads(m2.json_path.read_text())
    assert set(data["projections"]) == {"fastfood", "dense"}


def test_crash_loses_only_the_run_in_progress(tmp_path):
    calls = []

    def crashy(d, seed):
        calls.append((d, seed))
        if len(calls) == 6:
            raise RuntimeError("out of memory")
        return step_score(d, seed)

    with pytest.raises(RuntimeError):
        _measure(tmp_path, crashy)
    assert len(read_rows(tmp_path / "results.csv")) == 5
    assert not (tmp_path / "results.json").exists()

    f = Counter(step_score)
    m = _measure(tmp_path, f)
    assert m.result.d == 437
    assert set(f.calls).isdisjoint(calls[:5]) and calls[5] in f.calls


def test_results_json_and_csv_contents(tmp_path):
    m = _measure(tmp_path, step_score, extra_fractions=[0.75])
    data = json.loads(m.json_path.read_text())
    assert (data["task"], data["model"], data["metric"]) == ("toy", "step", "accuracy")
    summary = data["projections"]["fastfood"]
    assert summary["d_frac"] == 437 and summary["interval"] == [437, 437]
    assert summary["baseline"] == 1.0 and summary["fraction"] == 0.9
    assert summary["extra_fractions"][0]["fraction"] == 0.75
    with open(m.csv_path, newline="") as f:
        raw = list(csv.DictReader(f))
    assert len(data["rows"]) == len(raw) == m.result.n_evaluations
    assert {r["seed"] for r in raw} == {"0", "1"}
    assert all(float(r["wall_time_s"]) >= 0 and r["timestamp"] for r in raw)
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_torn_last_line_is_dropped(tmp_path):
    _measure(tmp_path, step_score)
    path = tmp_path / "results.csv"
    n = len(read_rows(path))
    with open(path, "a") as f:
        f.write("toy,step,fastfood,5000,0,0.9")  # crash in mid-write: no newline, cut score
    with pytest.warns(UserWarning, match="incomplete last line"):
        store = ResultStore(tmp_path, "toy", "step", "accuracy")
    assert len(store.rows) == n
    store.append("fastfood", 5000, 0, 1.0, 0.1)
    assert read_rows(path)[-1].score == 1.0 and len(read_rows(path)) == n + 1


@pytest.mark.parametrize("field", ["task", "model"])
def test_results_of_another_task_or_model_are_refused(tmp_path, field):
    _measure(tmp_path, step_score)
    other = {"task": "toy", "model": "step", field: "other"}
    with pytest.raises(ValueError, match=r"results\.json.*'other'") as e:
        _measure(tmp_path, step_score, **other)
    assert f"{field}='toy' (this run: 'other')".replace("toy", "toy" if field == "task" else "step") in str(e.value)
    (tmp_path / "results.json").unlink()  # the CSV alone is also checked
    with pytest.raises(ValueError, match=r"results\.csv"):
        ResultStore(tmp_path, **other, metric="accuracy")


# -- parallel ----------------------------------------------------------------------------------
def test_run_points_uses_two_worker_processes():
    points = [(d, s) for d in (1, 2, 3) for s in (0, 1)]
    seen = []
    out = run_points(pid_score, points, devices=["cpu", "cpu"],
                     on_result=lambda d, s, score, wall: seen.append((d, s, wall)))
    pids = set(out.values())
    assert len(pids) == 2 and os.getpid() not in pids
    assert sorted(out) == sorted(points) and sorted(x[:2] for x in seen) == sorted(points)
    assert all(w >= 0 for *_, w in seen)


def test_run_points_passes_the_device():
    points = [(10, 0), (20, 1)]
    assert run_points(device_score, points, devices=["cpu"]) == {(10, 0): 1000.0, (20, 1): 2001.0}
    assert run_points(pid_score, points) == {p: float(os.getpid()) for p in points}


def test_measure_in_parallel_matches_sequential(tmp_path):
    seq = _measure(tmp_path / "seq", step_score)
    par = _measure(tmp_path / "par", step_score, devices=["cpu", "cpu"])
    assert par.result.d == seq.result.d == 437
    assert par.result.scores == seq.result.scores
    key = lambda r: (str(r.d), r.seed)  # noqa: E731
    assert sorted(map(key, read_rows(par.csv_path))) == sorted(map(key, read_rows(seq.csv_path)))


# -- plot and table ----------------------------------------------------------------------------
def test_plot_is_a_png(tmp_path):
    m = _measure(tmp_path, step_score, plot=True,
                 baseline=lambda seed: 1.0)
    assert m.plot_path is not None and m.plot_path.read_bytes()[:8] == PNG_MAGIC
    a = Series("A", [(d, s, step_score(d, s)) for d in (1, 10, 100, 1000) for s in (0, 1)],
               baseline=1.0, d_frac=437, interval=(300, None))
    b = Series("B", [(d, 0, 0.3 + 0.1 * math.log10(d)) for d in (1, 10, 100)], baseline=0.8)
    path = plot_series([a, b], tmp_path / "sub" / "two.png", fraction=0.9, metric="accuracy")
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 10_000
    with pytest.raises(ValueError, match="nothing to plot"):
        plot_series([], tmp_path / "x.png")


def test_table_lists_every_evaluated_d():
    r = search_intrinsic_dimension(step_score, 1.0, [1, 10, 100, 1000], seeds=[0, 1],
                                   rel_tol=0.0, extra_fractions=[0.6])
    text = format_table(r, metric="accuracy")
    body = [ln.split()[0] for ln in text.splitlines() if ln.split() and ln.split()[0][0].isdigit()]
    assert [int(x.rstrip("*")) for x in body] == sorted(r.scores)
    assert "d90 = 437" in text and "d60 = 100" in text and "437*" in text


# -- recipes -----------------------------------------------------------------------------------
def test_shipped_recipes_load():
    paths = sorted(glob.glob(str(REPO / "recipes" / "*.yaml")))
    assert len(paths) >= 6
    for p in paths:
        r = load_recipe(p)
        assert r["models"] and r["projections"] and r["dims"] == sorted(r["dims"])
        assert 0 < r["fraction"] <= 1


def test_recipe_errors(tmp_path):
    def write(text):
        p = tmp_path / "r.yaml"
        p.write_text(text)
        return p

    base = "task: t\nmodel: m\ndims: [1, 10]\n"
    r = load_recipe(write(base))
    assert r["models"] == ["m"] and r["projections"] == ["said"] and r["seeds"] == [0]
    with pytest.raises(ValueError, match=r"r\.yaml.*unknown key 'learning_rate'"):
        load_recipe(write(base + "learning_rate: 0.1\n"))
    with pytest.raises(ValueError, match="'fraction'"):
        load_recipe(write(base + "fraction: 1.2\n"))
    with pytest.raises(ValueError, match="'dims'"):
        load_recipe(write("task: t\nmodel: m\ndims: [10, 5]\n"))
    with pytest.raises(ValueError, match="'projection'"):
        load_recipe(write(base + "projection: gaussian\n"))
    with pytest.raises(ValueError, match="not both"):
        load_recipe(write(base + "models: [a, b]\n"))
    with pytest.raises(ValueError, match="missing required key 'dims'"):
        load_recipe(write("task: t\nmodel: m\n"))


# -- the built-in digits task ------------------------------------------------------------------
def test_digits_mlp_is_seeded_locally():
    torch = pytest.importorskip("torch")
    from idcompress.measure.digits import MLP

    state = torch.random.get_rng_state()
    a, b, c = MLP(widths=(32,), seed=1), MLP(widths=(32,), seed=1), MLP(widths=(32,), seed=2)
    assert torch.equal(torch.random.get_rng_state(), state)
    for (_, pa), (_, pb), (_, pc) in zip(
        a.named_parameters(), b.named_parameters(), c.named_parameters()
    ):
        assert torch.equal(pa, pb) and not torch.equal(pa, pc)
    assert a(torch.zeros(5, 64)).shape == (5, 10)


def test_digits_tiny_real_sweep(tmp_path):
    torch = pytest.importorskip("torch")
    from idcompress.measure.digits import evaluate_digits, evaluate_digits_full

    state = torch.random.get_rng_state()
    ev = functools.partial(evaluate_digits, projection="fastfood", epochs=100, lr=0.1)
    m = measure(ev, task="builtin/digits-mlp", model="mlp-64", projection="fastfood",
                dims=[10, 100, 1000], seeds=[0], output_dir=tmp_path, rel_tol=0.5,
                baseline_evaluate=functools.partial(evaluate_digits_full, epochs=100, lr=0.02),
                n_bootstrap=50, plot=False)
    r = m.result
    assert torch.equal(torch.random.get_rng_state(), state)
    assert r.baseline > 0.9  # full training of a 64-64-10 MLP on digits
    assert r.mean(1000) > r.mean(10) + 0.3  # more dimensions, better accuracy
    assert r.status == "found" and 10 < r.d <= 1000
    assert r.mean(r.d) >= 0.9 * r.baseline
    assert ev(100, 0) == r.scores[100][0]  # deterministic given (d, seed)
