"""Time one training step (and its peak memory) of full fine-tuning, LoRA, VeRA and idcompress.

Every (model, method) runs in its own child process (``--child``), so the peak RSS
(``getrusage(RUSAGE_SELF).ru_maxrss``, which includes the model load and the ~0.4 GB of imports)
belongs to one method. Children use ``torch.set_num_threads(--threads)`` (and the same
OMP/MKL/numba thread counts), the same fixed batch (``--batch`` × ``--seq`` random token ids) and
fused AdamW; the step time is the median of ``--steps`` timed steps after ``--warmup`` untimed ones.
Ratios are to full fine-tuning of the same model measured in the same invocation.

Tables: ``main`` (every method on MiniLM-L6), ``D`` (full FT vs said d=1000 over models of growing
D) and ``d`` (said and fastfood over d on MiniLM-L6). Runs shared by tables are measured once.

    python benchmarks/bench_step.py --quick                # smoke run, ~1.5 min on 2 cores
    python benchmarks/bench_step.py --json step.json       # the full benchmark (~20 min, 2 cores)
    python benchmarks/bench_step.py --methods full said:1e3 --tables main
    python benchmarks/bench_step.py --profile said:1e3     # where the time of one step goes
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

RESULT_TAG = "@@BENCH_STEP "
MAIN_METHODS = ["full", "lora", "vera",
                "fastfood:1000", "fastfood:10000", "fastfood:100000",
                "said:1000", "said:10000", "said:100000",
                "dense:1000", "dense:10000", "dense:100000",
                "sparse:1000", "sparse:10000", "sparse:100000"]
QUICK_METHODS = ["full", "lora", "fastfood:1000", "said:1000", "dense:1000"]
D_MODELS = ["bert-h256-l4", "bert-h512-l8", "minilm-l6", "bert-h768-l12", "roberta-base"]
QUICK_D_MODELS = ["bert-h256-l4", "minilm-l6"]
D_SCAN = [100, 1000, 10_000, 100_000]
QUICK_D_SCAN = [1000]
CHILD_TIMEOUT_S = 3600


# -- child --------------------------------------------------------------------------------------
def _rss_mb() -> float:
    """Peak resident set of this process so far, MB (Linux reports KiB, macOS bytes)."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 2**20 if sys.platform == "darwin" else r / 1024


def run_child(spec: dict[str, Any]) -> dict[str, Any]:
    """Build, wrap and time one (model, method); never raises (errors go in the result)."""
    import torch

    torch.set_num_threads(spec["threads"])
    out: dict[str, Any] = {"spec": spec, "status": "ok"}
    t0 = time.perf_counter()
    try:
        model = C.build_model(spec["model"])
        out["load_s"] = time.perf_counter() - t0
        name, d = C.parse_method(spec["method"])
        t1 = time.perf_counter()
        try:
            model, info = C.wrap(model, name, d)
        except C.Refused as e:
            out.update(status="refused", message=str(e), peak_rss_mb=_rss_mb())
            return out
        out.update(info)
        out["wrap_s"] = time.perf_counter() - t1
        out["rss_setup_mb"] = _rss_mb()
        device = torch.device("cpu")
        batch = C.make_batch(C.vocab_size(model), spec["batch"], spec["seq"], seed=spec["seed"])
        opt = C.make_optimizer(model, spec["adamw"])
        model.train()
        out.update(C.time_steps(model, opt, batch, device, spec["warmup"], spec["steps"]))
        if spec.get("profile"):
            out["profile"] = profile_step(model, opt, batch, device)
    except Exception as e:  # a benchmark row, not a crash of the whole table
        out.update(status="error", message=f"{type(e).__name__}: {e}")
    out["peak_rss_mb"] = _rss_mb()
    return out


