"""``idcompress measure``: the intrinsic dimension d90 of a task and model (Li et al. 2018).

Options come from, lowest precedence first: built-in defaults (per task family, see
:mod:`idcompress.measure.tasks`), the recipe of ``--recipe`` (keys = flag names with
underscores), explicit flags. Every input is checked before the first run: a bad value is a
``ValueError`` naming the flag (or recipe key), which ``idcompress`` prints and exits with 2.

Besides ``results.csv``/``results.json``/``d_curve.png`` of :func:`idcompress.measure.measure`,
each output directory holds ``settings.json``: the training settings its scores were produced
with. A rerun with other settings (epochs, learning rates, batch size, data limits, image size)
is refused rather than mixing incomparable scores; dims, seeds, fraction and projections may
change freely (finished runs are reused, only missing ones run).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from ..flags import flag
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

DEFAULT_DIMS = (10, 30, 100, 300, 1000, 3000, 10000)
SETTINGS_NAME = "settings.json"
COMBINED_PLOT = "d_curve_models.png"
#: recipe keys / option names that change a run's score (checked against settings.json)
SCORE_SETTINGS = ("epochs", "lr", "batch_size", "baseline_epochs", "baseline_lr",
                  "max_train_samples", "max_eval_samples", "max_length", "image_size")


def add_parser(subparsers) -> argparse.ArgumentParser:
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


# -- parsing --------------------------------------------------------------------------------------
def _int(text: str, name: str) -> int:
    try:
        return int(str(text).strip())
    except ValueError:
        raise ValueError(f"{flag(name)} must be an integer, got {text!r}") from None


def _float(text: str, name: str) -> float:
    try:
        return float(str(text).strip())
    except ValueError:
        raise ValueError(f"{flag(name)} must be a number, got {text!r}") from None


def _items(text: str, name: str) -> list[str]:
    items = [x.strip() for x in str(text).split(",")]
    if not any(items):
        raise ValueError(f"{flag(name)} must not be empty")
    if not all(items):
        raise ValueError(f"{flag(name)}={text!r} has an empty entry")
    return items


def _positive(value: Any, name: str) -> Any:
    if value is not None and not value > 0:
        raise ValueError(f"{flag(name)} must be positive, got {value!r}")
    return value


def _flags(args: argparse.Namespace) -> dict[str, Any]:
    """The flags given on the command line, parsed into recipe-style keys and values."""
    raw = {k: v for k, v in vars(args).items() if k not in ("func", "command", "recipe")}
    out: dict[str, Any] = {}
    for name, text in raw.items():
        if name in ("task", "metric", "output_dir"):
            out[name] = str(text)
        elif name == "model":
            out["models"] = _items(text, name)
        elif name == "projection":
            out["projections"] = _items(text, name)
        elif name == "dims":
            out["dims"] = [_int(x, name) for x in _items(text, name)]
        elif name == "extra_fractions":
            out[name] = [_float(x, name) for x in _items(text, name)]
        elif name == "devices":
            out[name] = _items(text, name)
        elif name == "seeds":
            items = _items(text, name)
            if len(items) == 1 and "," not in str(text):
                k = _int(items[0], name)
                if k < 1:
                    raise ValueError(f"--seeds K must be at least 1, got {text!r}")
                out[name] = list(range(k))
            else:
                out[name] = [_int(x, name) for x in items]
        elif name in ("fraction", "reference_score", "rel_tol", "lr", "baseline_lr"):
            out[name] = _float(text, name)
        else:  # epochs, batch_size, baseline_epochs, max_*_samples, max_length, image_size, threads
            out[name] = _positive(_int(text, name), name)
    for name in ("lr", "baseline_lr"):
        _positive(out.get(name), name)
    return out


def resolve_options(args: argparse.Namespace) -> dict[str, Any]:
    """Defaults ← recipe ← flags, validated; ``ValueError`` naming the flag or recipe key."""
    from ..measure import validate_dims, validate_fraction, validate_reference
    from ..measure.recipe import load_recipe
    from ..measure.search import validate_seeds
    from ..names import PROJECTION_CHOICES

    opts: dict[str, Any] = {"fraction": 0.9, "seeds": [0], "extra_fractions": [],
                            "rel_tol": 0.05, "projections": ["said"]}
    recipe = getattr(args, "recipe", None)
    if recipe is not None:
        if not Path(recipe).is_file():
            raise FileNotFoundError(f"--recipe {recipe!r}: no such file")
        opts.update(load_recipe(recipe))
    opts.update(_flags(args))
    if not opts.get("task"):
        raise ValueError("give --task (and --model), or --recipe")
    if not opts.get("models"):
        raise ValueError(f"give --model for task {opts['task']!r}")
    if len(set(opts["models"])) != len(opts["models"]):
        raise ValueError(f"--model lists a model twice: {opts['models']}")
    opts["fraction"] = validate_fraction(opts["fraction"], "--fraction")
    opts["extra_fractions"] = [validate_fraction(g, "--extra-fractions")
                               for g in opts["extra_fractions"]]
    if "dims" in opts:
        try:
            opts["dims"] = validate_dims(opts["dims"])
        except ValueError as e:
            raise ValueError(f"--dims: {e}") from None
    try:
        opts["seeds"] = validate_seeds(opts["seeds"])
    except ValueError as e:
        raise ValueError(f"--seeds: {e}") from None
    if opts.get("reference_score") is not None:
        opts["reference_score"] = validate_reference(opts["reference_score"], "--reference-score")
    if not 0 <= opts["rel_tol"] < 1:
        raise ValueError(f"--rel-tol must lie in [0, 1), got {opts['rel_tol']!r}")
    for proj in opts["projections"]:
        if proj not in PROJECTION_CHOICES:
            raise ValueError(f"--projection {proj!r} is unknown; choose from {list(PROJECTION_CHOICES)}")
    if len(set(opts["projections"])) != len(opts["projections"]):
        raise ValueError(f"--projection lists a projection twice: {opts['projections']}")
    if opts.get("devices"):
        opts["devices"] = _check_devices(opts["devices"])
    return opts


def _check_devices(devices: list[str]) -> list[str]:
    import torch

    for dev in devices:
        try:
            parsed = torch.device(dev)
        except (RuntimeError, ValueError):
            raise ValueError(f"--devices: {dev!r} is not a device (e.g. cpu, cuda:0)") from None
        if parsed.type == "cuda":
            n = torch.cuda.device_count()
            if parsed.index is None or parsed.index >= n:
                raise ValueError(f"--devices: {dev!r} is not available (this machine has {n} CUDA "
                                 "device(s); name them as cuda:0, cuda:1, ...)")
        elif parsed.type != "cpu":
            raise ValueError(f"--devices: {dev!r}: only cpu and cuda:N are supported")
    return devices


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


# -- output directories ---------------------------------------------------------------------------
def _slug(text: str) -> str:
    return text.strip().replace("/", "--").replace(os.sep, "--")


def _check_settings(out_dir: Path, target, settings: dict[str, Any]) -> None:
    """Refuse an output directory whose scores were produced with other training settings."""
    path = out_dir / SETTINGS_NAME
    want = {k: settings.get(k) for k in SCORE_SETTINGS}
    if not path.exists():
        return
    try:
        saved = json.loads(path.read_text(encoding="utf-8")).get("settings", {})
    except (json.JSONDecodeError, AttributeError) as e:
        raise ValueError(f"{path}: not a settings file of idcompress measure ({e})") from None
    diff = [f"{flag(k)} {saved.get(k)!r} there, {want[k]!r} now" for k in SCORE_SETTINGS
            if saved.get(k) != want[k]]
    if diff:
        raise ValueError(f"{out_dir} holds results trained with other settings ({'; '.join(diff)}). "
                         "Use another --output-dir, or the same settings to resume.")


def _write_settings(out_dir: Path, target, settings: dict[str, Any]) -> None:
    from ..measure.store import atomic_write_json

    atomic_write_json(out_dir / SETTINGS_NAME, {
        "task": target.task, "model": target.model, "metric": target.metric,
        "settings": {k: settings.get(k) for k in SCORE_SETTINGS},
    })


# -- the command ----------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> int:
    from ..measure import ResultStore, measure, read_rows
    from ..measure.tasks import TrainSettings, check_dims, make_evaluators, resolve, settings_for

    t0 = time.perf_counter()
    opts = resolve_options(args)
    targets = [resolve(opts["task"], m, opts.get("metric"), image_size=opts.get("image_size"))
               for m in opts["models"]]
    for target in targets:
        if opts.get("max_length") is not None and target.family == "image-transformers":
            raise ValueError(f"--max-length={opts['max_length']} is for text tasks (tokens); image "
                             f"task {target.task!r} takes --image-size instead")
    n_workers = len(opts.get("devices") or []) if len(opts.get("devices") or []) >= 2 else 1
    dims_of = {}
    for target in targets:
        if "dims" in opts:
            dims = opts["dims"]
        else:  # the default grid, cut to what the model can take
            dims = [d for d in DEFAULT_DIMS if target.D is None or d <= target.D]
            if "said" in opts["projections"] and target.m is not None:
                dims = [d for d in dims if d > target.m]
        for proj in opts["projections"]:
            check_dims(target, dims, proj)
        dims_of[target.model] = dims

    base_dir = Path(opts.get("output_dir") or Path("runs", "measure", _slug(
        f"{targets[0].task}-{targets[0].model}" if len(targets) == 1 else targets[0].task)))
    plans = []
    for target in targets:
        out_dir = base_dir if len(targets) == 1 else base_dir / _slug(target.model)
        threads = opts.get("threads")
        if threads is None and target.family != "digits":
            threads = max(1, (os.cpu_count() or 1) // n_workers)
        train = TrainSettings(**{k: opts.get(k) for k in (
            "epochs", "lr", "batch_size", "baseline_epochs", "baseline_lr", "max_train_samples",
            "max_eval_samples", "max_length", "image_size")}, num_threads=threads)
        settings = settings_for(target, train)
        _check_settings(out_dir, target, settings)
        # opening the store refuses a directory holding another task's, model's or metric's results
        store = ResultStore(out_dir, task=target.task, model=target.model, metric=target.metric)
        plans.append((target, out_dir, train, settings, len(store.rows)))

    if any(t.family in ("text", "image-transformers") for t in targets):
        quiet_library_progress_bars()
    if opts.get("description"):
        print(opts["description"])
    lines, summaries = [], []
    for target, out_dir, train, settings, n_before in plans:
        _write_settings(out_dir, target, settings)
        shown = {k: v for k, v in settings.items() if k != "num_threads"}
        print(f"{target.task} · {target.model}: D = {target.D if target.D else '?'}; "
              f"{', '.join(f'{k}={v}' for k, v in shown.items())}; seeds {opts['seeds']}; "
              f"output {out_dir}", flush=True)
        for proj in opts["projections"]:
            ev, base = make_evaluators(target, proj, train)
            label = f"{target.model}/{proj}"
            m = measure(
                _Logged(ev, label, target.metric),
                task=target.task, model=target.model, projection=proj,
                dims=dims_of[target.model], output_dir=out_dir, seeds=opts["seeds"],
                fraction=opts["fraction"], metric=target.metric,
                reference_score=opts.get("reference_score"),
                baseline_evaluate=_Logged(base, target.model, target.metric, baseline=True),
                extra_fractions=opts["extra_fractions"], rel_tol=opts["rel_tol"],
                devices=opts.get("devices"),
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
        path = _combined_plot(summaries, base_dir / COMBINED_PLOT, opts["fraction"])
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
