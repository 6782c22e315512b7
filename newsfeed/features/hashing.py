"""Stable feature hashing: the same token maps to the same bucket in every process.

Python's ``hash()`` is salted per process, so it cannot be used for features that
are computed offline and read back at serving time.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

HASHTAG_BUCKETS = 1024


def bucket(token: str, buckets: int = HASHTAG_BUCKETS) -> int:
    """The bucket of one token (case-insensitive, leading '#' ignored), in [0, buckets)."""
    key = token.strip().lstrip("#").lower().encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") % buckets


def bucket_lists(token_lists: Iterable[Iterable[str]], buckets: int = HASHTAG_BUCKETS) -> list[list[int]]:
    """Buckets for each list of tokens; each distinct token is hashed once."""
    cache: dict[str, int] = {}
    out = []
    for tokens in token_lists:
        row = []
        for t in tokens:
            b = cache.get(t)
            if b is None:
                b = cache[t] = bucket(t, buckets)
            row.append(b)
        out.append(row)
    return out