def profile_step(model, opt, batch, device) -> dict[str, Any]:
    """Per-phase times of an idcompress step (apply, adjoint, compose) and torch.profiler's top ops.

    Prints the report; returns the numbers. For other methods only the profiler table.
    """
    import statistics

    import torch

    def med_ms(fn, reps=5):
        fn()
        ts = []
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
        return 1e3 * statistics.median(ts)

    res: dict[str, Any] = {}
    proj = getattr(model, "projection", None)
    if proj is not None:
        x = model.theta_d.detach() + 1e-3
        y = torch.full((model.layout.D,), 1e-3)

        composer = model.base_model.composer

        def nudge():  # a new θ_d each time, or the cached u would be reused
            with torch.no_grad():
                model.theta_d.add_(1e-6)

        def compose_fwd_bwd():  # every tensor composed as its module would, then its adjoint
            nudge()
            parts = composer.compose_all()
            torch.autograd.backward(parts, [torch.ones_like(p) for p in parts])
            model.zero_grad(set_to_none=True)

        def compose_nograd():
            nudge()
            with torch.no_grad():
                composer.compose_all()

        res["projection_apply_ms"] = med_ms(lambda: proj.apply(x))
        res["projection_adjoint_ms"] = med_ms(lambda: proj.adjoint(y))
        res["compose_nograd_ms"] = med_ms(compose_nograd)
        res["compose_fwd_bwd_ms"] = med_ms(compose_fwd_bwd)
        res["add_over_D_ms"] = med_ms(lambda: torch.add(y, y, out=torch.empty_like(y)))
        print("idcompress phases (median of 5, ms):")
        for k, v in res.items():
            print(f"  {k:<24} {v:8.1f}")
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(2):
            C.train_step(model, opt, batch, device)
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25)
    print("torch.profiler, 2 steps, sorted by self CPU time:")
    print(table)
    res["top_ops"] = [
        {"name": e.key, "self_cpu_ms": e.self_cpu_time_total / 1e3 / 2, "cpu_ms": e.cpu_time_total / 1e3 / 2,
         "calls": e.count // 2}
        for e in sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:25]
    ]
    return res


# -- parent -------------------------------------------------------------------------------------
def child_env(threads: int) -> dict[str, str]:
    env = C.set_offline_env(dict(os.environ))
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        env[k] = str(threads)
    return env


def spawn(spec: dict[str, Any], threads: int, echo: bool = False) -> dict[str, Any]:
    """Run one child; its result line parsed, or an error row with the tail of its stderr."""
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)],
                              env=child_env(threads), capture_output=True, text=True,
                              timeout=CHILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"spec": spec, "status": "error", "message": f"timed out after {CHILD_TIMEOUT_S} s"}
    res = None
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_TAG):
            res = json.loads(line[len(RESULT_TAG):])
        elif echo:
            print(line)
    if res is None:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        res = {"spec": spec, "status": "error",
               "message": f"child exited {proc.returncode}: " + " / ".join(tail)}
    res["wall_s"] = time.perf_counter() - t0
    return res


def _key(model: str, method: str) -> tuple[str, str]:
    name, d = C.parse_method(method)
    return model, C.method_label(name, d)


def plan(args) -> dict[str, list[tuple[str, str]]]:
    """The (model, method) pairs of each requested table, in order."""
    tables: dict[str, list[tuple[str, str]]] = {}
    if "main" in args.tables:
        tables["main"] = [_key("minilm-l6", m) for m in args.methods]
        if ("minilm-l6", "full") not in tables["main"]:
            tables["main"].insert(0, ("minilm-l6", "full"))
    if "D" in args.tables:
        tables["D"] = [(mdl, m) for mdl in args.d_models for m in ("full", "said:1000")]
    if "d" in args.tables:
        tables["d"] = [("minilm-l6", "full")] + [
            ("minilm-l6", f"{kind}:{d}") for d in args.d_scan for kind in ("said", "fastfood")
        ]
    return tables


