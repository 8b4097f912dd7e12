"""The marker of errors that are the user's to fix: the CLI prints them as one line, exit 2.

``ValueError``, ``FileNotFoundError`` and the other usual suspects are treated so too (see
:mod:`idcompress.cli.errors`); this base is for the few that must keep another built-in type
(``RuntimeError``, ``ArithmeticError``) for callers that catch those.
"""

from __future__ import annotations


class UserError(Exception):
    """An expected failure caused by the input or the environment, not a bug."""
