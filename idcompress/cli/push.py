"""``idcompress push CHECKPOINT REPO_ID``: upload an intrinsic checkpoint with a model card.

Uploads the checkpoint files and a ``README.md`` whose YAML metadata names the base model
(``base_model``), ``library_name: peft`` and the tags ``idcompress``, ``intrinsic-dimension``,
the task and the projection, with d, D, seed, vector dtype and the run's score (from the
``metrics.json`` of the run folder holding the checkpoint), and how to load the checkpoint with
idcompress and with PEFT (see :mod:`idcompress.sharing`). Offline (``HF_HUB_OFFLINE``) or
without a token it stops with an error before reading anything.
"""

from __future__ import annotations

import argparse

from .common import command_parser, doc_body


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = command_parser(subparsers, "push", description=doc_body(__doc__),
                       help="upload an intrinsic checkpoint with a model card to the Hugging Face Hub")
    p.add_argument("checkpoint", metavar="CHECKPOINT",
                   help="checkpoint directory or *.idc.safetensors file")
    p.add_argument("repo_id", metavar="REPO_ID", help="hub repo, owner/name (or name: yours)")
    p.add_argument("--private", action="store_true", help="create the repo as private")
    p.add_argument("--token", help="hub token (default: HF_TOKEN or the saved login)")
    p.add_argument("--base-model", metavar="HUB_ID",
                   help="hub id of the base for the card's base_model (when the checkpoint "
                   "records a local folder)")
    p.add_argument("--commit-message", default="Upload idcompress checkpoint",
                   help="commit message (default: %(default)s)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ..sharing import check_can_push, push_checkpoint

    check_can_push(args.repo_id, args.token)
    url = push_checkpoint(args.checkpoint, args.repo_id, token=args.token,
                          private=args.private or None, commit_message=args.commit_message,
                          base_model_id=args.base_model)
    print(f"pushed {args.checkpoint} to {args.repo_id}: {url}")
    return 0
