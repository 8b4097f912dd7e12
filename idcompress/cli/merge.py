"""``idcompress merge CKPT --out DIR``: write the tuned model as a plain transformers folder.

Loads the checkpoint onto its base (``IntrinsicModel.from_pretrained``), merges θ₀ + λ·Pθ_d into
the weights (``merge_and_unload``) and saves the base's own class with ``save_pretrained``
(``config.json`` + ``model.safetensors``), plus the base's tokenizer and image processor when
the base folder (or hub repo) has them, so that ``AutoModelFor….from_pretrained(DIR)`` works
without idcompress. A base that is not a transformers model but a registered plain-PyTorch
architecture (``efficientnet-lite0``) is written as ``model.safetensors`` (its state dict,
BatchNorm statistics included) + a ``config.json`` naming the architecture, labels and image
preprocessing (:mod:`idcompress.models.saved`); ``idcompress.models.loading.load_base_model(DIR)``
loads it back. The folder is written to a temporary sibling and renamed into place; a
non-empty ``--out`` is refused unless ``--overwrite``. ``--force`` loads onto a base whose
fingerprint differs from the checkpoint's, or a checkpoint that fails its integrity check,
with a warning on stderr.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from .common import command_parser, doc_body

TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json", "vocab.txt", "spiece.model",
                   "sentencepiece.bpe.model", "merges.txt")
IMAGE_PROCESSOR_FILES = ("preprocessor_config.json",)


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out} is a file, not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"--out {out} exists and is not empty; pass --overwrite to replace it")


def _save_preprocessing(base: str, revision: str | None, dest: Path) -> list[str]:
    """Save the base's tokenizer / image processor into ``dest``; the names of what was saved."""
    import transformers

    local = Path(base).is_dir()
    saved = []
    for cls_name, files in (("AutoTokenizer", TOKENIZER_FILES), ("AutoImageProcessor", IMAGE_PROCESSOR_FILES)):
        if local and not any((Path(base) / f).exists() for f in files):
            continue
        try:
            obj = getattr(transformers, cls_name).from_pretrained(base, revision=revision)
        except (OSError, ValueError) as e:
            if local:  # the files are there but do not load: say so rather than ship a half folder
                raise ValueError(f"base {base}: its {cls_name} files do not load: {e}") from None
            continue  # a hub base without one
        obj.save_pretrained(dest)
        saved.append(cls_name)
    return saved


def merge_checkpoint(checkpoint: str, out: str | Path, overwrite: bool = False, force: bool = False,
                     revision: str | None = None, base: str | None = None) -> dict:
    """Merge ``checkpoint`` into its base and write a transformers folder at ``out`` (atomic)."""
    from ..checkpoint.integrity import allow_integrity_mismatch
    from ..fileio import writing
    from ..models import packaged_folder, resolve_model_name
    from ..tuners.model import IntrinsicModel
    from .checkpoints import check_checkpoint_and_base

    out = Path(out).expanduser()
    _check_out(out, overwrite)
    check_checkpoint_and_base(checkpoint, revision, force, base=base)  # files and base, before loading
    with warnings.catch_warnings(record=True) as caught, allow_integrity_mismatch(force):
        warnings.simplefilter("always")
        model = IntrinsicModel.from_pretrained(checkpoint, base_model=base, revision=revision,
                                               allow_fingerprint_mismatch=force)
    for w in caught:
        if "DIFFERENT BASE" in str(w.message) or "FAILED ITS INTEGRITY CHECK" in str(w.message):
            print(f"idcompress merge: WARNING: {w.message}", file=sys.stderr)
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    cfg = model.intrinsic_config
    merged = model.merge_and_unload()
    arch = None
    if not hasattr(merged, "save_pretrained"):
        from ..models.saved import architecture_of

        arch = architecture_of(cfg.base_model_name_or_path)
        if arch is None:
            raise ValueError(
                f"the base {cfg.base_model_name_or_path!r} is a {type(merged).__name__}, neither a "
                "transformers model nor a registered architecture: merge cannot write it"
            )
        if cfg.num_labels is None:
            raise ValueError(f"checkpoint {checkpoint}: num_labels is not recorded; merge needs it "
                             f"to describe the {arch} folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    saved = []
    with writing(out, directory=True) as tmp:
        if arch is not None:
            from ..models.saved import save_module_folder

            save_module_folder(merged, tmp, arch, cfg.num_labels, cfg.label_names,
                               cfg.extra.get("image_preprocessing"))
        else:
            merged.save_pretrained(tmp)
        source = base or cfg.base_model_name_or_path
        if source and arch is None:
            saved = _save_preprocessing(packaged_folder(source) or resolve_model_name(source), cfg.revision, tmp)
    return {"out": str(out), "model_class": type(merged).__name__, "preprocessing": saved,
            "architecture": arch, "files": sorted(p.name for p in out.iterdir())}


def run(args: argparse.Namespace) -> int:
    result = merge_checkpoint(args.checkpoint, args.out, overwrite=args.overwrite, force=args.force,
                              revision=args.revision, base=args.base)
    if result["architecture"]:
        extra = (f" ({result['architecture']}: state dict + config.json; load it with "
                 "idcompress.models.loading.load_base_model(DIR))")
    elif result["preprocessing"]:
        extra = f" + {', '.join(result['preprocessing'])}"
    else:
        extra = " (no tokenizer or image processor found)"
    print(f"wrote {result['out']}: {result['model_class']}{extra}; files: {', '.join(result['files'])}")
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = command_parser(subparsers, "merge", description=doc_body(__doc__),
                       help="merge a checkpoint into its base and write a plain transformers (or PyTorch) folder")
    p.add_argument("checkpoint", metavar="CKPT",
                   help="checkpoint directory, *.idc.safetensors file, or hub repo id owner/name")
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write (must be empty or absent)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    p.add_argument("--force", action="store_true",
                   help="load even if the base's fingerprint differs from the checkpoint's, or "
                   "the checkpoint fails its integrity check (warns)")
    p.add_argument("--revision", help="hub revision of a repo-id checkpoint")
    p.add_argument("--base", metavar="PATH_OR_ID", default=None,
                   help="base model (local folder, hub id or packaged short name) to use instead of the "
                        "one the checkpoint records; its fingerprint is still checked")
    p.set_defaults(func=run)
    return p
