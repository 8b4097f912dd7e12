"""``idcompress info CKPT``: what a checkpoint holds and how small it is, from its files alone.

No model is built (instant). Sizes, in bytes:

- checkpoint: the sum of the checkpoint's own files (``adapter_config.json`` +
  ``adapter_model.safetensors``, or the one ``*.idc.safetensors``);
- base (fp32): 4 × D, the tuned parameters in float32. When the layout tunes every
  floating-point parameter (no include/exclude) that is the whole model's parameters; otherwise
  the parameters left out are not recorded in the checkpoint and are not counted (said so);
- compression ratio: base (fp32) / checkpoint;
- MDL bits: the stored numbers (θ_d and SAID's λ: d in all) × bits per stored number (32 for
  float32, 16 for float16/bfloat16), the description length of the tuned model given the base.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .common import command_parser, doc_body


def checkpoint_info(path_or_id: str, revision: str | None = None, force: bool = False
                    ) -> dict[str, Any]:
    """Everything ``info`` reports about a checkpoint (directory, ``*.idc.safetensors`` or hub id).

    Its integrity digest is verified (``force``: a mismatch warns instead of failing).
    """
    from ..checkpoint import size
    from ..checkpoint.hub import checkpoint_in_folder, resolve_checkpoint
    from ..tuners.loading import read_config

    path = resolve_checkpoint(path_or_id, revision=revision)
    if path.is_dir():
        path = checkpoint_in_folder(path)
    cfg, files = read_config(path, allow_integrity_mismatch=force)
    own = size.own_files(path)
    ckpt_bytes = size.own_bytes(path)
    n_theta = files.theta_d.numel()
    n_lambda = 0 if files.said_lambda is None else files.said_lambda.numel()
    stored = n_theta + n_lambda
    bits = size.bits_per_number(cfg.vector_dtype)
    whole = cfg.include is None and cfg.exclude is None
    base_bytes = size.fp32_bytes(cfg.D)
    return {
        "checkpoint": str(path),
        "form": "directory" if path.is_dir() else "single-file",
        "files": [f.name for f in own],
        "projection": cfg.projection,
        "d": cfg.d,
        "theta_d_numbers": n_theta,
        "said_lambda_numbers": n_lambda,
        "seed": cfg.seed,
        "rng": cfg.rng,
        "base_model": cfg.base_model_name_or_path,
        "revision": cfg.revision,
        "base_fingerprint": cfg.base_fingerprint,
        "digest": cfg.digest,
        "task_type": cfg.task_type,
        "num_labels": cfg.num_labels,
        "label_names": cfg.label_names,
        "D": cfg.D,
        "num_tensors": cfg.num_tensors,
        "include": cfg.include,
        "exclude": cfg.exclude,
        "vector_dtype": cfg.vector_dtype,
        "bits_per_number": bits,
        "stored_numbers": stored,
        "mdl_bits": size.mdl_bits(stored, cfg.vector_dtype),
        "checkpoint_bytes": ckpt_bytes,
        "base_fp32_bytes": base_bytes,
        "base_fp32_counts": (
            "all parameters (the layout tunes every floating-point parameter): 4 x D" if whole
            else "the D tuned parameters only: 4 x D (include/exclude leave parameters out; "
                 "the checkpoint does not record how many)"
        ),
        "compression_ratio": size.compression_ratio(cfg.D, ckpt_bytes),
        "idcompress_version": cfg.idcompress_version,
    }


def format_info(info: dict[str, Any]) -> str:
    """The human-readable report."""
    split = (f" (theta_d {info['theta_d_numbers']:,} + said_lambda {info['said_lambda_numbers']:,})"
             if info["said_lambda_numbers"] else "")
    labels = ", ".join(info["label_names"] or []) or "-"
    patterns = ""
    if info["include"] or info["exclude"]:
        patterns = f"; include={info['include']} exclude={info['exclude']}"
    rows = [
        ("checkpoint", f"{info['checkpoint']} ({info['form']}: {', '.join(info['files'])})"),
        ("projection", f"{info['projection']}  d={info['d']:,}{split}  seed={info['seed']}  rng={info['rng']}"),
        ("base", f"{info['base_model'] or '-'} (revision: {info['revision'] or '-'})"),
        ("fingerprint", info["base_fingerprint"] or "-"),
        ("integrity", f"{info['digest']} (verified)" if info.get("digest")
         else "no digest (previous format): not verified"),
        ("task", f"{info['task_type'] or '-'}; {info['num_labels'] or '-'} labels: {labels}"),
        ("layout", f"D={info['D']:,} in {info['num_tensors']:,} tensors{patterns}"),
        ("vector", f"{info['vector_dtype']}: {info['stored_numbers']:,} numbers x {info['bits_per_number']} bits"
                   f" = {info['mdl_bits']:,} bits (MDL)"),
        ("checkpoint size", f"{info['checkpoint_bytes']:,} bytes"),
        ("base size (fp32)", f"{info['base_fp32_bytes']:,} bytes, {info['base_fp32_counts']}"),
        ("compression", f"{info['compression_ratio']:,.1f}x (base fp32 / checkpoint)"),
    ]
    if "base_checked" in info:
        rows.append(("base checked", info["base_checked"]))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def run(args: argparse.Namespace) -> int:
    info = checkpoint_info(args.checkpoint, revision=args.revision, force=args.force)
    if args.base is not None:
        from ..checkpoint.integrity import allow_integrity_mismatch
        from ..tuners import IntrinsicModel

        # builds the model on that base: a layout or fingerprint mismatch is refused with both values
        with allow_integrity_mismatch(args.force):
            IntrinsicModel.from_pretrained(args.checkpoint, base_model=args.base, revision=args.revision)
        info["base_checked"] = f"{args.base} (layout and fingerprint match)"
    sys.stdout.write((json.dumps(info, indent=2) if args.json else format_info(info)) + "\n")
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = command_parser(subparsers, "info", description=doc_body(__doc__),
                       help="show a checkpoint's settings, base, sizes and compression (reads only its files)")
    p.add_argument("checkpoint", metavar="CKPT",
                   help="checkpoint directory, *.idc.safetensors file, or hub repo id owner/name")
    p.add_argument("--revision", help="hub revision (branch, tag or commit) of a repo id")
    p.add_argument("--json", action="store_true", help="print the same as one JSON object")
    p.add_argument("--force", action="store_true",
                   help="show a checkpoint that fails its integrity check (warns)")
    p.add_argument("--base", metavar="PATH_OR_ID", default=None,
                   help="also load this base model (folder, hub id or short name) and check that the "
                        "checkpoint's layout and fingerprint match it")
    p.set_defaults(func=run)
    return p

