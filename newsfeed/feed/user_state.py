"""What users see change, kept where every replica reads the same: per user the posts they
were shown (the newest ``seen_limit``, for ``seen_ttl_days``), hid, and the authors they
blocked; per post the live reaction counters; the event ids already ingested; and marks of
what has been loaded into the store once.

Two implementations of one small interface: ``SqliteUserState``, a file in the home that
every local replica shares (the embedded default), and ``RedisUserState`` (production). A
request reads its user in one round trip (``read``) and writes its page as seen in one
(``mark_seen``). Counters are incremented by the store itself (an UPDATE in one sqlite
transaction, HINCRBY in Redis), never read-increment-written by a client, so concurrent
writers on any number of replicas and nodes stay exact without a lock of ours.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from newsfeed.errors import NewsfeedError, ServiceUnreachable

STATE_KINDS = ("embedded", "production")
STATE_ENV = "NEWSFEED_STATE"
REDIS_ENV = "NEWSFEED_REDIS"
PREFIX_ENV = "NEWSFEED_STATE_PREFIX"
DEFAULT_REDIS = "127.0.0.1:6379"
DEFAULT_PREFIX = "newsfeed"
SEEN_LIMIT = 2_000
SEEN_TTL_DAYS = 30.0
EVENT_ID_TTL_DAYS = 7.0
COMMENT_REVIVAL_DAYS = 1.0
"""A seen post comes back for comments made within this long before the request (older
activity is no news)."""
TIMEOUT_SECONDS = 0.5  # a store that answers later than this is down, as far as a request is concerned
EMPTY = np.zeros(0, np.int64)


class StateError(NewsfeedError, ConnectionError):
    """The user-state store cannot be read or written (its address or file is named)."""


@dataclass(frozen=True)
class UserSnapshot:
    seen: np.ndarray = field(default_factory=lambda: EMPTY)
    hidden: np.ndarray = field(default_factory=lambda: EMPTY)
    blocked_authors: np.ndarray = field(default_factory=lambda: EMPTY)
    new_comments: dict[int, np.ndarray] = field(default_factory=dict)  # seen post -> who commented since (not the user)


@dataclass(frozen=True)
class Limits:
    seen_limit: int = SEEN_LIMIT
    seen_ttl_seconds: float = SEEN_TTL_DAYS * 86_400
    event_id_ttl_seconds: float = EVENT_ID_TTL_DAYS * 86_400
    comment_revival_seconds: float = COMMENT_REVIVAL_DAYS * 86_400


class UserState(Protocol):
    where: str  # the store's address or file, for messages

    def read(self, user_id: int, now_unix: float) -> UserSnapshot: ...

    def mark_seen(self, user_id: int, post_ids: np.ndarray, now_unix: float) -> None: ...

    def add_hidden(self, users: np.ndarray, posts: np.ndarray) -> None: ...

    def add_blocked(self, users: np.ndarray, authors: np.ndarray) -> None: ...

    def add_comments(self, posts: np.ndarray, users: np.ndarray, when_unix: np.ndarray) -> None:
        """Who commented on which post, and when (the latest per commenter counts)."""
        ...

    def load_seen(self, users: np.ndarray, posts: np.ndarray, when_unix: np.ndarray) -> None: ...

    def claim_events(self, event_ids: list[str]) -> list[bool]: ...

    def release_events(self, event_ids: list[str]) -> None: ...

    def increment(self, post_ids: np.ndarray, reaction: np.ndarray, counts: np.ndarray,
                  base: np.ndarray) -> np.ndarray: ...

    def counters(self, reactions: tuple[str, ...]) -> dict[str, tuple[np.ndarray, np.ndarray]]: ...

    def marks(self) -> set[str]: ...

    def mark(self, mark: str) -> None: ...

    def anchor(self, name: str, proposed: float, replace: bool = False) -> float:
        """The value stored under ``name``, storing ``proposed`` if there is none or ``replace``
        (the first writer wins: e.g. when a replayed clock started, so every replica keeps one time)."""
        ...

    def stored(self, name: str) -> float | None:
        """The value stored under ``name`` (None: none yet), without writing."""
        ...

    def reset(self) -> None: ...

    def exclusive(self, name: str, timeout: float = 600.0): ...

    def ping(self) -> None: ...


# -- embedded: one sqlite file under the home --------------------------------------------------

SCHEMA = """
CREATE TABLE IF NOT EXISTS seen (user_id INTEGER, post_id INTEGER, ts REAL, PRIMARY KEY (user_id, post_id))
    WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS hidden (user_id INTEGER, post_id INTEGER, PRIMARY KEY (user_id, post_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS blocked (user_id INTEGER, author_id INTEGER, PRIMARY KEY (user_id, author_id))
    WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS counters (post_id INTEGER, reaction TEXT, count INTEGER,
    PRIMARY KEY (post_id, reaction)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS event_ids (event_id TEXT PRIMARY KEY, expires REAL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS event_ids_expiry ON event_ids (expires);
CREATE TABLE IF NOT EXISTS marks (mark TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS comments (post_id INTEGER, user_id INTEGER, ts REAL, PRIMARY KEY (post_id, user_id))
    WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS anchors (name TEXT PRIMARY KEY, value REAL) WITHOUT ROWID;
"""


class SqliteUserState:
    """``<home>/serving/user_state.sqlite``: WAL, one connection per thread; sqlite serialises
    writers across processes, which is what keeps counters and event ids exact."""

    def __init__(self, path: Path, limits: Limits = Limits()):
        self.path, self.limits, self.where = Path(path), limits, str(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._db() as db:
            db.executescript(SCHEMA)

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            try:
                db = sqlite3.connect(self.path, timeout=10, isolation_level=None, check_same_thread=False)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
            except sqlite3.Error as err:
                raise StateError(f"cannot open the user-state file {self.path}: {err}") from None
            self._local.db = db
        return db

    def _write(self, statements: list[tuple[str, list]]) -> None:
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            for sql, rows in statements:
                db.executemany(sql, rows)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def read(self, user_id: int, now_unix: float) -> UserSnapshot:
        db, u = self._db(), int(user_id)
        column = lambda sql, *args: np.fromiter((r[0] for r in db.execute(sql, args)), np.int64)  # noqa: E731
        return UserSnapshot(
            seen=column("SELECT post_id FROM seen WHERE user_id = ? AND ts >= ?", u,
                        now_unix - self.limits.seen_ttl_seconds),
            hidden=column("SELECT post_id FROM hidden WHERE user_id = ?", u),
            blocked_authors=column("SELECT author_id FROM blocked WHERE user_id = ?", u),
            new_comments=_grouped(db.execute(
                "SELECT s.post_id, c.user_id FROM seen s JOIN comments c ON c.post_id = s.post_id "
                "WHERE s.user_id = ? AND s.ts >= ? AND c.ts > s.ts AND c.ts >= ? AND c.user_id != ?",
                (u, now_unix - self.limits.seen_ttl_seconds, now_unix - self.limits.comment_revival_seconds,
                 u)).fetchall()))

    def mark_seen(self, user_id: int, post_ids: np.ndarray, now_unix: float) -> None:
        u = int(user_id)
        self._write([
            ("INSERT OR REPLACE INTO seen VALUES (?, ?, ?)", [(u, int(p), float(now_unix)) for p in post_ids]),
            ("DELETE FROM seen WHERE user_id = ? AND post_id IN (SELECT post_id FROM seen WHERE user_id = ? "
             "ORDER BY ts DESC LIMIT -1 OFFSET ?)", [(u, u, self.limits.seen_limit)]),
        ])

    def load_seen(self, users: np.ndarray, posts: np.ndarray, when_unix: np.ndarray) -> None:
        """Bulk history (older entries never replace newer ones); trimmed per user afterwards."""
        rows = list(zip(np.asarray(users, np.int64).tolist(), np.asarray(posts, np.int64).tolist(),
                        np.asarray(when_unix, np.float64).tolist()))
        self._write([
            ("INSERT INTO seen VALUES (?, ?, ?) ON CONFLICT (user_id, post_id) DO UPDATE SET ts = max(ts, excluded.ts)",
             rows),
            ("DELETE FROM seen WHERE (user_id, post_id) IN (SELECT user_id, post_id FROM (SELECT user_id, post_id, "
             "row_number() OVER (PARTITION BY user_id ORDER BY ts DESC) AS n FROM seen) WHERE n > ?)",
             [(self.limits.seen_limit,)]),
        ])

    def add_hidden(self, users: np.ndarray, posts: np.ndarray) -> None:
        self._write([("INSERT OR IGNORE INTO hidden VALUES (?, ?)", _pairs(users, posts))])

    def add_blocked(self, users: np.ndarray, authors: np.ndarray) -> None:
        self._write([("INSERT OR IGNORE INTO blocked VALUES (?, ?)", _pairs(users, authors))])

    def add_comments(self, posts: np.ndarray, users: np.ndarray, when_unix: np.ndarray) -> None:
        rows = list(zip(np.asarray(posts, np.int64).tolist(), np.asarray(users, np.int64).tolist(),
                        np.asarray(when_unix, np.float64).tolist()))
        self._write([("INSERT INTO comments VALUES (?, ?, ?) ON CONFLICT (post_id, user_id) "
                      "DO UPDATE SET ts = max(ts, excluded.ts)", rows)])

    def claim_events(self, event_ids: list[str]) -> list[bool]:
        db, now = self._db(), time.time()
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("DELETE FROM event_ids WHERE expires < ?", (now,))
            new = []
            for event_id in event_ids:
                db.execute("INSERT OR IGNORE INTO event_ids VALUES (?, ?)",
                           (event_id, now + self.limits.event_id_ttl_seconds))
                new.append(db.execute("SELECT changes()").fetchone()[0] == 1)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return new

    def release_events(self, event_ids: list[str]) -> None:
        self._write([("DELETE FROM event_ids WHERE event_id = ?", [(i,) for i in event_ids])])

    def increment(self, post_ids, reaction, counts, base) -> np.ndarray:
        """Add ``counts`` to each (post, reaction) counter, starting from ``base`` where the
        store has none yet; return the totals after the increment."""
        keys = list(zip(np.asarray(post_ids, np.int64).tolist(), [str(r) for r in reaction]))
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany("INSERT OR IGNORE INTO counters VALUES (?, ?, ?)",
                           [(p, r, int(b)) for (p, r), b in zip(keys, base)])
            db.executemany("UPDATE counters SET count = count + ? WHERE post_id = ? AND reaction = ?",
                           [(int(n), p, r) for (p, r), n in zip(keys, counts)])
            totals = [db.execute("SELECT count FROM counters WHERE post_id = ? AND reaction = ?", k).fetchone()[0]
                      for k in keys]
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return np.asarray(totals, np.int64)

    def counters(self, reactions: tuple[str, ...]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        out = {}
        for r in reactions:
            rows = self._db().execute("SELECT post_id, count FROM counters WHERE reaction = ?", (r,)).fetchall()
            out[r] = (np.array([p for p, _ in rows], np.int64), np.array([c for _, c in rows], np.int64))
        return out

    def marks(self) -> set[str]:
        return {row[0] for row in self._db().execute("SELECT mark FROM marks")}

    def mark(self, mark: str) -> None:
        self._write([("INSERT OR IGNORE INTO marks VALUES (?)", [(mark,)])])

    def anchor(self, name: str, proposed: float, replace: bool = False) -> float:
        verb = "REPLACE" if replace else "IGNORE"
        self._write([(f"INSERT OR {verb} INTO anchors VALUES (?, ?)", [(name, float(proposed))])])
        return float(self._db().execute("SELECT value FROM anchors WHERE name = ?", (name,)).fetchone()[0])

    def stored(self, name: str) -> float | None:
        try:
            row = self._db().execute("SELECT value FROM anchors WHERE name = ?", (name,)).fetchone()
        except sqlite3.Error as err:
            raise StateError(f"cannot read the user-state file {self.path}: {err}") from None
        return None if row is None else float(row[0])

    def reset(self) -> None:
        """Forget every user's state, the counters and the marks (another dataset is served)."""
        self._write([(f"DELETE FROM {table}", [()])
                     for table in ("seen", "hidden", "blocked", "counters", "marks", "comments")])

    @contextmanager
    def exclusive(self, name: str, timeout: float = 600.0):
        """One holder at a time across this home's processes (a file lock beside the store)."""
        with open(self.path.with_name(f".{self.path.name}.{name}.lock"), "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def ping(self) -> None:
        self._db().execute("SELECT 1").fetchone()


def _grouped(pairs) -> dict[int, np.ndarray]:
    """(post, commenter) pairs -> post -> its commenters."""
    out: dict[int, list[int]] = {}
    for post, user in pairs:
        out.setdefault(int(post), []).append(int(user))
    return {post: np.asarray(users, np.int64) for post, users in out.items()}


def _pairs(a: np.ndarray, b: np.ndarray) -> list[tuple[int, int]]:
    return list(zip(np.asarray(a, np.int64).tolist(), np.asarray(b, np.int64).tolist()))


# -- production: Redis -----------------------------------------------------------------------

def no_retry():
    """redis-py retries a failed command with backoff for seconds by default: a request must
    learn within its timeout that the store is down, and degrade."""
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return Retry(NoBackoff(), 0)


READ_SCRIPT = """
-- KEYS: seen, hidden, blocked, last_comment; ARGV: oldest seen time, comments key prefix, user,
-- oldest comment that revives a post
local seen = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], '+inf', 'WITHSCORES')
local ids, commented = {}, {}
for i = 1, #seen, 2 do ids[#ids + 1] = seen[i] end
if #ids > 0 then
  local last = redis.call('ZMSCORE', KEYS[4], unpack(ids))
  for i = 1, #ids do
    -- after the user saw it (exclusive), and within the window (inclusive)
    local saw, window = tonumber(seen[2 * i]), tonumber(ARGV[4])
    local from = window > saw and ARGV[4] or ('(' .. seen[2 * i])
    if last[i] and tonumber(last[i]) > saw and tonumber(last[i]) >= window then
      local who = redis.call('ZRANGEBYSCORE', ARGV[2] .. ids[i], from, '+inf')
      local others = {}
      for _, u in ipairs(who) do if u ~= ARGV[3] then others[#others + 1] = u end end
      if #others > 0 then
        commented[#commented + 1] = ids[i]
        commented[#commented + 1] = table.concat(others, ',')
      end
    end
  end
end
return {ids, redis.call('SMEMBERS', KEYS[2]), redis.call('SMEMBERS', KEYS[3]), commented}
"""
"""A user's state in one round trip: seen, hidden, blocked, and the seen posts commented on by
others since the user saw them (``last_comment`` narrows the look to posts commented on after
the user's time; only those read their commenters)."""


class RedisUserState:
    """Keys under ``<prefix>:``: ``seen:<user>`` (sorted set, scored by when), ``hidden:<user>``,
    ``blocked:<user>`` (sets), ``count:<reaction>`` (a hash post -> count), ``event:<id>``
    (expiring), ``marks`` (a set)."""

    def __init__(self, address: str = DEFAULT_REDIS, prefix: str = DEFAULT_PREFIX, limits: Limits = Limits(),
                 timeout: float = TIMEOUT_SECONDS):
        import redis

        host, _, port = address.partition(":")
        self.where, self.prefix, self.limits = f"Redis at {address}", prefix, limits
        self.client = redis.Redis(host=host or "127.0.0.1", port=int(port or 6379), socket_timeout=timeout,
                                  socket_connect_timeout=timeout, health_check_interval=30,
                                  retry=no_retry())
        self._errors = (redis.RedisError, OSError)
        self._read_script = self.client.register_script(READ_SCRIPT)

    def key(self, *parts) -> str:
        return ":".join((self.prefix, *map(str, parts)))

    def _run(self, build) -> list:
        """One round trip: the commands ``build(pipeline)`` queues, sent together."""
        try:
            pipe = self.client.pipeline(transaction=True)
            build(pipe)
            return pipe.execute()
        except self._errors as err:
            raise StateError(f"the user-state store ({self.where}) cannot be reached: {err}") from None

    def read(self, user_id: int, now_unix: float) -> UserSnapshot:
        u = int(user_id)
        keys = [self.key("seen", u), self.key("hidden", u), self.key("blocked", u), self.key("last_comment")]
        try:  # one round trip: the script runs next to the data
            seen, hidden, blocked, commented = self._read_script(
                keys=keys, args=[now_unix - self.limits.seen_ttl_seconds, self.key("comments", ""), u,
                                 now_unix - self.limits.comment_revival_seconds])
        except self._errors as err:
            raise StateError(f"the user-state store ({self.where}) cannot be reached: {err}") from None
        as_ids = lambda values: np.fromiter((int(v) for v in values), np.int64, len(values))  # noqa: E731
        new_comments = {int(post): as_ids(who.split(b",")) for post, who in zip(commented[::2], commented[1::2])}
        return UserSnapshot(as_ids(seen), as_ids(hidden), as_ids(blocked), new_comments)

    def mark_seen(self, user_id: int, post_ids: np.ndarray, now_unix: float) -> None:
        if not len(post_ids):
            return
        key = self.key("seen", int(user_id))
        self._run(lambda p: (p.zadd(key, {int(i): float(now_unix) for i in post_ids}),
                             p.zremrangebyrank(key, 0, -self.limits.seen_limit - 1),
                             p.expire(key, int(self.limits.seen_ttl_seconds))))

    def load_seen(self, users: np.ndarray, posts: np.ndarray, when_unix: np.ndarray) -> None:
        users, posts, when = (np.asarray(a) for a in (users, posts, when_unix))
        order = np.lexsort((when, users))
        grouped: dict[int, dict[int, float]] = {}
        for u, p, t in zip(users[order].tolist(), posts[order].tolist(), when[order].tolist()):
            grouped.setdefault(u, {})[p] = t  # time order: the newest showing of a post wins
        items = list(grouped.items())
        for start in range(0, len(items), 500):
            def queue(p, chunk=items[start:start + 500]):
                for u, mapping in chunk:
                    key = self.key("seen", u)
                    p.zadd(key, mapping, gt=True)
                    p.zremrangebyrank(key, 0, -self.limits.seen_limit - 1)
                    p.expire(key, int(self.limits.seen_ttl_seconds))
            self._run(queue)

    def _add_sets(self, kind: str, users: np.ndarray, values: np.ndarray) -> None:
        from newsfeed.feed.activity import group_by_key

        grouped = group_by_key(np.asarray(users, np.int64), np.asarray(values, np.int64))
        if grouped:
            self._run(lambda p: [p.sadd(self.key(kind, u), *v.tolist()) for u, v in grouped.items()])

    def add_hidden(self, users: np.ndarray, posts: np.ndarray) -> None:
        self._add_sets("hidden", users, posts)

    def add_blocked(self, users: np.ndarray, authors: np.ndarray) -> None:
        self._add_sets("blocked", users, authors)

    def add_comments(self, posts: np.ndarray, users: np.ndarray, when_unix: np.ndarray) -> None:
        rows = list(zip(np.asarray(posts, np.int64).tolist(), np.asarray(users, np.int64).tolist(),
                        np.asarray(when_unix, np.float64).tolist()))
        ttl = int(self.limits.seen_ttl_seconds)  # a comment older than anything seen can revive nothing
        for start in range(0, len(rows), 1_000):
            def queue(p, chunk=rows[start:start + 1_000]):
                for post, user, when in chunk:
                    p.zadd(self.key("comments", post), {user: when}, gt=True)
                    p.expire(self.key("comments", post), ttl)
                    p.zadd(self.key("last_comment"), {post: when}, gt=True)
            self._run(queue)

    def claim_events(self, event_ids: list[str]) -> list[bool]:
        ttl = int(self.limits.event_id_ttl_seconds)
        replies = self._run(lambda p: [p.set(self.key("event", i), 1, nx=True, ex=ttl) for i in event_ids])
        return [bool(r) for r in replies]

    def release_events(self, event_ids: list[str]) -> None:
        if event_ids:
            self._run(lambda p: p.delete(*(self.key("event", i) for i in event_ids)))

    def increment(self, post_ids, reaction, counts, base) -> np.ndarray:
        keys = list(zip(np.asarray(post_ids, np.int64).tolist(), [str(r) for r in reaction]))

        def queue(p):
            for (post, r), n, b in zip(keys, counts, base):
                p.hsetnx(self.key("count", r), post, int(b))
                p.hincrby(self.key("count", r), post, int(n))
        replies = self._run(queue)  # MULTI/EXEC: each pair applied together
        return np.asarray(replies[1::2], np.int64)

    def counters(self, reactions: tuple[str, ...]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        tables = self._run(lambda p: [p.hgetall(self.key("count", r)) for r in reactions])
        return {r: (np.fromiter((int(k) for k in t), np.int64, len(t)),
                    np.fromiter((int(v) for v in t.values()), np.int64, len(t)))
                for r, t in zip(reactions, tables)}

    def marks(self) -> set[str]:
        return {m.decode() for m in self._run(lambda p: p.smembers(self.key("marks")))[0]}

    def mark(self, mark: str) -> None:
        self._run(lambda p: p.sadd(self.key("marks"), mark))

    def anchor(self, name: str, proposed: float, replace: bool = False) -> float:
        key = self.key("anchor", name)
        return float(self._run(lambda p: (p.set(key, repr(float(proposed)), nx=not replace), p.get(key)))[1])

    def stored(self, name: str) -> float | None:
        value = self._run(lambda p: p.get(self.key("anchor", name)))[0]
        return None if value is None else float(value)

    def reset(self) -> None:
        """Forget every user's state, the counters and the marks (the experiment stays)."""
        try:
            for kind in ("seen", "hidden", "blocked", "count", "comments"):
                batch = list(self.client.scan_iter(match=self.key(kind, "*"), count=1_000))
                for start in range(0, len(batch), 1_000):
                    self.client.delete(*batch[start:start + 1_000])
            self.client.delete(self.key("marks"), self.key("last_comment"))
        except self._errors as err:
            raise StateError(f"the user-state store ({self.where}) cannot be reached: {err}") from None

    @contextmanager
    def exclusive(self, name: str, timeout: float = 600.0):
        """One holder at a time across replicas and nodes: a Redis key set if absent, with an
        expiry so a holder that died releases it."""
        key, token, deadline = self.key("lock", name), os.urandom(8).hex(), time.monotonic() + timeout
        while not self._run(lambda p: p.set(key, token, nx=True, ex=int(timeout)))[0]:
            if time.monotonic() > deadline:
                raise StateError(f"{key} in {self.where} held for more than {timeout:g} s")
            time.sleep(0.1)
        try:
            yield
        finally:
            if self._run(lambda p: p.get(key))[0] == token.encode():
                self._run(lambda p: p.delete(key))

    def ping(self) -> None:
        self._run(lambda p: p.ping())


# -- choosing one ----------------------------------------------------------------------------------

def state_kind(kind: str | None = None) -> str:
    kind = kind or os.environ.get(STATE_ENV) or "embedded"
    if kind not in STATE_KINDS:
        raise NewsfeedError(f"--state {kind!r}: expected one of {', '.join(STATE_KINDS)}")
    return kind


def state_file(home: Path) -> Path:
    return Path(home).resolve() / "serving" / "user_state.sqlite"


def open_user_state(home: Path, kind: str | None = None, check: bool = False) -> UserState:
    """The embedded file under ``home``, or Redis at ``NEWSFEED_REDIS`` (keys under
    ``NEWSFEED_STATE_PREFIX``). ``check``: ping first, and name the address if it fails."""
    if state_kind(kind) == "embedded":
        return SqliteUserState(state_file(home))
    address = os.environ.get(REDIS_ENV) or DEFAULT_REDIS
    state = RedisUserState(address, os.environ.get(PREFIX_ENV) or DEFAULT_PREFIX)
    if check:
        try:
            state.ping()
        except StateError as err:
            raise ServiceUnreachable(f"cannot reach the user-state store (Redis) at {address}: "
                                     f"{str(err).rpartition(': ')[2]}") from None
    return state
