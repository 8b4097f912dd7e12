"""``idcompress`` command line: one subcommand per module, like ``accelerate``/``transformers-cli``.

Each subcommand module in ``idcompress.cli`` exposes ``add_parser(subparsers)`` (registers its
``argparse`` parser and sets ``func``) and is listed in ``SUBCOMMANDS``; modules that are not
importable (an optional extra missing) are skipped with their reason shown in ``--help``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

SUBCOMMANDS = ("finetune", "info", "merge", "report", "measure", "predict", "push")


def build_parser() -> argparse.ArgumentParser:
    from ..version import __version__

    parser = argparse.ArgumentParser(
        prog="idcompress",
        description="Fine-tune and compress pretrained models by training only a d-dimensional vector.",
    )
    parser.add_argument("--version", action="version", version=f"idcompress {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"idcompress.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name and e.name.startswith("idcompress.cli"):
                continue  # not built yet
            raise
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError, PermissionError) as e:
        print(f"idcompress {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
