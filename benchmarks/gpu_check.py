"""GPU check: the generator and projections on CUDA against the CPU, then step times in bf16.

Runs unattended, offline, in a few minutes on one GPU; needs only torch, transformers, peft and
safetensors (no ``datasets``, no ``numba``, no installed idcompress: the checkout is imported).

1. Generator, bit for bit: ``rng.arange_bits``/``uniform``/``normal``/``rademacher`` on the same
   counters (counters above 2**32, counts that cross internal chunks) and ``rng.permute_bits``
   (1…31 bits) on CUDA equal the CPU values; the pinned digests of ``tests/test_rng.py``
   (copied below) hold on the device.
2. Projections: ``apply`` and ``adjoint`` of dense/sparse/fastfood on the device agree with the CPU
   (default backend — Triton on CUDA when it imports — and Fastfood's torch backend) to
   ``‖a−b‖/‖b‖ ≤ 1e-5``; the pinned columns ``P e₁`` hold; a small said-wrapped BERT gives the
   same loss and ``theta_d`` gradient on both.
   The per-range interface (core v2) of Fastfood, per device backend (``triton``, ``torch``):
   ``prepare`` / ``range_apply`` / ``range_adjoint`` (with SAID's dot) / ``prepare_adjoint`` on
   ranges that start and end mid-block, against the CPU reference (numba) to 1e-5; the Triton
   generator (``fastfood_triton.bits``, ``block_tables``: ``π_k``, ``G_k``, ``s_k``) bit for bit
   against the CPU's. Then the time of ``range_apply`` + ``range_adjoint`` over all of a
   125M-parameter D per backend, against a float32 add over D.
3. Step times of full FT, LoRA (r=8, query/value) and idcompress said at d = 10³, 10⁴ with each
   Fastfood backend (``said:1000`` runs the default — Triton on CUDA —, ``said:1000@torch`` the
   torch path) on a RoBERTa-base-sized model from ``RobertaConfig`` (random weights, 125M
   parameters), batch 32 × 128, fused AdamW. Precision ``--precision autocast`` (default: float32
   weights and optimizer, forward under ``torch.autocast(dtype=bfloat16)``) or ``bf16`` (weights
   in bfloat16). Peak memory is ``torch.cuda.max_memory_allocated`` per method.

The exit code is 1 when any correctness check fails (or a timed method crashes), else 0; the
timing goals are reported, never enforced. ``--device cpu --quick`` exercises the whole script on
a CPU (a small model, few steps; the CPU-vs-device comparisons are then trivially equal, the
pinned digests are not); with ``TRITON_INTERPRET=1`` it runs the Triton checks there too, through
the interpreter (slow: use ``--quick``).

    python benchmarks/gpu_check.py --json gpu_check.json
    python benchmarks/gpu_check.py --device cpu --quick
    TRITON_INTERPRET=1 python benchmarks/gpu_check.py --device cpu --quick --skip-timing
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import hashlib
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

C.set_offline_env()

import torch  # noqa: E402

from idcompress.projection import fastfood as fastfood_mod  # noqa: E402
from idcompress.projection import make_projection, rng  # noqa: E402
from idcompress.projection.fastfood import FastfoodProjection  # noqa: E402

# Mirrors tests/test_rng.py (a generator change is a format change: update both).
GOLDEN_DIGESTS = [
    ("arange_bits", (0, "a"), 0, 4096, "71ff980b17b338f5"),
    ("arange_bits", (7, "fastfood/G"), 2**32 - 100, 4096, "29191635c73dd9fc"),
    ("normal", (0, "dense"), 0, 4096, "c04bb5fb363272d8"),
    ("uniform", (3, "x"), 0, 4096, "daff479c032c3816"),
    ("rademacher", (1, "fastfood/B"), 0, 4096, "d97d35ad9ae0edd3"),
]
GOLDEN_FIRST_WORDS = [934737105, 841302847, 4207655947, 4047367300]  # arange_bits (0, "a"), 0..3
GOLDEN_COLUMNS = {"dense": "66f6ec97cc8c25b7", "sparse": "d601c5f793e5080b"}  # P e1, d=100, D=5000, seed 42
GOLDEN_FASTFOOD_E1 = [-0.024012569338083267, 0.0, 0.006591686513274908, 0.009887526743113995,
                      0.0058854324743151665]
REL_TOL = 1e-5


def _digest(t: torch.Tensor) -> str:
    t = t.cpu()
    a = t.numpy().astype("<u4") if t.dtype == torch.int64 else t.numpy().astype("<f4")
    return hashlib.sha256(a.tobytes()).hexdigest()[:16]


class Checks:
    """Collects PASS/FAIL lines."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def add(self, name: str, ok: bool, detail: str = "") -> None:
        self.rows.append({"check": name, "ok": bool(ok), "detail": detail})
        print(f"{'PASS' if ok else 'FAIL'}  {name}  {detail}", flush=True)

    def run(self, name: str, fn) -> None:
        """Run ``fn`` (which adds its own rows); an exception is a failure of ``name``."""
        try:
            fn()
        except Exception as e:
            self.add(name, False, f"{type(e).__name__}: {e}")
            traceback.print_exc()

    @property
    def failed(self) -> list[str]:
        return [r["check"] for r in self.rows if not r["ok"]]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().cpu().double(), b.detach().cpu().double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