def render(tables: dict[str, list[tuple[str, str]]], runs: dict[tuple[str, str], dict]) -> str:
    out = []
    full = {mdl: r.get("step_ms") for (mdl, m), r in runs.items() if m == "full"}

    def ratio(mdl, r):
        f = full.get(mdl)
        return r["step_ms"] / f if r.get("step_ms") and f else None

    cpu_full = {mdl: r.get("cpu_ms") for (mdl, m), r in runs.items() if m == "full"}

    def cpu_ratio(mdl, r):
        f = cpu_full.get(mdl)
        return r["cpu_ms"] / f if r.get("cpu_ms") and f else None

    def note(r):
        if r["status"] == "refused":  # the whole message is in the JSON
            msg = r["message"].split(";")[0].split(", above")[0]
            return "refused: " + (msg[:90] + "…" if len(msg) > 90 else msg)
        if r["status"] == "error":
            return "error: " + r["message"][:160]
        return r.get("backend") or ""

    if "main" in tables:
        rows = []
        for mdl, m in tables["main"]:
            r = runs[(mdl, m)]
            sb, D = r.get("state_bytes"), r.get("D")
            rows.append([m, r.get("trainable"), r.get("step_ms"), ratio(mdl, r), r.get("cpu_ms"),
                         cpu_ratio(mdl, r), r.get("fwd_ms"),
                         r.get("bwd_ms"), r.get("opt_ms"), r.get("peak_rss_mb"),
                         r.get("rss_setup_mb"), C.fmt_bytes(sb),
                         f"{sb / D:.2g}" if sb is not None and D else None, note(r)])
        out.append("### One training step on MiniLM-L6 (packaged, new 2-class head)\n\n" + C.md_table(
            ["method", "trainable", "step ms", "× full", "CPU ms", "CPU × full", "fwd ms", "bwd ms", "opt ms",
             "peak RSS MB", "RSS setup MB", "proj. state", "B/param", "note"], rows))
    if "D" in tables:
        rows = []
        models = list(dict.fromkeys(mdl for mdl, _ in tables["D"]))
        for mdl in sorted(models, key=lambda x: runs[(x, "full")].get("D") or 0):
            f, s = runs[(mdl, "full")], runs[(mdl, "said:1000")]
            rows.append([mdl, f.get("D"), f.get("step_ms"), s.get("step_ms"), ratio(mdl, s),
                         f.get("opt_ms"), f.get("peak_rss_mb"), s.get("peak_rss_mb"),
                         note(s) if s["status"] != "ok" else note(f) if f["status"] != "ok" else ""])
        out.append("### Scaling over D: full FT vs said d=1000\n\n" + C.md_table(
            ["model", "D", "full ms", "said ms", "said × full", "full opt ms", "full RSS MB",
             "said RSS MB", "note"], rows))
    if "d" in tables:
        rows = []
        ds = list(dict.fromkeys(C.parse_method(m)[1] for _, m in tables["d"] if m != "full"))
        for d in ds:
            s, f = runs[("minilm-l6", f"said:{d}")], runs[("minilm-l6", f"fastfood:{d}")]
            rows.append([d, s.get("step_ms"), ratio("minilm-l6", s), s.get("peak_rss_mb"),
                         f.get("step_ms"), ratio("minilm-l6", f), f.get("peak_rss_mb"),
                         C.fmt_bytes(s.get("state_bytes")),
                         "; ".join(x for x in (note(s), note(f)) if x and x not in ("numba", "torch"))])
        out.append("### Scaling over d on MiniLM-L6\n\n" + C.md_table(
            ["d", "said ms", "said × full", "said RSS MB", "fastfood ms", "fastfood × full",
             "fastfood RSS MB", "proj. state", "note"], rows))
    return "\n\n".join(out)


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for mod in ("torch", "transformers", "peft", "numba"):
        try:
            out[mod] = __import__(mod).__version__
        except ImportError:
            out[mod] = "absent"
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 1 warm-up + 3 timed steps, fewer methods and models")
    ap.add_argument("--methods", nargs="+", help=f"main-table methods (default: {' '.join(MAIN_METHODS)})")
    ap.add_argument("--tables", nargs="+", choices=["main", "D", "d"], default=["main", "D", "d"])
    ap.add_argument("--d-models", nargs="+", choices=["minilm-l6", *C.CONFIGS],
                    help=f"models of the D table (default: {' '.join(D_MODELS)})")
    ap.add_argument("--d-scan", nargs="+", type=lambda s: int(float(s)),
                    help=f"d values of the d table (default: {D_SCAN})")
    ap.add_argument("--steps", type=int, help="timed steps per method (default 8, quick 3)")
    ap.add_argument("--warmup", type=int, help="untimed steps first (default 3, quick 1)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--adamw", choices=C.ADAMW_IMPLS, default="fused",
                    help="AdamW implementation for every method (default fused, as HF Trainer)")
    ap.add_argument("--json", metavar="PATH", help="write every run and the tables here")
    ap.add_argument("--profile", metavar="METHOD",
                    help="profile one step of METHOD on MiniLM-L6 (e.g. said:1e3) and exit")
    ap.add_argument("--child", metavar="SPEC", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.child:
        C.set_offline_env()
        print(RESULT_TAG + json.dumps(run_child(json.loads(args.child))), flush=True)
        return 0

    args.methods = args.methods or (QUICK_METHODS if args.quick else MAIN_METHODS)
    args.d_models = args.d_models or (QUICK_D_MODELS if args.quick else D_MODELS)
    args.d_scan = args.d_scan or (QUICK_D_SCAN if args.quick else D_SCAN)
    steps = args.steps or (3 if args.quick else 8)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 3)
    for m in [*args.methods, *([args.profile] if args.profile else [])]:
        try:
            C.parse_method(m)  # fail before any child starts
        except ValueError as e:
            ap.error(str(e))
    for name, v in (("steps", steps), ("threads", args.threads), ("batch", args.batch), ("seq", args.seq)):
        if v < 1:
            ap.error(f"--{name} must be at least 1, got {v}")
    base = {"batch": args.batch, "seq": args.seq, "warmup": warmup, "steps": steps,
            "threads": args.threads, "seed": 0, "adamw": args.adamw}

    if args.profile:
        _, m = _key("minilm-l6", args.profile)
        r = spawn({**base, "model": "minilm-l6", "method": m, "profile": True}, args.threads, echo=True)
        print(f"{m}: {r['status']} step {r.get('step_ms', float('nan')):.0f} ms "
              f"(fwd {r.get('fwd_ms', float('nan')):.0f}, bwd {r.get('bwd_ms', float('nan')):.0f}, "
              f"opt {r.get('opt_ms', float('nan')):.0f}) {r.get('message', '')}")
        if args.json:
            Path(args.json).write_text(json.dumps(r, indent=1))
        return 0 if r["status"] == "ok" else 1

    tables = plan(args)
    todo = list(dict.fromkeys(k for rows in tables.values() for k in rows))
    meta = {**versions(), **base, "cpus": os.cpu_count(), "loadavg_start": os.getloadavg()}
    print(f"# bench_step: {len(todo)} runs, batch {args.batch}×{args.seq}, threads {args.threads}, "
          f"warm-up {warmup}, timed {steps}, AdamW {args.adamw}; " + ", ".join(f"{k} {meta[k]}" for k in
                                                        ("torch", "transformers", "peft", "numba")),
          flush=True)
    runs: dict[tuple[str, str], dict] = {}
    t0 = time.perf_counter()
    for mdl, m in todo:
        r = spawn({**base, "model": mdl, "method": m}, args.threads)
        runs[(mdl, m)] = r
        status = f"{r['step_ms']:.0f} ms" if r.get("step_ms") else r["status"]
        print(f"  {mdl:<14} {m:<16} {status:>10}   ({r['wall_s']:.0f} s)", file=sys.stderr, flush=True)
    meta["loadavg_end"] = os.getloadavg()
    meta["wall_s"] = time.perf_counter() - t0
    text = render(tables, runs)
    print()
    print(text)
    print(f"\nload average (1 min) {meta['loadavg_start'][0]:.1f} at start, "
          f"{meta['loadavg_end'][0]:.1f} at end; {meta['wall_s']:.0f} s in all")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "meta": meta,
            "tables": {k: [list(x) for x in v] for k, v in tables.items()},
            "runs": [r for r in runs.values()],
            "markdown": text,
        }, indent=1))
    return 0 if all(r["status"] != "error" for r in runs.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
