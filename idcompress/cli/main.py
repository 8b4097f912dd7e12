"""``idcompress`` command line: one subcommand per module, like ``accelerate``/``transformers-cli``.

Each subcommand module in ``idcompress.cli`` exposes ``add_parser(subparsers)`` (registers its
``argparse`` parser and sets ``func``) and is listed in ``SUBCOMMANDS``; modules that are not
importable (an optional extra missing) are skipped with their reason shown in ``--help``.

Errors: every expected failure is one line, ``idcompress <cmd>: error: …``, exit status 2;
a bug keeps its traceback; ``--debug`` shows the traceback of everything (see
:mod:`idcompress.cli.errors`). ``--offline`` (or ``HF_HUB_OFFLINE=1``) keeps every command off
the network. Both flags may stand anywhere on the command line.
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
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the full traceback of any error (anywhere on the line)")
    parser.add_argument("--offline", action="store_true", default=argparse.SUPPRESS,
                        help="never contact the Hugging Face Hub (as HF_HUB_OFFLINE=1)")
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
    """Run ``idcompress`` with ``argv`` (default ``sys.argv[1:]``); the exit status."""
    from .errors import expected_message, one_line_warnings, set_offline, split_global_flags

    debug, offline, argv = split_global_flags(list(sys.argv[1:] if argv is None else argv))
    if offline:
        set_offline()
    parser = build_parser()
    args = parser.parse_args(argv)  # a bad flag: usage + one error line, SystemExit(2)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    with one_line_warnings():
        try:
            return int(args.func(args) or 0)
        except KeyboardInterrupt:
            if debug:
                raise
            print(f"idcompress {args.command}: interrupted", file=sys.stderr)
            return 130
        except Exception as e:
            message = None if debug else expected_message(e)
            if message is None:
                raise
            print(f"idcompress {args.command}: error: {message}", file=sys.stderr)
            return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
