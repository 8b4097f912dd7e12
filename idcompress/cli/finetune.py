"""``idcompress finetune``: fine-tune a text or image classifier, or a language model
(intrinsic, full or LoRA).

With no arguments it runs the built-in demo: packaged MiniLM-L6 on a subset of the built-in
movie-review sentences, SAID with d=1000, in about five minutes on two CPU cores.

Multi-process: ``accelerate launch --multi_gpu --num_processes N -m idcompress finetune …`` on
GPUs; on CPUs ``ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes N …`` (gloo
DDP; ``--cpu`` alone starts one process). The run prints its world size. ``--batch-size`` is
per process; only θ_d and λ are all-reduced, the frozen base is never broadcast.

This command (not the library) seeds torch's global RNG with ``accelerate.utils.set_seed(seed)``
before training: dropout draws from it. Everything else random (data order, new head, projection)
comes from seeded generators of its own.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..names import PROJECTION_CHOICES, VECTOR_DTYPES
from ..training.lm_options import REPORT_TO
from ..training.options import (
    DEFAULT_DIM,
    DEFAULT_LR,
    DEMO_PRESET,
    MIXED_PRECISION,
    TRAINING_METHODS,
    merge_options,
)
from .common import command_parser, quiet_library_progress_bars

DESCRIPTION = """\
Fine-tune a pretrained text model on a classification or regression task, a language model
(--task text/causal-lm: GPT-2, Llama, ... on a 'text' column, or 'prompt' + 'response' columns
with the loss on the response only; --task text/seq2seq: T5, BART, ... on 'source' + 'target'),
or an image model (--task image/<name> or imagefolder; --model efficientnet-lite0 or a
transformers image classifier folder / hub id such as ViT, ConvNeXt, ResNet) on an image
classification task.

