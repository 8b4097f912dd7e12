"""``idcompress predict CHECKPOINT``: run a trained checkpoint on new inputs.

Inputs: ``--text "..."`` (repeatable) and/or ``--input-file F`` (``.csv``/``.tsv``/``.jsonl``/
``.json``/``.parquet``, or ``.txt`` with one input per line). The column of a file follows
finetune's rules: ``--text-columns`` names it (two columns: a sentence pair for a pair
classifier); otherwise the first of ``prompt``, ``text``, ``source``, ``sentence``, ``input``
that the file has, or a GLUE pair (``sentence1``/``sentence2``, ``premise``/``hypothesis``, …).

Output, one JSON object per input, in input order: ``{"input", "label", "probability"}`` for a
classifier, ``{"input", "value"}`` for a regression, ``{"input", "generated"}`` for a language
model (greedy, ``--max-new-tokens``). Printed as JSON lines, or written to ``--output-file``
(``.jsonl``/``.json``: JSON lines; ``.csv``/``.tsv``: a table with a header).

Checkpoints: intrinsic (directory, ``*.idc.safetensors`` or hub repo id; the base resolved as
``IntrinsicModel.from_pretrained`` does, ``--base`` to override), a LoRA adapter folder or a full
model folder written by ``idcompress finetune`` (see :mod:`idcompress.inference`).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path

from ..fileio import atomic_write_text
from .common import command_parser, doc_body

SINGLE_COLUMNS = ("prompt", "text", "source", "sentence", "input")
PAIR_COLUMNS = (("sentence1", "sentence2"), ("premise", "hypothesis"), ("question1", "question2"),
                ("question", "sentence"))
OUTPUT_FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv", ".tsv": "tsv"}


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = command_parser(subparsers, "predict", description=doc_body(__doc__),
                       help="run a checkpoint on new texts: label + probability, value, or generated text")
    p.add_argument("checkpoint", metavar="CHECKPOINT",
                   help="checkpoint directory, *.idc.safetensors file or hub repo id owner/name")
    p.add_argument("--text", action="append", metavar="TEXT", help="an input (repeatable)")
    p.add_argument("--input-file", metavar="FILE", help="file of inputs (see above)")
    p.add_argument("--text-columns", nargs="+", metavar="COL",
                   help="column(s) of --input-file holding the input (space- or comma-separated;"
                   " two for a sentence pair)")
    p.add_argument("--output-file", metavar="FILE",
                   help="write the predictions here (.jsonl/.json/.csv/.tsv) instead of stdout")
    p.add_argument("--max-new-tokens", type=int, default=32, metavar="N",
                   help="new tokens per generation (language models; default: %(default)s)")
    p.add_argument("--max-length", type=int, default=512, metavar="TOKENS",
                   help="truncate each input to this many tokens (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=32,
                   help="inputs per forward for classifiers (default: %(default)s)")
    p.add_argument("--base", metavar="MODEL", help="base model (short name, folder or hub id) "
                   "instead of the one the checkpoint records")
    p.add_argument("--force", action="store_true",
                   help="load even if the base's fingerprint differs from the checkpoint's")
    p.set_defaults(func=run)
    return p


def read_inputs(path: str, text_columns: list[str] | None) -> list[str | tuple[str, str]]:
    """The inputs of ``path`` (see the module docstring)."""
    from ..data.lm import read_lm_file

    ds = read_lm_file(path)
    cols = list(ds.column_names)
    if text_columns:
        missing = [c for c in text_columns if c not in cols]
        if missing or len(text_columns) > 2:
            raise ValueError(f"--input-file {path}: --text-columns {text_columns} "
                             + (f"not found; columns found: {cols}" if missing
                                else "names more than 2 columns"))
        chosen = list(text_columns)
    else:
        single = next((c for c in SINGLE_COLUMNS if c in cols), None)
        pair = next((list(pc) for pc in PAIR_COLUMNS if all(c in cols for c in pc)), None)
        chosen = [single] if single else pair
        if not chosen:
            raise ValueError(f"--input-file {path}: no input column ({', '.join(SINGLE_COLUMNS)}, "
                             f"or a sentence pair); columns found: {cols}; name it with "
                             "--text-columns")
    values = [ds[c] for c in chosen]
    out: list[str | tuple[str, str]] = []
    for i, row in enumerate(zip(*values)):
        if any(not isinstance(v, str) or not v.strip() for v in row):
            raise ValueError(f"--input-file {path}: row {i + 1} has an empty or non-text value "
                             f"in {chosen}")
        out.append(row[0] if len(row) == 1 else (row[0], row[1]))
    if not out:
        raise ValueError(f"--input-file {path} has no rows")
    return out


def write_outputs(rows: list[dict], path: str | None) -> None:
    """JSON lines on stdout, or ``path`` in the format of its extension."""
    if path is None:
        for r in rows:
            print(json.dumps(r, ensure_ascii=False))
        return
    fmt = OUTPUT_FORMATS.get(Path(path).suffix.lower())
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if fmt == "jsonl":
        atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        return
    out = io.StringIO(newline="")
    w = csv.DictWriter(out, fieldnames=list(rows[0]), delimiter="\t" if fmt == "tsv" else ",")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, out.getvalue())


def run(args: argparse.Namespace) -> int:
    from .finetune import split_columns

    if args.output_file and Path(args.output_file).suffix.lower() not in OUTPUT_FORMATS:
        raise ValueError(f"--output-file {args.output_file!r}: unsupported extension; use one "
                         f"of {sorted(OUTPUT_FORMATS)}")
    for flag, v in (("--max-new-tokens", args.max_new_tokens), ("--max-length", args.max_length),
                    ("--batch-size", args.batch_size)):
        if v < 1:
            raise ValueError(f"{flag}={v} must be a positive integer")
    cols = split_columns(args.text_columns) if args.text_columns else None
    if cols and not args.input_file:
        raise ValueError("--text-columns names columns of --input-file, which is not given")
    inputs: list = list(args.text or [])
    if args.input_file:
        inputs += read_inputs(args.input_file, cols)
    if not inputs:
        raise ValueError("nothing to predict: give --text TEXT (repeatable) or --input-file FILE")

    from ..inference import load_predictor, predict

    predictor = load_predictor(args.checkpoint, base=args.base, force=args.force)
    for note in predictor.notes:
        print(note, file=sys.stderr)
    rows = predict(predictor, inputs, max_new_tokens=args.max_new_tokens,
                   max_length=args.max_length, batch_size=args.batch_size)
    write_outputs(rows, args.output_file)
    if args.output_file:
        print(f"wrote {len(rows)} predictions to {args.output_file}", file=sys.stderr)
    return 0
