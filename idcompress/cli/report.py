"""``idcompress report CKPT``: representation geometry of a tuned model, base vs tuned, per layer."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from .common import command_parser


def add_parser(sub) -> None:
    p = command_parser(
        sub, "report",
        help="geometry report (RankMe, alpha-ReQ, TwoNN, MLE, CKA…) of a checkpoint, base vs tuned",
        description="Collect hidden states of the base (θ_d = 0) and the tuned model on the same inputs and "
        "write geometry.json, report.md and PNG plots; print a compact table.",
    )
    p.add_argument("checkpoint", help="checkpoint directory, *.idc.safetensors file or hub repo id")
    p.add_argument("--task", default="builtin/movie-sentiment", help="task whose eval texts are used (default: %(default)s)")
    p.add_argument("--validation-file", default=None, help="local file of texts (with the task's columns)")
    p.add_argument("--text-columns", nargs="+", default=None, metavar="COL",
                   help="your column(s) of --validation-file holding the task's text field(s), in "
                   "order (space- or comma-separated, as in finetune)")
    p.add_argument("--n", type=int, default=2000, help="number of inputs (default: %(default)s)")
    p.add_argument("--max-length", type=int, default=128, help="tokens per input (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=128, help="inputs per forward (default: %(default)s)")
    p.add_argument("--out", default=None, help="output directory (default: <checkpoint>-geometry)")
    p.add_argument("--measure-results", default=None, help="results.json of `idcompress measure`, to state d90")
    p.add_argument("--force", action="store_true", help="load even if the base fingerprint differs "
                   "or the checkpoint fails its integrity check (warns)")
    p.add_argument("--base", metavar="PATH_OR_ID", default=None,
                   help="base model (local folder, hub id or packaged short name) to use instead of the "
                        "one the checkpoint records; its fingerprint is still checked")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..geometry import format_table
    from ..geometry.pipeline import (
        checkpoint_facts,
        d90_from_results,
        intrinsic_report,
        texts_for_task,
    )
    from ..models import packaged_folder
    from ..models.loading import load_tokenizer
    from ..tuners import IntrinsicModel

    if args.n < 2:
        raise ValueError(f"--n must be at least 2, got {args.n}")
    t0 = time.perf_counter()
    ckpt = Path(args.checkpoint)
    out = Path(args.out) if args.out else ckpt.with_name(ckpt.name.removesuffix(".idc.safetensors") + "-geometry")
    d90 = d90_from_results(args.measure_results) if args.measure_results else None
    from ..checkpoint.integrity import allow_integrity_mismatch
    from .checkpoints import check_checkpoint_and_base

    check_checkpoint_and_base(args.checkpoint, force=args.force, base=args.base)  # before loading
    with allow_integrity_mismatch(args.force):
        model = IntrinsicModel.from_pretrained(args.checkpoint, base_model=args.base,
                                               allow_fingerprint_mismatch=args.force)
    cfg = model.intrinsic_config
    name = args.base or cfg.base_model_name_or_path
    tokenizer = load_tokenizer(packaged_folder(name) or name)
    data_kwargs = {}
    if args.validation_file:
        # only the eval split is read; the file stands in for the train split the loader expects
        data_kwargs.update(train_file=args.validation_file, validation_file=args.validation_file)
    if args.text_columns:
        from .finetune import split_columns

        data_kwargs["text_columns"] = split_columns(args.text_columns)
    texts = texts_for_task(args.task, args.n, **data_kwargs)
    size = None
    if ckpt.exists():  # a local checkpoint (a hub id has no size here)
        from ..checkpoint.hub import checkpoint_in_folder
        from ..checkpoint.size import own_bytes

        size = own_bytes(checkpoint_in_folder(ckpt) if ckpt.is_dir() else ckpt)
    facts = checkpoint_facts(model, size, d90)
    result = intrinsic_report(model, tokenizer, texts, out, facts=facts, batch_size=args.batch_size,
                              max_length=args.max_length)
    print(format_table(result))
    print(f"\nwrote {out}/geometry.json, report.md and plots for {len(texts)} inputs in {time.perf_counter() - t0:.1f} s")
    return 0