--method intrinsic (default) trains only a d-dimensional vector theta_d: every weight is
theta0 + P theta_d with P a seeded random projection (SAID: Fastfood + one learned scale per
tensor), so the checkpoint is the seed plus d numbers. --method full trains every weight;
--method lora trains PEFT LoRA adapters (r=8, alpha=16; query/value and the head for
classifiers, PEFT's default attention targets for language models; text only).
Under --method intrinsic every BatchNorm layer keeps the base's running statistics (eval mode),
so the checkpoint rebuilds the trained model exactly.

With no data source (--task, --train-file/--validation-file, --data-dir, or task: in --config)
the built-in demo runs: model minilm-l6 on builtin/movie-sentiment with {demo}.

Options come from, lowest precedence first: defaults, the demo preset (no data source named),
the YAML file of --config (keys = flag names with underscores), explicit flags.

Writes <output-dir>/metrics.jsonl (one line per evaluation), metrics.json (final summary),
checkpoint/ and, with --save-every, state/ (for --resume); language models also
samples.jsonl (greedy generations after each evaluation); --logging-steps train_log.jsonl;
--report-to tensorboard event files under idcompress/. The folder is locked while the run
lasts; one that already holds a run needs --resume (continue it) or --overwrite (replace it).
"""


def add_parser(subparsers) -> argparse.ArgumentParser:
    demo = ", ".join(f"{k.replace('_', '-')} {v}" for k, v in DEMO_PRESET.items() if k != "task")
    p = command_parser(subparsers, "finetune", description=DESCRIPTION.format(demo=demo),
                       help="fine-tune a text or image model (intrinsic subspace, full or LoRA)",
                       argument_default=argparse.SUPPRESS)
    p.add_argument("--config", metavar="YAML", help="YAML file of options, e.g. configs/glue/sst2.yaml")

    g = p.add_argument_group("data")
    g.add_argument("--task", help="glue/<name> (cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, "
                   "wnli) or builtin/movie-sentiment; local files follow the task's columns and "
                   "labels (default: builtin/movie-sentiment). Language models: text/causal-lm, "
                   "text/seq2seq. Images: image/mnist-5k, "
                   "image/fashion-mnist, image/digits, image/cifar10, image/cifar100, "
                   "image/mnist, image/beans, or imagefolder with --data-dir")
    g.add_argument("--train-file", help="local training file (.tsv/.csv/.jsonl/.json/.parquet; "
                   ".txt for text/causal-lm: one example per line)")
    g.add_argument("--validation-file", action="append", metavar="[SPLIT=]FILE",
                   help="local validation file; repeat for several eval splits, in the task's "
                   "order or named (MNLI: --validation-file validation_matched=dev_m.tsv "
                   "--validation-file validation_mismatched=dev_mm.tsv)")
    g.add_argument("--data-dir", help="folder with train and validation/dev files of the task; "
                   "for imagefolder: <split>/<class>/<image> or <class>/<image>")
    g.add_argument("--text-columns", nargs="+", metavar="COL",
                   help="your column(s) holding the task's text field(s), in order (space- or "
                   "comma-separated); text/causal-lm: TEXT, or PROMPT RESPONSE; text/seq2seq: "
                   "SOURCE TARGET")
    g.add_argument("--label-column", metavar="COL", help="your column holding the label")
    g.add_argument("--max-train-samples", type=int, metavar="N",
                   help="train on N rows drawn with the seed (default: all)")
    g.add_argument("--max-eval-samples", type=int, metavar="N",
                   help="evaluate on N rows drawn with the seed (default: all)")
    g.add_argument("--max-length", type=int, metavar="TOKENS",
                   help="truncate inputs to this many tokens (default 128; text only; with "
                   "--packing the block size)")
    g.add_argument("--image-size", type=int, metavar="PX",
                   help="resize images to PX x PX (image tasks; default: the model's size, 224 "
                   "for efficientnet-lite0; refused when the model has an image processor)")

    g = p.add_argument_group("language models (text/causal-lm, text/seq2seq)")
    g.add_argument("--dataset", metavar="NAME", help="a hub dataset by name instead of local "
                   "files (needs internet); its validation split is used (else valid/dev/test)")
    g.add_argument("--dataset-config", metavar="CFG", help="configuration of --dataset")
    g.add_argument("--packing", action="store_true", help="concatenate the rows and cut them "
                   "into blocks of --max-length tokens (text/causal-lm; default: one row per "
                   "sequence, truncated)")
    g.add_argument("--num-samples", type=int, metavar="N", help="greedy sample generations "
                   "written to samples.jsonl after each evaluation (default 3; 0: none)")
    g.add_argument("--max-new-tokens", type=int, metavar="N",
                   help="new tokens per sample generation (default 32)")

    g = p.add_argument_group("model and method")
    g.add_argument("--model", help="packaged short name (minilm-l6, efficientnet-lite0), local "
                   "folder or hub id (default minilm-l6)")
    g.add_argument("--method", choices=TRAINING_METHODS, help="what to train (default intrinsic)")
    g.add_argument("--dim", type=int, metavar="D",
                   help=f"intrinsic dimension d, total trained numbers (default {DEFAULT_DIM})")
    g.add_argument("--projection", choices=PROJECTION_CHOICES,
                   help="projection of the intrinsic method (default said)")

    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, help="training epochs (default 3)")
    g.add_argument("--lr", type=float, help="AdamW learning rate (default per method: intrinsic "
                   f"{DEFAULT_LR['intrinsic']:g}*sqrt(1000/d), full {DEFAULT_LR['full']:g}, "
                   f"lora {DEFAULT_LR['lora']:g})")
    g.add_argument("--batch-size", type=int, help="batch size per process (default 32)")
    g.add_argument("--grad-accum", type=int, metavar="N",
                   help="accumulate gradients over N batches per step (default 1)")
    g.add_argument("--warmup-ratio", type=float, help="fraction of steps of linear warm-up "
                   "(default 0.06), then linear decay to 0")
    g.add_argument("--weight-decay", type=float, help="AdamW weight decay (default 0)")
    g.add_argument("--mixed-precision", choices=MIXED_PRECISION, help="default no")
    g.add_argument("--seed", type=int, help="seed of data order, head, projection and dropout "
                   "(default 0)")

    g = p.add_argument_group("evaluation, checkpoints, output")
    g.add_argument("--eval-every-epoch", action=argparse.BooleanOptionalAction,
                   help="evaluate after every epoch (default) or only at the end")
    g.add_argument("--early-stop", type=int, metavar="PATIENCE",
                   help="stop after PATIENCE evaluations without improvement; keep the best")
    g.add_argument("--output-dir", help="run folder (default runs/<task>-<method>-<timestamp>)")
    g.add_argument("--save-every", type=int, metavar="N",
                   help="save the training state every N optimizer steps (for --resume)")
    g.add_argument("--resume", action="store_true",
                   help="continue the run in --output-dir from its newest saved state")
    g.add_argument("--overwrite", action="store_true",
                   help="start anew in an --output-dir that already holds a run: its options, "
                   "metrics and state are removed once every input is checked, its checkpoint "
                   "is replaced at the end")
    g.add_argument("--stop-after-steps", type=int, metavar="N",
                   help="stop after N optimizer steps as if interrupted (state saved; the "
                   "schedule still spans --epochs); continue with --resume")
    g.add_argument("--no-report", action="store_true",
                   help="skip the representation-geometry report")

    g = p.add_argument_group("logging and sharing")
    g.add_argument("--report-to", choices=REPORT_TO, help="experiment tracker(s), Accelerate's "
                   "log_with (default none; all: every installed one)")
    g.add_argument("--logging-steps", type=int, metavar="N", help="every N optimizer steps log "
                   "train loss, lr, gradient norm of theta_d and tokens/s (train_log.jsonl and "
                   "the trackers)")
    g.add_argument("--vector-dtype", choices=VECTOR_DTYPES, help="dtype of theta_d in the "
                   "checkpoint (intrinsic; default float32); both are evaluated and the score "
                   "lost by the cast is printed")
    g.add_argument("--push-to-hub", metavar="REPO_ID", help="upload the checkpoint with a model "
                   "card to this hub repo at the end (intrinsic; needs internet and a token, "
                   "checked before training)")
    p.set_defaults(func=run)
    return p


def options_from_args(args: argparse.Namespace):
    """Merge defaults, demo preset, YAML and explicit flags into ``FinetuneOptions``."""
    from ..training.options import load_yaml_options
    from ..training.state import OPTIONS_FILE, load_saved_options

    explicit = {k: v for k, v in vars(args).items() if k not in ("func", "command", "config")}
    if explicit.get("text_columns"):
        explicit["text_columns"] = split_columns(explicit["text_columns"])
    yaml_values = load_yaml_options(args.config) if getattr(args, "config", None) else {}
    resume = explicit.get("resume", yaml_values.get("resume", False))
    if resume:
        out = explicit.get("output_dir", yaml_values.get("output_dir"))
        if not out:
            raise ValueError("--resume needs --output-dir (the folder of the run to continue)")
        saved_path = Path(out) / OPTIONS_FILE
        if not saved_path.is_file():
            raise ValueError(f"--resume: {str(saved_path)!r} not found; is {out!r} a run folder?")
        saved = load_saved_options(saved_path)
        saved["stop_after_steps"] = None  # a simulated interruption is not inherited
        saved["overwrite"] = False
        # the saved options are the base; flags that change the trajectory are refused later
        from ..training.options import FinetuneOptions

        try:
            return FinetuneOptions(**{**saved, **yaml_values, **explicit})
        except TypeError as e:  # a value of the wrong type in an edited options.json
            raise ValueError(f"--resume: options file {str(saved_path)!r} holds a value of the "
                             f"wrong type ({e})") from None
    return merge_options(explicit, yaml_values)


def split_columns(values: list[str]) -> list[str]:
    """``["a,b"]`` or ``["a", "b"]`` → ``["a", "b"]`` (how finetune and report read
    ``--text-columns``)."""
    return [c.strip() for v in values for c in v.split(",") if c.strip()]


def run(args: argparse.Namespace) -> int:
    from accelerate import PartialState
    from accelerate.utils import set_seed

    from ..training.loop import train
    from ..training.summary import format_summary

    options = options_from_args(args)
    quiet_library_progress_bars()
    set_seed(options.seed)  # dropout: torch's global RNG (see the module docstring)
    result = train(options)
    if PartialState().is_main_process:
        print()
        print(format_summary(result))
    return 0

