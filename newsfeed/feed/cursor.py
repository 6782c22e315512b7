"""Feed cursors: the posts of earlier pages, so the next page repeats none of them, signed so
that only this service can write one.

A cursor is ``<payload>.<tag>``: the payload the page's post ids (int64, zlib, base64url),
the tag an HMAC-SHA256 of the user id and the payload under the server's secret. Checked in
the order that costs least: length, tag, then an inflate bounded to ``MAX_CURSOR_POSTS``
ids, so a forged or hostile cursor costs microseconds and no memory.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
import zlib
from pathlib import Path

import numpy as np

from newsfeed.errors import NewsfeedError

MAX_CURSOR_POSTS = 1_000
MAX_CURSOR_CHARS = 16_384  # 1,000 ids compress to at most ~8 KB: base64 of that, a dot and the tag
TAG_BYTES = 16
SECRET_ENV = "NEWSFEED_CURSOR_SECRET"


class CursorError(NewsfeedError, ValueError):
    """A cursor this service did not issue, or one past its bounds: a 422."""


class CursorCodec:
    def __init__(self, secret: bytes):
        if len(secret) < 16:
            raise NewsfeedError(f"{SECRET_ENV}: the cursor secret must be at least 16 bytes")
        self.secret = secret

    @classmethod
    def for_home(cls, home: Path) -> "CursorCodec":
        """``NEWSFEED_CURSOR_SECRET`` (production: from a Secret, the same for every replica), else
        a key made once under the home and shared by its local replicas."""
        given = os.environ.get(SECRET_ENV)
        if given:
            return cls(given.encode())
        path = Path(home).resolve() / "serving" / "cursor.key"
        path.parent.mkdir(parents=True, exist_ok=True)
        try:  # created exclusively: two replicas starting at once agree on one key
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32))
                f.flush()
                os.fsync(f.fileno())
        for _ in range(50):  # another replica may be between creating and writing it
            key = path.read_text().strip()
            if key:
                return cls(key.encode())
            time.sleep(0.02)
        raise NewsfeedError(f"{path}: the cursor key is empty; delete it and start again")

    def sign(self, user_id: int, payload: str) -> str:
        digest = hmac.new(self.secret, f"{int(user_id)}:{payload}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest[:TAG_BYTES]).decode().rstrip("=")

    def encode(self, user_id: int, post_ids: np.ndarray) -> str:
        ids = np.asarray(post_ids, np.int64)[-MAX_CURSOR_POSTS:]
        payload = base64.urlsafe_b64encode(zlib.compress(ids.astype("<i8").tobytes())).decode()
        return f"{payload}.{self.sign(user_id, payload)}"

    def decode(self, user_id: int, cursor: str | None) -> np.ndarray:
        if not cursor:
            return np.zeros(0, np.int64)
        if len(cursor) > MAX_CURSOR_CHARS:
            raise CursorError(f"cursor: longer than {MAX_CURSOR_CHARS} characters; not a cursor this service issued")
        payload, dot, tag = cursor.rpartition(".")
        if not dot or not hmac.compare_digest(tag.encode(), self.sign(user_id, payload).encode()):
            raise CursorError("cursor: not a cursor this service issued for this user")
        try:
            inflater = zlib.decompressobj()
            raw = inflater.decompress(base64.urlsafe_b64decode(payload.encode()), 8 * MAX_CURSOR_POSTS + 1)
        except (ValueError, zlib.error) as err:
            raise CursorError(f"cursor: unreadable ({err})") from None
        if len(raw) > 8 * MAX_CURSOR_POSTS or len(raw) % 8 or inflater.unconsumed_tail:
            raise CursorError(f"cursor: more than {MAX_CURSOR_POSTS} posts, or not whole ids")
        return np.frombuffer(raw, "<i8").astype(np.int64)
