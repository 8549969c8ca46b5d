"""Random streams that depend only on the seed and a subject, never on job order or chunking."""

from __future__ import annotations

import zlib

import numpy as np


def subject_rng(seed: int, key: str, *streams: int) -> np.random.Generator:
    """A random generator that depends only on ``seed``, ``key`` (a subject id) and the
    ``streams`` numbers (one per independent use), never on job order."""
    return np.random.default_rng([int(seed), zlib.crc32(str(key).encode()), *map(int, streams)])
