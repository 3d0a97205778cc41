"""Deterministic nuScenes-style tokens (32 lowercase hex digits) derived from the seed and a key."""

from __future__ import annotations

import hashlib


class TokenFactory:
    """Same seed and key -> same token, so a dataset is reproducible byte for byte."""

    def __init__(self, seed: int) -> None:
        self._prefix = f"tinybev-synth:{seed}:"

    def __call__(self, *key: object) -> str:
        text = self._prefix + "/".join(str(k) for k in key)
        return hashlib.md5(text.encode()).hexdigest()
