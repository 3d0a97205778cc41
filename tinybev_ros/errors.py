"""Errors caused by a user's input, not by our code: the command line prints them as one line (cli.py).

Kept free of heavy imports so that `tinybev` can catch them without importing torch.
"""

from __future__ import annotations


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unreadable, wrong format or kind, non-finite, not matching its model."""


class CheckpointNotFound(CheckpointError, FileNotFoundError):
    """No file at the checkpoint path."""