# -- 1. generator ---------------------------------------------------------------------------------
def check_rng(ck: Checks, dev: torch.device, quick: bool) -> None:
    fns = {"arange_bits": lambda key, start, n, device: rng.arange_bits(rng.stream_key(*key), start, n, device),
           "uniform": lambda key, start, n, device: rng.uniform(*key, n, start=start, device=device),
           "normal": lambda key, start, n, device: rng.normal(*key, n, start=start, device=device),
           "rademacher": lambda key, start, n, device: rng.rademacher(*key, n, start=start, device=device)}
    first = rng.arange_bits(rng.stream_key(0, "a"), 0, 4, dev).cpu().tolist()
    ck.add("rng golden first words", first == GOLDEN_FIRST_WORDS, f"{first}")
    for fn, key, start, n, want in GOLDEN_DIGESTS:
        got = _digest(fns[fn](key, start, n, dev))
        ck.add(f"rng golden {fn}{key}@{start}", got == want, f"digest {got} (pinned {want})")
    big = 3 * 2**16 + 5 if quick else 2**22 + 12345  # crosses the generator's chunks
    for fn in fns:
        for key, start in (((0, "a"), 0), ((5, "fastfood/G"), 2**40 + 17), ((2**31 + 3, "init/x"), 2**32 - 7)):
            a, b = fns[fn](key, start, big, "cpu"), fns[fn](key, start, big, dev)
            ck.add(f"rng {fn}{key}@{start} ×{big}", torch.equal(a, b.cpu()), f"{dev} == cpu bit for bit")
    for nbits in (1, 5, 10, 16, 20, 24, 31):
        keys = rng.arange_bits(rng.stream_key(0, "perm"), 0, 4 * rng.PERM_ROUNDS).view(4, rng.PERM_ROUNDS)
        if nbits <= 16:
            x = torch.arange(1 << nbits).expand(4, 1 << nbits)
        else:  # a sample of the domain
            x = (rng.arange_bits(rng.stream_key(1, "perm-x"), 0, 4 * 2**16) & ((1 << nbits) - 1)).view(4, -1)
        a = rng.permute_bits(x, nbits, keys)
        b = rng.permute_bits(x.to(dev), nbits, keys.to(dev)).cpu()
        ok = torch.equal(a, b)
        if nbits <= 16:
            ok = ok and all(torch.equal(r.sort().values, torch.arange(1 << nbits)) for r in b)
        ck.add(f"rng permute_bits {nbits} bits", ok, f"{dev} == cpu" + (", bijection" if nbits <= 16 else ""))


