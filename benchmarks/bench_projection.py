"""Time the Fastfood projection against a float32 add over D, in one process.

For each D the baseline is the float32 add ``a + b`` of two D-sized tensors (it allocates its
result, as a training step does); ``torch.add(a, b, out=c)`` into a preallocated tensor, a pure
memory-bandwidth figure about 2× faster, is shown too. Each time is the median of ``--reps`` runs
after one warm-up (``--stat min`` for the minimum), with ``torch.set_num_threads(--threads)``. Columns: apply ms, adjoint ms, the
fused ``apply_add`` ms, ``(apply + adjoint) / (a + b)``, the same over the ``out=`` add, and the
projection's state in bytes per tuned parameter. ``--fresh`` also times, in child processes, the first apply+adjoint
with an empty numba cache (JIT compile) and again with the cache filled.

    python benchmarks/bench_projection.py --json bench.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO_ROOT))

from idcompress.projection import fastfood as fastfood_mod  # noqa: E402
from idcompress.projection.fastfood import FastfoodProjection  # noqa: E402
from idcompress.projection.fwht import fwht_legacy  # noqa: E402

MINILM_D = 22_700_000  # ≈ parameters of the packaged MiniLM-L6


_STAT = {"median": statistics.median, "min": min}
_stat = statistics.median


def _time_ms(fn, reps: int) -> float:
    """Milliseconds per call: the median (or ``--stat min``) of ``reps`` runs after a warm-up."""
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * _stat(times)


@contextlib.contextmanager
def _backend_fwht(backend: str):
    """``torch-old``: the torch path with the previous FWHT (``fwht_legacy``), for comparison."""
    if backend != "torch-old":
        yield
        return
    saved = fastfood_mod.fwht
    fastfood_mod.fwht = fwht_legacy
    try:
        yield
    finally:
        fastfood_mod.fwht = saved


def bench(D: int, ds: list[int], backends: list[str], reps: int) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(D, generator=g), torch.randn(D, generator=g)
    c = torch.empty(D)
    add_ms = _time_ms(lambda: a + b, reps)
    add_out_ms = _time_ms(lambda: torch.add(a, b, out=c), reps)
    rows = []
    for d in ds:
        x = torch.randn(d, generator=g)
        for backend in backends:
            with _backend_fwht(backend):
                t0 = time.perf_counter()
                P = FastfoodProjection(d, D, seed=0, backend=backend.removesuffix("-old"))
                build_ms = 1e3 * (time.perf_counter() - t0)
                apply_ms = _time_ms(lambda P=P, x=x: P.apply(x), reps)
                adjoint_ms = _time_ms(lambda P=P: P.adjoint(a), reps)
                add_fused_ms = _time_ms(lambda P=P, x=x: P.apply_add(x, b, out=c), reps)
            label = "numba" if P.uses_numba() else "torch"
            rows.append({
                "D": D, "d": d, "backend": label + ("-old" if backend == "torch-old" else ""),
                "apply_ms": apply_ms, "adjoint_ms": adjoint_ms, "apply_add_ms": add_fused_ms,
                "add_ms": add_ms, "add_out_ms": add_out_ms,
                "ratio": (apply_ms + adjoint_ms) / add_ms,
                "ratio_out": (apply_ms + adjoint_ms) / add_out_ms,
                "state_bytes_per_param": P.state_bytes() / D, "build_ms": build_ms,
            })
            del P
            print(_fmt(rows[-1]), flush=True)
        old = [r for r in rows if r["d"] == d and r["D"] == D and r["backend"] == "torch-old"]
        new = [r for r in rows if r["d"] == d and r["D"] == D and r["backend"] == "torch"]
        if old and new:
            o, w = old[-1], new[-1]
            new[-1]["speedup_vs_torch_old"] = sp = {
                k: o[k] / w[k] for k in ("apply_ms", "adjoint_ms", "apply_add_ms")
            }
            print(f"{'':>11} torch-old / torch: apply {sp['apply_ms']:.2f}×, adjoint "
                  f"{sp['adjoint_ms']:.2f}×, apply_add {sp['apply_add_ms']:.2f}×", flush=True)
    return rows


_CHILD = """
import time, torch
torch.set_num_threads({threads})
t0 = time.perf_counter()
from idcompress.projection.fastfood import FastfoodProjection
P = FastfoodProjection(1000, 100_000, backend="numba")
P.adjoint(P.apply(torch.ones(1000)))
print(time.perf_counter() - t0)
"""


def fresh_process_times(threads: int) -> dict:
    """Seconds from import to the first apply+adjoint, with an empty and with a filled cache."""
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        out = {}
        for label in ("compile_s", "cached_s"):
            run = subprocess.run([sys.executable, "-c", _CHILD.format(threads=threads)],
                                 env=env, capture_output=True, text=True, check=True)
            out[label] = float(run.stdout.strip().splitlines()[-1])
    return out


_HEAD = (f"{'D':>11} {'d':>7} {'backend':>9} {'apply ms':>9} {'adjoint ms':>10} "
         f"{'apply_add':>9} {'a+b ms':>7} {'(ap+adj)/(a+b)':>14} {'/add(out=)':>10} "
         f"{'B/param':>8} {'build ms':>9}")


def _fmt(r: dict) -> str:
    return (f"{r['D']:>11,} {r['d']:>7} {r['backend']:>9} {r['apply_ms']:>9.1f} "
            f"{r['adjoint_ms']:>10.1f} {r['apply_add_ms']:>9.1f} {r['add_ms']:>7.1f} "
            f"{r['ratio']:>14.2f} {r['ratio_out']:>10.2f} {r['state_bytes_per_param']:>8.4f} "
            f"{r['build_ms']:>9.0f}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--D", type=int, nargs="+", default=[MINILM_D, 2_000_000])
    ap.add_argument("--d", type=int, nargs="+", default=[1000, 10_000, 100_000])
    ap.add_argument("--backends", nargs="+", default=["numba", "torch"],
                    choices=["numba", "torch", "torch-old"],
                    help="torch-old: the torch path with the previous FWHT (fwht_legacy); "
                    "with torch, prints the speed-up ratio")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--stat", choices=sorted(_STAT), default="median",
                    help="min is the steadier estimate on a machine shared with other jobs")
    ap.add_argument("--fresh", action="store_true", help="also time JIT compile / cache load")
    ap.add_argument("--json", metavar="PATH", help="write the rows (and fresh times) here")
    args = ap.parse_args(argv)
    global _stat
    _stat = _STAT[args.stat]
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"{args.stat} of {args.reps} reps")
    print(_HEAD)
    rows = []
    for D in args.D:
        rows += bench(D, [d for d in args.d if d <= D], args.backends, args.reps)
        print(f"{'':>11} baseline: a+b {rows[-1]['add_ms']:.1f} ms, "
              f"add(out=) {rows[-1]['add_out_ms']:.1f} ms")
    result = {"threads": args.threads, "reps": args.reps, "stat": args.stat, "rows": rows}
    if args.fresh:
        result["fresh_process"] = fresh_process_times(args.threads)
        print("fresh process, import → first apply+adjoint (d=1000, D=1e5): "
              + ", ".join(f"{k} {v:.2f}" for k, v in result["fresh_process"].items()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
