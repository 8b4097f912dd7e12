"""``idcompress measure``: the intrinsic dimension d90 of a task and model (Li et al. 2018).

Options come from, lowest precedence first: built-in defaults (per task family, see
:mod:`idcompress.measure.defaults`), the recipe of ``--recipe`` (keys = flag names with
underscores), explicit flags (:class:`idcompress.measure.options.MeasureOptions`). Every input
is checked before the first run: a bad value is a ``ValueError`` naming the flag (or recipe
key), which ``idcompress`` prints and exits with 2.

Besides ``results.csv``/``results.json``/``d_curve.png`` of :func:`idcompress.measure.measure`,
each output directory holds ``settings.json`` (:mod:`idcompress.measure.store`): the training
settings its scores were produced with. A rerun with other settings (epochs, learning rates, batch size, data limits, image size)
is refused rather than mixing incomparable scores; dims, seeds, fraction and projections may
change freely (finished runs are reused, only missing ones run).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .common import command_parser, quiet_library_progress_bars

DESCRIPTION = """\
Measure the intrinsic dimension d90 of a task and model: the smallest d such that training only a
d-dimensional vector theta_d (theta = theta0 + P theta_d) reaches 90% of the full-training score
(Li et al. 2018). Runs the full-training baseline (unless --reference-score), a sweep over --dims
for every seed, then bisection between the last failing and first passing d; d90 comes with a
bootstrap interval over seeds.

Tasks and models:
  builtin/digits                                  mlp, mlp-<w1>-... (8x8 digits, from scratch)
  image/mnist-5k, image/digits, image/fashion-mnist
                                                  fc-<w1>-<w2>... (e.g. fc-200-200), lenet
                                                  (from scratch; theta0 seeded by the seed),
                                                  efficientnet-lite0 (packaged ImageNet weights,
                                                  new head from the seed; 64 px inputs) or
                                                  efficientnet-lite0-scratch (same net, seeded)
  builtin/movie-sentiment, glue/<task>            minilm-l6, a local folder or a hub id
                                                  (pretrained; the training loop of finetune)
  image/mnist-5k, image/digits, image/fashion-mnist
                                                  a local folder or hub id of a transformers
                                                  image classifier (e.g. a ViT; the training
                                                  loop of finetune; its processor's or config's
                                                  input size unless --image-size)

