"""Peak memory of one training run per method, each in its own process, with ratios to LoRA and full.

    python benchmarks/bench_memory.py --json memory.json                 # both models, every method
    python benchmarks/bench_memory.py --models llama-271m --methods full lora said:1e3
    python benchmarks/bench_memory.py --gradient-checkpointing          # the same with checkpointing on

Models: ``minilm-l6`` (the packaged all-MiniLM-L6-v2, sequence classification, batch 16 × 128)
and ``llama-271m`` (``LlamaConfig(vocab_size=32000, hidden_size=1024, intermediate_size=2816,
num_hidden_layers=16, num_attention_heads=16, num_key_value_heads=16)``, random weights, causal
LM loss on the inputs, batch 2 × 128), float32. Methods: ``inference`` (a ``torch.no_grad``
forward of the base), ``full`` (AdamW on every weight), ``lora`` (PEFT LoRA r=8 on the query and
value projections), ``vera`` (PEFT VeRA r=256, same targets), ``KIND:d`` (idcompress, KIND in
said/fastfood) in each memory mode: ``keep`` (autograd keeps each composed weight until
backward) and ``recompute`` (it keeps a recipe and recomposes in backward).

Each child builds its model, runs ``--warmup`` + ``--steps`` AdamW steps (fused AdamW, as the
Trainer) and reports the peak resident set size (``ru_maxrss``; on CUDA
``torch.cuda.max_memory_allocated``) and the median step time. Children run one after another,
never two at once.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

MODELS = {
    "minilm-l6": {"batch": 16, "seq": 128, "targets": ["query", "value"]},
    "llama-271m": {"batch": 2, "seq": 128, "targets": ["q_proj", "v_proj"]},
}
DEFAULT_METHODS = ["inference", "full", "lora", "vera", "said:1e3", "said:1e4", "fastfood:1e3", "fastfood:1e4"]
MODES = ("keep", "recompute")


def llama_271m():
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=32000, hidden_size=1024, intermediate_size=2816, num_hidden_layers=16,
                      num_attention_heads=16, num_key_value_heads=16)
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg)


def child(spec: dict) -> dict:
    import torch

    torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    name, d = ("inference", None) if spec["method"] == "inference" else C.parse_method(spec["method"])
    if spec["model"] == "llama-271m":
        model, task = llama_271m(), "CAUSAL_LM"
    else:
        model, task = C.build_model("minilm-l6"), "SEQ_CLS"
    if spec["gradient_checkpointing"]:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    m = MODELS[spec["model"]]
    batch = C.make_batch(C.vocab_size(model), m["batch"], m["seq"], seed=0)
    if task == "CAUSAL_LM":
        batch = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
                 "labels": batch["input_ids"]}
    info: dict = {}
    if name == "inference":
        model = model.to(device).eval()
        batch = {k: v.to(device) for k, v in batch.items() if k != "labels"}
        t0 = time.perf_counter()
        with torch.no_grad():
            model(**batch)
        step_ms = 1e3 * (time.perf_counter() - t0)
        trainable = 0
    else:
        if name in ("lora", "vera"):
            from peft import LoraConfig, VeraConfig, get_peft_model

            cfg = (LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=m["targets"], task_type=task)
                   if name == "lora" else VeraConfig(r=256, target_modules=m["targets"], task_type=task))
            model = get_peft_model(model, cfg)
        elif name != "full":
            from idcompress import IntrinsicConfig, get_intrinsic_model

            model = get_intrinsic_model(model, IntrinsicConfig(d=d, projection=name, task_type=task))
            model.base_model.recompute = spec["mode"] == "recompute"
        model = model.to(device).train()
        batch = {k: v.to(device) for k, v in batch.items()}
        opt = C.make_optimizer(model, "fused" if device.type == "cpu" else "foreach", lr=1e-4)
        timing = C.time_steps(model, opt, batch, device, spec["warmup"], spec["steps"])
        step_ms = timing["step_ms"]
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        info["fwd_ms"], info["bwd_ms"] = timing["fwd_ms"], timing["bwd_ms"]
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {**spec, "peak_mib": peak, "step_ms": step_ms, "trainable": trainable, **info}


def specs(args) -> list[dict]:
    out = []
    for model in args.models:
        for method in args.methods:
            modes = args.modes if (method not in ("inference", "full", "lora", "vera")) else ["-"]
            for mode in modes:
                out.append({"model": model, "method": method, "mode": mode, "device": args.device,
                            "threads": args.threads, "warmup": args.warmup, "steps": args.steps,
                            "gradient_checkpointing": args.gradient_checkpointing})
    return out


def run_child(spec: dict) -> dict:
    env = C.set_offline_env(dict(os.environ))
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        env[k] = str(spec["threads"])
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        return {**spec, "error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(results: list[dict]) -> str:
    rows = []
    for model in dict.fromkeys(r["model"] for r in results):
        rs = [r for r in results if r["model"] == model]
        ref = {r["method"]: r for r in rs if "error" not in r}
        lora, full = ref.get("lora", {}).get("peak_mib"), ref.get("full", {}).get("peak_mib")
        full_ms = ref.get("full", {}).get("step_ms")
        for r in rs:
            if "error" in r:
                rows.append([model, r["method"], r["mode"], None, None, None, None, None, r["error"][:60]])
                continue
            p = r["peak_mib"]
            rows.append([model, r["method"], r["mode"], round(p), p / lora if lora else None,
                         p / full if full else None, round(r["step_ms"]),
                         r["step_ms"] / full_ms if full_ms and r["method"] != "inference" else None, ""])
    return C.md_table(["model", "method", "mode", "peak MiB", "× LoRA", "× full", "step ms", "step × full", "note"],
                      rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--methods", nargs="+", default=DEFAULT_METHODS)
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES),
                   help="idcompress memory modes to run (default: both)")
    p.add_argument("--gradient-checkpointing", action="store_true",
                   help="model.gradient_checkpointing_enable() (non-reentrant) for every method")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=1, help="untimed steps before the timed ones")
    p.add_argument("--steps", type=int, default=2, help="timed AdamW steps")
    p.add_argument("--json", help="write the results to this file")
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    results = []
    for spec in specs(args):
        t0 = time.perf_counter()
        r = run_child(spec)
        results.append(r)
        note = r.get("error") or f"{r['peak_mib']:.0f} MiB, {r['step_ms']:.0f} ms/step"
        print(f"{spec['model']} {spec['method']} {spec['mode']}: {note} ({time.perf_counter() - t0:.0f} s)",
              flush=True)
    print()
    print(table(results))
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
