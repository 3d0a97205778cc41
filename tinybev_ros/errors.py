"""Errors caused by a user's input, not by our code: the command line prints them as one line (cli.py).

Kept free of heavy imports so that `tinybev` can catch them without importing torch.
"""

from __future__ import annotations


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unreadable, wrong format or kind, non-finite, not matching its model."""


class CheckpointNotFound(CheckpointError, FileNotFoundError):
    """No file at the checkpoint path."""


class DatasetError(ValueError):
    """A nuScenes-format dataset that cannot be used as asked: wrong dataroot or version, unknown scene or split,
    a table that does not parse, a missing or corrupt file. The message names the file or the name at fault."""


class DatasetFileMissing(DatasetError, FileNotFoundError):
    """A file the dataset's tables name is not on disk."""


class ConfigError(ValueError):
    """A configuration that cannot be used: an unknown key, a value of the wrong type, a bad override, a missing or
    looping `base:` file. The message names the file and the key."""


class ConfigFileMissing(ConfigError, FileNotFoundError):
    """A file a configuration names (another config, backbone weights) is not on disk."""


class InputError(ValueError):
    """An input message the node cannot use (ros/messages.py); the message says what is wrong with it."""


class ImageSizeError(InputError):
    """An image whose size is not its camera's (or not plausible at all)."""


class UnsupportedEncoding(InputError):
    """An image in an encoding or format the node does not decode (fault `bad_encoding`)."""