Writes OUTPUT_DIR/results.csv (one row per finished run; rerunning skips finished runs),
results.json (d90, interval, baseline per projection), d_curve.png and settings.json. With
several models each writes into OUTPUT_DIR/<model> and OUTPUT_DIR/d_curve_models.png compares
them.
"""

COMBINED_PLOT = "d_curve_models.png"


def add_parser(subparsers) -> argparse.ArgumentParser:
    from ..measure.defaults import DEFAULT_DIMS

    p = command_parser(subparsers, "measure", description=DESCRIPTION,
                       help="measure d90, the intrinsic dimension of a task and model (sweep + "
                       "bisection)", argument_default=argparse.SUPPRESS)
    # values are parsed in run(), so a bad one is a clear error (exit 2) rather than argparse's
    p.add_argument("--recipe", metavar="YAML",
                   help="recipe file (recipes/*.yaml); its keys are these flags with underscores; "
                   "flags override it")
    g = p.add_argument_group("what to measure")
    g.add_argument("--task", help="task name (see above)")
    g.add_argument("--model", help="model name, or a comma list of models")
    g.add_argument("--projection", metavar="KIND",
                   help="said, fastfood, dense or sparse, or a comma list (default said)")
    g.add_argument("--dims", metavar="D1,D2,...",
                   help="strictly increasing grid of d, log-spaced (default "
                   f"{','.join(map(str, DEFAULT_DIMS))}, cut at the model's D)")
    g.add_argument("--fraction", metavar="F", help="d_F: reach F x baseline, in (0, 1] (default 0.9)")
    g.add_argument("--extra-fractions", metavar="F1,F2",
                   help="also report these fractions from the same runs (no new runs)")
    g.add_argument("--seeds", metavar="K|S1,S2",
                   help="K: seeds 0..K-1; or a comma list of seeds (default 1 seed: 0). "
                   "The seed keys theta0, P and the batch order")
    g.add_argument("--reference-score", metavar="X",
                   help="baseline score (> 0) to use instead of running full training")
    g.add_argument("--metric", help="metric of a text task (default: the task's main metric)")
    g.add_argument("--rel-tol", metavar="R",
                   help="bisection stops when hi - lo <= R x hi, R in [0, 1) (default 0.05)")
    g = p.add_argument_group("training", _training_defaults())
    g.add_argument("--epochs", metavar="N", help="epochs of each intrinsic run")
    g.add_argument("--lr", metavar="LR", help="Adam(W) learning rate of the intrinsic runs")
    g.add_argument("--batch-size", metavar="N", help="minibatch size")
    g.add_argument("--baseline-epochs", metavar="N", help="epochs of full training (default --epochs)")
    g.add_argument("--baseline-lr", metavar="LR", help="learning rate of full training")
    g.add_argument("--max-train-samples", metavar="N", help="train on a seeded subset of N examples")
    g.add_argument("--max-eval-samples", metavar="N", help="score on a seeded subset of N examples")
    g.add_argument("--max-length", metavar="TOKENS", help="tokens per input (text tasks)")
    g.add_argument("--image-size", metavar="PX",
                   help="resize images to PX x PX (image tasks; default: EfficientNet 64, small "
                   "nets the task's size, transformers models their config's; refused for a "
                   "model whose image processor fixes the size)")
    g = p.add_argument_group("execution and output")
    g.add_argument("--devices", metavar="DEV1,DEV2",
                   help="one worker process per entry, e.g. cuda:0,cuda:1 or cpu,cpu "
                   "(default: this process, on the CPU; text tasks and transformers image models: the "
                   "device Accelerate picks)")
    g.add_argument("--threads", metavar="N",
                   help="torch threads per run (default: 1 for builtin/digits, else the CPU "
                   "count divided by the number of workers)")
    g.add_argument("--output-dir", metavar="DIR",
                   help="results folder (default runs/measure/<task>-<model>)")
    p.set_defaults(func=run)
    return p


def _training_defaults() -> str:
    from ..measure.defaults import DEFAULTS, LR_RULES, MODEL_DEFAULTS

    def show(k, v, rule_key):
        if v is None:
            v = "full batch" if k == "batch_size" else LR_RULES.get(rule_key, "default")
        return f"{k.replace('_', '-')} {v}"

    names = {"digits": "builtin/digits", "image": "image tasks", "text": "text tasks",
             "image-transformers": "image tasks with a transformers model"}
    parts = [f"{names[fam]}: " + ", ".join(show(k, v, fam) for k, v in d.items())
             for fam, d in DEFAULTS.items()]
    parts += [f"{model}: " + ", ".join(show(k, v, model) for k, v in d.items())
              for model, d in MODEL_DEFAULTS.items()]
    return "defaults: " + "; ".join(parts)


# -- progress -------------------------------------------------------------------------------------
class _Logged:
    """Picklable wrapper printing one line to stderr per finished run (also in worker processes)."""

    def __init__(self, fn, label: str, metric: str, baseline: bool = False) -> None:
        self.fn, self.label, self.metric, self.baseline = fn, label, metric, baseline

    def __call__(self, *args, device: str | None = None) -> float:
        from ..measure.parallel import accepts_device

        t0 = time.perf_counter()
        kw = {"device": device} if device is not None and accepts_device(self.fn) else {}
        score = self.fn(*args, **kw)
        what = f"full, seed {args[0]}" if self.baseline else f"d={args[0]}, seed {args[1]}"
        print(f"  {self.label} {what}: {self.metric} {score:.4f} ({time.perf_counter() - t0:.1f} s)",
              file=sys.stderr, flush=True)
        return score


# -- the command ----------------------------------------------------------------------------------
def _options(args: argparse.Namespace):
    """The :class:`~idcompress.measure.options.MeasureOptions` of the parsed arguments."""
    from ..measure.options import resolve_options

    flags = {k: v for k, v in vars(args).items() if k not in ("func", "command", "recipe")}
    return resolve_options(flags, getattr(args, "recipe", None))


def run(args: argparse.Namespace) -> int:
    from ..measure import ResultStore, measure, read_rows
    from ..measure.store import check_settings, write_settings
    from ..measure.tasks import check_dims, make_evaluators, resolve, settings_for

    t0 = time.perf_counter()
    opts = _options(args)
    targets = [resolve(opts.task, m, opts.metric, image_size=opts.image_size) for m in opts.models]
    for target in targets:
        opts.check_target(target)
    dims_of = {t.model: opts.dims_for(t) for t in targets}
    for target in targets:
        for proj in opts.projections:
            check_dims(target, dims_of[target.model], proj)

    base_dir, out_dirs = opts.output_dirs(targets)
    plans = []
    for target, out_dir in zip(targets, out_dirs):
        train = opts.train_settings(target)
        settings = settings_for(target, train)
        check_settings(out_dir, settings)
        # opening the store refuses a directory holding another task's, model's or metric's results
        store = ResultStore(out_dir, task=target.task, model=target.model, metric=target.metric)
        plans.append((target, out_dir, train, settings, len(store.rows)))

    if any(t.family in ("text", "image-transformers") for t in targets):
        quiet_library_progress_bars()
    if opts.description:
        print(opts.description)
    lines, summaries = [], []
    for target, out_dir, train, settings, n_before in plans:
        write_settings(out_dir, target.task, target.model, target.metric, settings)
        shown = {k: v for k, v in settings.items() if k != "num_threads"}
        print(f"{target.task} · {target.model}: D = {target.D if target.D else '?'}; "
              f"{', '.join(f'{k}={v}' for k, v in shown.items())}; seeds {opts.seeds}; "
              f"output {out_dir}", flush=True)
        for proj in opts.projections:
            ev, base = make_evaluators(target, proj, train)
            label = f"{target.model}/{proj}"
            m = measure(
                _Logged(ev, label, target.metric),
                task=target.task, model=target.model, projection=proj,
                dims=dims_of[target.model], output_dir=out_dir, seeds=opts.seeds,
                fraction=opts.fraction, metric=target.metric,
                reference_score=opts.reference_score,
                baseline_evaluate=_Logged(base, target.model, target.metric, baseline=True),
                extra_fractions=opts.extra_fractions, rel_tol=opts.rel_tol,
                devices=opts.devices,
            )
            print()
            print(m.table)
            print()
            r = m.result
            lo, hi = r.interval
            pct = f"d{100 * r.fraction:g}"
            value = "not reached" if r.d is None else (f"≤ {r.d}" if r.status == "upper_bound" else str(r.d))
            lines.append(
                f"{target.task} · {target.model} · {proj}: {pct} = {value} "
                f"({100 * r.confidence:g}% interval [{'?' if lo is None else lo}, "
                f"{'not reached' if hi is None else hi}]); baseline {target.metric} "
                f"{r.baseline:.4f} ({m.baseline_source})"
            )
            summaries.append((target, proj, out_dir, m))
        n_new = len(read_rows(out_dir / "results.csv")) - n_before
        lines.append(f"  {n_new} new run(s); files: {m.csv_path}, {m.json_path}, {m.plot_path}")

    if len(targets) > 1:
        path = _combined_plot(summaries, base_dir / COMBINED_PLOT, opts.fraction)
        lines.append(f"comparison plot: {path}")
    print("\n".join(lines))
    print(f"wall time {time.perf_counter() - t0:.1f} s")
    return 0


def _combined_plot(summaries, path: Path, fraction: float) -> Path:
    """One curve per (model, projection), each with its own baseline and d_frac."""
    from ..measure import Series, plot_series, read_rows

    series = []
    for target, proj, _out_dir, m in summaries:
        rows = [r for r in read_rows(m.csv_path) if r.projection == proj and r.d != "full"]
        series.append(Series(
            label=f"{target.model} / {proj}" + (f" (D={target.D:,})" if target.D else ""),
            points=sorted((int(r.d), r.seed, r.score) for r in rows),
            baseline=m.result.baseline, d_frac=m.result.d, interval=m.result.interval,
        ))
    metric = summaries[0][0].metric
    return plot_series(series, path, fraction=fraction, metric=metric,
                       title=f"{summaries[0][0].task}: {metric} vs d")
