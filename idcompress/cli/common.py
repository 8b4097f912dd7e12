"""What every subcommand shares: its parser's shape and the quieting of the libraries' bars."""

from __future__ import annotations

import argparse


def command_parser(subparsers, name: str, help: str, description: str,
                   **kwargs) -> argparse.ArgumentParser:
    """A subcommand parser whose ``--help`` keeps ``description``'s line breaks."""
    return subparsers.add_parser(name, help=help, description=description,
                                 formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)


def doc_body(doc: str | None) -> str:
    """A module docstring without its summary paragraph and with ````literals```` plain."""
    return (doc or "").split("\n\n", 1)[-1].replace("``", "")


def quiet_library_progress_bars() -> None:
    """Only idcompress's own bars are shown: no per-map/per-load bars from datasets/transformers."""
    import datasets
    from transformers.utils import logging as hf_logging

    datasets.disable_progress_bars()
    hf_logging.disable_progress_bar()
