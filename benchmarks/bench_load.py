"""Checkpoint load time: ``IntrinsicModel.from_pretrained`` (base resolved, P rebuilt, fingerprint
checked) vs plain ``AutoModelForSequenceClassification.from_pretrained`` of the base, each in a
fresh process, alternating, median of ``--reps``. Also the checkpoint's size on disk.

    python benchmarks/bench_load.py [--d 1000] [--reps 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_WAIT_POLICY": "PASSIVE"}

PLAIN = """
import time, torch
t = time.perf_counter()
from transformers import AutoModelForSequenceClassification
from transformers.utils import logging; logging.set_verbosity_error()
from idcompress.models import resolve_model_name
m = AutoModelForSequenceClassification.from_pretrained(resolve_model_name("minilm-l6"), num_labels=2)
print(time.perf_counter() - t)
"""

OURS = """
import time, sys, torch
t = time.perf_counter()
from idcompress import IntrinsicModel
m = IntrinsicModel.from_pretrained(sys.argv[1])
print(time.perf_counter() - t)
"""


def _time(code: str, *args: str) -> float:
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=ENV, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--d", type=int, default=1000)
    ap.add_argument("--projection", default="said")
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    import torch

    from idcompress import IntrinsicConfig, get_intrinsic_model
    from idcompress.models.loading import load_base_model

    base = load_base_model("minilm-l6", "SEQ_CLS", num_labels=2)
    model = get_intrinsic_model(base, IntrinsicConfig(d=args.d, projection=args.projection,
                                                      base_model_name_or_path="minilm-l6", task_type="SEQ_CLS", num_labels=2))
    with torch.no_grad():
        model.theta_d.normal_(generator=torch.Generator().manual_seed(0))
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "ckpt"
        model.save_pretrained(ckpt)
        size = sum(f.stat().st_size for f in ckpt.iterdir())
        _time(OURS, str(ckpt))  # warm the numba cache and the OS file cache
        plain, ours = [], []
        for _ in range(args.reps):
            plain.append(_time(PLAIN))
            ours.append(_time(OURS, str(ckpt)))
    res = {"d": args.d, "projection": args.projection, "checkpoint_bytes": size,
           "plain_load_s": statistics.median(plain), "idcompress_load_s": statistics.median(ours)}
    res["ratio"] = res["idcompress_load_s"] / res["plain_load_s"]
    print(f"checkpoint ({args.projection}, d={args.d}, float32): {size} bytes")
    print(f"plain AutoModelForSequenceClassification.from_pretrained: {res['plain_load_s']:.2f} s (median of {args.reps})")
    print(f"IntrinsicModel.from_pretrained:                          {res['idcompress_load_s']:.2f} s  ({res['ratio']:.2f}x)")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