# -- 2. projections ---------------------------------------------------------------------------------
def check_projections(ck: Checks, dev: torch.device, quick: bool) -> None:
    e1 = torch.zeros(100)
    e1[0] = 1
    for kind, want in GOLDEN_COLUMNS.items():
        got = _digest(make_projection(kind, 100, 5000, 42).to(dev).apply(e1.to(dev)))
        ck.add(f"golden column {kind} P e1", got == want, f"digest {got} on {dev} (pinned {want})")
    ff = make_projection("fastfood", 100, 5000, 42).to(dev).apply(e1.to(dev)).cpu()
    err = _rel(ff[:5], torch.tensor(GOLDEN_FASTFOOD_E1))
    ck.add("golden column fastfood P e1[:5]", err <= REL_TOL, f"rel err {err:.2e}")

    # (512, 100_000): dense too big to cache, regenerated in chunks; the last is MiniLM-sized
    sizes = [(100, 5000), (1000, 300_001)] if quick else [
        (100, 5000), (512, 100_000), (1000, 300_001), (4096, 2_000_003), (100_000, 22_713_986)]
    g = torch.Generator().manual_seed(0)
    for d, D in sizes:
        x, y = torch.randn(d, generator=g), torch.randn(D, generator=g)
        for kind in ("dense", "sparse", "fastfood"):
            try:
                ref = make_projection(kind, d, D, 0)
            except ValueError as e:
                print(f"skip  {kind} d={d} D={D}: refused ({str(e).split(';')[0]})")
                continue
            refs = [("cpu", ref)]
            if kind == "fastfood":
                try:
                    refs.append(("cpu-torch", make_projection(kind, d, D, 0, backend="torch")))
                except (TypeError, ValueError):
                    pass  # an older fastfood without backends
            p = make_projection(kind, d, D, 0).to(dev)
            px, pty = p.apply(x.to(dev)), p.adjoint(y.to(dev))
            for label, r in refs:
                ea, eb = _rel(px, r.apply(x)), _rel(pty, r.adjoint(y))
                ck.add(f"{kind} d={d} D={D} {dev} vs {label}", max(ea, eb) <= REL_TOL,
                       f"apply {ea:.1e}, adjoint {eb:.1e}")
            del p, refs, ref
    check_range_ops(ck, dev, quick)
    check_adapter(ck, dev)


def _device_backends(dev: torch.device) -> list[str]:
    """The Fastfood backends that run on ``dev``: triton (CUDA with triton, or the CPU under
    TRITON_INTERPRET=1) and torch."""
    tk = fastfood_mod._triton_kernels()
    ok = tk is not None and (dev.type == "cuda" or tk.interpreting())
    return (["triton"] if ok else []) + ["torch"]


def _ranges(n: int, D: int) -> list[tuple[int, int]]:
    cand = [(0, D), (n // 2 + 1, min(D, 3 * n + n // 3 + 1)), ((D - 1) // n * n, D),
            (min(n, D - 1), min(D, 2 * n)), (min(D - 1, n + 1), min(D, n + max(2, n // 2))),
            (D // 3, D - 2), (D // 2, D // 2 + 1)]
    return sorted({(a, b) for a, b in cand if 0 <= a < b <= D})


def check_range_ops(ck: Checks, dev: torch.device, quick: bool) -> None:
    """Fastfood's per-range interface on the device, per backend, against the CPU reference."""
    backends = _device_backends(dev)
    if "triton" not in backends:
        print(f"skip  triton checks on {dev}: triton missing (pip install -e '.[gpu]') "
              "or no interpreter on the CPU")
    else:
        from idcompress.projection import fastfood_triton as ft

        key = rng.stream_key(5, "fastfood/G")
        idx = torch.cat([torch.arange(0, 5000), torch.tensor([2**32 - 1, 2**32, 2**40 + 17])])
        got = ft.bits(key, idx.to(dev)).cpu()
        ck.add("triton bits == cpu", torch.equal(got, rng.bits(key, idx)), f"{idx.numel()} counters")
        for d, D in ((100, 5000), (1000, 300_001)) + (() if quick else ((20_000, 2_000_000),)):
            ref = FastfoodProjection(d, D, seed=0, backend="torch")
            tri = FastfoodProjection(d, D, seed=0, backend="triton").to(dev)
            ks = sorted({0, ref.K // 2, ref.K - 1})
            ok = True
            for k in ks:
                perm, g, sc = ft.block_tables(tri._tplan, k, k + 1, dev)
                p_t, _ = ref._tables(k, k + 1, "cpu")
                g_t = rng.to_normal(rng.bits(ref._g_key, k * ref.n + torch.arange(ref.n)))
                ok &= torch.equal(perm.cpu().long(), p_t) and torch.equal(g.cpu()[0], g_t)
                if fastfood_mod._numba_kernels() is not None:
                    num = FastfoodProjection(d, D, seed=0, backend="numba")
                    g_n, p_n, s_n = num._plan.block_tables(k)
                    ok &= torch.equal(g.cpu()[0], torch.from_numpy(g_n)) and sc.cpu()[0].item() == s_n
            ck.add(f"triton block tables d={d} D={D}", ok, f"π, G (and s vs numba) of blocks {ks} bit for bit")
    sizes = [(100, 5000), (1000, 300_001)] if quick else [(100, 5000), (1000, 300_001), (20_000, 2_000_003)]
    g0 = torch.Generator().manual_seed(1)
    for d, D in sizes:
        ref = FastfoodProjection(d, D, seed=0)  # the CPU default (numba when installed)
        x = torch.randn(d, generator=g0)
        u_ref = ref.prepare(x)
        px = ref.apply(x)
        for backend in backends:
            P = FastfoodProjection(d, D, seed=0, backend=backend).to(dev)
            u = P.prepare(x.to(dev))
            worst = _rel(u, u_ref)
            for a, b in _ranges(P.n, D):
                t0, g = torch.randn(b - a, generator=g0), torch.randn(b - a, generator=g0)
                want = ref.range_apply(u_ref, a, b, t0, 0.5)
                got = P.range_apply(u, a, b, t0.to(dev), 0.5)
                gu_r, dot_r = ref.range_adjoint(g, a, b, 0.5, u_ref)
                gu, dot = P.range_adjoint(g.to(dev), a, b, 0.5, u)
                scale = float(g.double().norm() * px[a:b].double().norm().clamp_min(1e-30))
                worst = max(worst, _rel(got - t0.to(dev), want - t0), _rel(gu, gu_r),
                            abs(dot - dot_r) / max(scale, 1e-30),
                            _rel(P.prepare_adjoint(gu), ref.prepare_adjoint(gu_r)))
            ck.add(f"fastfood ranges d={d} D={D} {dev} {backend} vs cpu", worst <= REL_TOL,
                   f"{len(_ranges(P.n, D))} ranges, worst rel err {worst:.1e}")
            del P


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def time_range_ops(dev: torch.device, quick: bool) -> list[dict[str, Any]]:
    """ms of range_apply(θ₀, out=) + range_adjoint(dot) over all of D, per backend and d."""
    D = 2_000_000 if quick else 124_645_632  # RoBERTa-base
    a, b = torch.randn(D, device=dev), torch.randn(D, device=dev)
    out = torch.empty(D, device=dev)

    def ms(fn, reps=3 if quick else 10):
        fn()
        _sync(dev)
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        _sync(dev)
        return 1e3 * (time.perf_counter() - t0) / reps

    add_ms = ms(lambda: torch.add(a, b, out=out))
    rows = []
    for d in (1000, 10_000):
        x = torch.randn(d, device=dev)
        for backend in _device_backends(dev):
            if backend == "triton" and dev.type == "cpu":
                continue  # the interpreter: minutes, and no information
            P = FastfoodProjection(d, D, seed=0, backend=backend).to(dev)
            u = P.prepare(x)
            fw = ms(lambda P=P, u=u: P.range_apply(u, 0, D, a, 0.5, out=out))
            bw = ms(lambda P=P, u=u: P.range_adjoint(b, 0, D, 0.5, u))
            rows.append({"D": D, "d": d, "backend": backend, "range_apply_ms": fw,
                         "range_adjoint_ms": bw, "add_out_ms": add_ms, "x_add": (fw + bw) / add_ms})
            print(f"  range ops D={D:,} d={d:>6} {backend:>6}: apply {fw:7.2f} ms, adjoint {bw:7.2f} ms, "
                  f"({fw + bw:.2f} ms = {(fw + bw) / add_ms:.1f}× add(out=) {add_ms:.2f} ms)", flush=True)
            del P
    return rows


def check_adapter(ck: Checks, dev: torch.device) -> None:
    """said on a small BERT: the same loss and gradient of theta_d on the device as on the CPU."""
    import copy

    from transformers import BertConfig, BertForSequenceClassification

    from idcompress import IntrinsicConfig, get_intrinsic_model

    cfg = BertConfig(vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=128, max_position_embeddings=64, num_labels=2)
    base = BertForSequenceClassification(cfg)
    batch = C.make_batch(1000, 4, 32, seed=1)
    out = {}
    for where in ("cpu", dev):
        m = get_intrinsic_model(copy.deepcopy(base), IntrinsicConfig(d=500, projection="said")).to(where)
        m.eval()  # no dropout: the two devices must see the same function
        b = {k: v.to(where) for k, v in batch.items()}
        with torch.no_grad():
            loss0 = m(**b).loss.item()
            m.theta_d.copy_(torch.linspace(-0.05, 0.05, m.theta_d.numel()))
        loss = m(**b).loss
        loss.backward()
        out[str(where)] = (loss0, loss.item(), m.theta_d.grad.cpu(), m.said_lambda.grad.cpu())
    (l0c, lc, gc_, lgc), (l0d, ld, gd, lgd) = out["cpu"], out[str(dev)]
    ok = abs(l0c - l0d) <= 1e-4 * abs(l0c) and abs(lc - ld) <= 1e-4 * abs(lc)
    eg, el = _rel(gd, gc_), _rel(lgd, lgc)
    ck.add(f"said BERT loss+grad {dev} vs cpu", ok and eg <= 1e-3 and el <= 1e-3,
           f"loss {lc:.6f}/{ld:.6f}, grad theta_d rel {eg:.1e}, grad lambda rel {el:.1e}")


# -- 3. step times ------------------------------------------------------------------------------------
def time_methods(ck: Checks, dev: torch.device, args) -> list[dict[str, Any]]:
    dtype = torch.bfloat16 if args.precision == "bf16" else None
    autocast = torch.bfloat16 if args.precision == "autocast" else None
    if dev.type == "cpu" and autocast is not None:
        autocast = None  # CPU bf16 autocast is a different benchmark; the CPU run only exercises
    rows = []
    for method in args.methods:
        spec, _, backend = method.partition("@")
        name, d = C.parse_method(spec)
        row: dict[str, Any] = {"method": method, "status": "ok"}
        with contextlib.ExitStack() as stack:
            if backend == "torch":  # the torch path even where the Triton kernels would run
                stack.enter_context(_no_triton())
            elif backend:
                raise ValueError(f"method {method!r}: only '@torch' is known")
            _time_one(ck, dev, args, method, name, d, dtype, autocast, row)
        rows.append(row)
        print(f"  {method:<16} {row.get('step_ms', float('nan')):8.1f} ms  {row['status']}", flush=True)
    return rows


@contextlib.contextmanager
def _no_triton():
    saved = fastfood_mod._triton_kernels
    fastfood_mod._triton_kernels = lambda: None
    try:
        yield
    finally:
        fastfood_mod._triton_kernels = saved


def _time_one(ck, dev, args, method, name, d, dtype, autocast, row) -> None:
    model = opt = batch = None
    try:
        t0 = time.perf_counter()
        model = C.build_model(args.model, dtype=dtype)
        model, info = C.wrap(model, name, d)
        model = model.to(dev)
        row.update(info, setup_s=time.perf_counter() - t0)
        batch = C.make_batch(C.vocab_size(model), args.batch, args.seq, seed=0, device=dev)
        opt = C.make_optimizer(model, "fused")
        model.train()
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        # the first step sizes the run: a slow method gets fewer timed steps, not a timeout
        first = sum(C.train_step(model, opt, batch, dev, autocast))
        steps = max(3, min(args.steps, int(args.seconds_per_method / max(first, 1e-3))))
        row.update(C.time_steps(model, opt, batch, dev, max(0, args.warmup - 1), steps, autocast),
                   first_step_ms=1e3 * first, steps_timed=steps)
        if dev.type == "cuda":
            row["peak_mem_mb"] = torch.cuda.max_memory_allocated(dev) / 2**20
    except C.Refused as e:
        row.update(status="refused", message=str(e))
    except Exception as e:
        row.update(status="error", message=f"{type(e).__name__}: {e}")
        traceback.print_exc()
        ck.add(f"step {method}", False, row["message"])
    finally:
        model = opt = batch = None  # noqa: F841 - free before the next method
        gc.collect()
        if dev.type == "cuda":
            torch.cuda.empty_cache()


def render(rows: list[dict[str, Any]]) -> str:
    full = next((r.get("step_ms") for r in rows if r["method"] == "full"), None)
    out = []
    for r in rows:
        ratio = r["step_ms"] / full if r.get("step_ms") and full else None
        out.append([r["method"], r.get("trainable"), r.get("step_ms"), ratio, r.get("fwd_ms"),
                    r.get("bwd_ms"), r.get("opt_ms"), r.get("peak_mem_mb"), C.fmt_bytes(r.get("state_bytes")),
                    r.get("setup_s"), "" if r["status"] == "ok" else f"{r['status']}: {r.get('message', '')[:100]}"])
    return C.md_table(["method", "trainable", "step ms", "× full", "fwd ms", "bwd ms", "opt ms",
                       "peak mem MB", "proj. state", "setup s", "note"], out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    ap.add_argument("--quick", action="store_true", help="small sizes, small model, few steps")
    ap.add_argument("--precision", choices=["autocast", "bf16"], default="autocast")
    ap.add_argument("--model", help="model of the step table (default roberta-base; quick bert-h256-l4)")
    ap.add_argument("--methods", nargs="+",
                    default=["full", "lora", "said:1000", "said:10000", "said:1000@torch",
                             "said:10000@torch"],
                    help="KIND:d@torch: the torch Fastfood path instead of the default (Triton on CUDA)")
    ap.add_argument("--steps", type=int, help="timed steps (default 20, quick 2)")
    ap.add_argument("--warmup", type=int, help="untimed steps (default 5, quick 1)")
    ap.add_argument("--batch", type=int, help="default 32 (quick on CPU: 4)")
    ap.add_argument("--seq", type=int, help="default 128 (quick on CPU: 64)")
    ap.add_argument("--seconds-per-method", type=float, default=20.0,
                    help="fewer timed steps (at least 3) for methods whose first step is slow")
    ap.add_argument("--skip-timing", action="store_true")
    ap.add_argument("--json", metavar="PATH")
    args = ap.parse_args(argv)
    dev = torch.device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        print(f"--device {args.device}: CUDA is not available (torch {torch.__version__})", file=sys.stderr)
        return 2
    small = args.quick and dev.type == "cpu"
    args.model = args.model or ("bert-h256-l4" if args.quick else "roberta-base")
    args.steps = args.steps or (2 if args.quick else 20)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 5)
    args.batch = args.batch or (4 if small else 32)
    args.seq = args.seq or (64 if small else 128)
    if dev.type == "cuda":
        # TF32 would round the dense projection's entries: compare true float32
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    tk = fastfood_mod._triton_kernels()
    info = {"torch": torch.__version__, "device": str(dev),
            "triton": __import__("triton").__version__ if tk is not None else "absent",
            "fastfood backends": "/".join(_device_backends(dev)),
            "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"}
    for mod in ("transformers", "peft"):
        info[mod] = __import__(mod).__version__
    print("# gpu_check " + ", ".join(f"{k} {v}" for k, v in info.items()), flush=True)
    t0 = time.perf_counter()
    ck = Checks()
    ck.run("rng", lambda: check_rng(ck, dev, args.quick))
    ck.run("projections", lambda: check_projections(ck, dev, args.quick))
    rows, table, range_rows = [], "", []
    if not args.skip_timing:
        print("# projection range ops over all of D (range_apply with θ₀ and out=, range_adjoint "
              "with SAID's dot)", flush=True)
        range_rows = time_range_ops(dev, args.quick)
        prec = ("float32 weights + torch.autocast(bfloat16)" if args.precision == "autocast" and dev.type == "cuda"
                else "bfloat16 weights" if args.precision == "bf16" else "float32 (no autocast on CPU)")
        print(f"# step times: {args.model}, batch {args.batch}×{args.seq}, {prec}, fused AdamW, "
              f"warm-up {args.warmup}, timed {args.steps}", flush=True)
        rows = time_methods(ck, dev, args)
        table = render(rows)
        print()
        print(table)
    wall = time.perf_counter() - t0
    failed = ck.failed
    print(f"\n{len(ck.rows) - len(failed)}/{len(ck.rows)} checks passed in {wall:.0f} s"
          + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    if args.json:
        Path(args.json).write_text(json.dumps({"info": info, "args": vars(args), "checks": ck.rows,
                                               "steps": rows, "range_ops": range_rows, "markdown": table, "wall_s": wall}, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
