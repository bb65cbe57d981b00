"""The leaderboard cache: Redis sorted sets in the scale-out shape, in-process otherwise.

Both implementations hold every board ``(type, timeframe)`` as ranked entries with pre-encoded
JSON, are written through on every result, and rebuild a cold board from SQL (through a
``Loader``) with a lock so that only one rebuild runs at a time. Entries awaiting forward
results (headline board) are held apart and listed after every ranked entry, without a rank.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from farm.leaderboard.schemas import BoardType, Metric, Timeframe

log = logging.getLogger("farm.leaderboard")

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MEMBER_PREFIX = 16
DEFAULT_TTL_S = 300.0
"""Seconds a board is served before it is rebuilt from SQL (both caches)."""


@dataclass(frozen=True, slots=True)
class Board:
    """One ranked population: a board type over a timeframe (every metric ranks it)."""

    type: BoardType
    timeframe: Timeframe


@dataclass(frozen=True, slots=True)
class Ranked:
    """An agent's entry as the cache holds it.

    ``details`` is the JSON of the row without ``rank``, ``metric`` and ``metricType`` (object
    members, no braces), so a page is assembled from bytes without encoding anything. An
    ``awaiting`` entry has no scores: it is listed after the ranked ones, in submission order.
    """

    agent_id: str
    submitted_at: datetime
    evaluated_at: datetime
    boards: tuple[Board, ...]
    scores: Mapping[Metric, float]
    details: bytes
    awaiting: bool = False

    @property
    def member(self) -> str:
        """Sort key for equal scores, best first when descending: earlier submission, then
        higher agent id (the SQL fallback orders the same way)."""
        micros = (self.submitted_at - EPOCH) // timedelta(microseconds=1)
        return f"{10**MEMBER_PREFIX - micros:0{MEMBER_PREFIX}d}{self.agent_id}"


@dataclass(frozen=True, slots=True)
class Page:
    """The best entries of a board: the JSON array's items and when the board last changed."""

    rows: bytes
    updated_at: str


@dataclass(frozen=True, slots=True)
class RankHit:
    """An agent's place on a board (``rank`` and ``score`` None while it awaits)."""

    rank: int | None
    score: float | None
    total: int


Loader = Callable[[Board], list[Ranked]]
"""Reads every entry of a board from SQL (the source of truth)."""


class _Cold:
    """A board that is not in the cache yet."""


COLD = _Cold()
T = TypeVar("T")


class CacheUnavailable(Exception):
    """The cache cannot answer; serve from SQL."""


class LeaderboardCache(Protocol):
    """Ranked boards served from memory; SQL stays the source of truth."""

    def page(self, board: Board, metric: Metric, limit: int, load: Loader) -> Page:
        """The best ``limit`` entries, rebuilding a cold board with ``load`` first."""

    def rank(self, board: Board, metric: Metric, agent_id: str, load: Loader) -> RankHit | None:
        """Where ``agent_id`` stands, or None if the board does not rank it."""

    def put(self, entries: Sequence[Ranked]) -> None:
        """Write new or updated entries through to every board they belong to."""

    def remove(self, agent_id: str) -> None:
        """Drop an agent from every board."""

    def close(self) -> None:
        """Release connections."""

    def health(self) -> tuple[str, str]:
        """``(backend name, "ok" or "down: why")`` for ``GET /health``."""


def now_iso() -> str:
    """The current UTC time as ISO 8601."""
    return datetime.now(UTC).isoformat()


def score_of(metric: Metric, value: float) -> float:
    """The sort score: higher is always better (``max_drawdown`` is negated, never to -0.0)."""
    return value if metric.higher_is_better else 0.0 - value


def render_row(rank: int, metric: Metric, value: float, details: bytes) -> bytes:
    """One row of a page: rank and metric in front of the pre-encoded details."""
    return b'{"rank":%d,"metric":%s,"metricType":"%s",%s}' % (
        rank,
        repr(value).encode(),
        metric.value.encode(),
        details,
    )


def render_awaiting(metric: Metric, details: bytes) -> bytes:
    """One row awaiting forward results: no rank, no ranked value."""
    return b'{"rank":null,"metric":null,"metricType":"%s",%s}' % (metric.value.encode(), details)


def render_page(board_type: BoardType, rows: bytes, updated_at: str, source: str) -> bytes:
    """The whole ``GET /api/leaderboard`` body."""
    return b'{"type":"%s","inSample":%s,"leaderboard":[%s],"updated_at":%s,"source":"%s"}' % (
        board_type.value.encode(),
        b"true" if board_type.in_sample else b"false",
        rows,
        json.dumps(updated_at).encode(),
        source.encode(),
    )


def _expiry(entry: Ranked, board: Board) -> float | None:
    window = board.timeframe.window
    return None if window is None else (entry.evaluated_at + window).timestamp()


# --- Redis -------------------------------------------------------------------------------------

# Scripts address a board's keys in one layout: seven named keys (see ``_Keys.read``), then
# every metric's sorted set, then every metric's value hash (``m`` of each).
_PRUNE = """
local function prune(now)
  local m = (#KEYS - 7) / 2
  while true do
    local gone = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', '(' .. now, 'LIMIT', 0, 500)
    if #gone == 0 then return end
    for i = 8, 7 + m do redis.call('ZREM', KEYS[i], unpack(gone)) end
    for i = 8 + m, #KEYS do redis.call('HDEL', KEYS[i], unpack(gone)) end
    redis.call('HDEL', KEYS[3], unpack(gone))
    redis.call('ZREM', KEYS[4], unpack(gone))
    redis.call('ZREM', KEYS[7], unpack(gone))
    local ids = {}
    for i, member in ipairs(gone) do ids[i] = string.sub(member, MEMBER_START) end
    redis.call('HDEL', KEYS[5], unpack(ids))
  end
end
""".replace("MEMBER_START", str(MEMBER_PREFIX + 1))

# KEYS: meta, metric zset, rows, expiries, ids, metric values, awaiting, ... ARGV: now, last
# index, metric, the version the caller holds. Returns the version alone when the caller's is
# current, else the version, the page's rows as one JSON fragment (rank in front; awaiting rows
# after the ranked ones) and the next expiry.
_PAGE = (
    _PRUNE
    + """
local updated = redis.call('GET', KEYS[1])
if not updated then return false end
if updated == ARGV[4] then return {updated} end
prune(ARGV[1])
local members = redis.call('ZREVRANGE', KEYS[2], 0, tonumber(ARGV[2]))
local after = redis.call('ZRANGE', KEYS[4], 0, 0, 'WITHSCORES')[2] or ''
local out = {}
if #members > 0 then
  local rows = redis.call('HMGET', KEYS[3], unpack(members))
  local values = redis.call('HMGET', KEYS[6], unpack(members))
  for i = 1, #members do
    if rows[i] and values[i] then
      local n = #out + 1
      out[n] = '{"rank":' .. n .. ',"metric":' .. values[i] .. ',"metricType":"' .. ARGV[3]
        .. '",' .. rows[i] .. '}'
    end
  end
end
local room = tonumber(ARGV[2]) + 1 - #out
if room > 0 then
  local waiting = redis.call('ZREVRANGE', KEYS[7], 0, room - 1)
  if #waiting > 0 then
    local rows = redis.call('HMGET', KEYS[3], unpack(waiting))
    for i = 1, #waiting do
      if rows[i] then
        out[#out + 1] = '{"rank":null,"metric":null,"metricType":"' .. ARGV[3] .. '",' .. rows[i]
          .. '}'
      end
    end
  end
end
return {updated, table.concat(out, ','), after}
"""
)

# Same KEYS. ARGV: now, agent id. Returns the version alone (not on the board), with the
# total when the agent awaits, or with its 0-based rank, value and the total.
_RANK = (
    _PRUNE
    + """
local updated = redis.call('GET', KEYS[1])
if not updated then return false end
prune(ARGV[1])
local member = redis.call('HGET', KEYS[5], ARGV[2])
if not member then return {updated} end
local total = redis.call('ZCARD', KEYS[2])
if redis.call('ZSCORE', KEYS[7], member) then return {updated, total} end
local rank = redis.call('ZREVRANK', KEYS[2], member)
if not rank then return {updated} end
return {updated, rank, redis.call('HGET', KEYS[6], member), total}
"""
)

# KEYS: per board, meta, rows, expiries, ids, epoch, awaiting, every metric zset, every value
# hash (ARGV[3] keys per board). ARGV: agent id, now (ISO), keys per board. One call for every
# board: their keys share a hash tag, so this runs on a Redis Cluster too.
_REMOVE = """
local n = tonumber(ARGV[3])
local m = (n - 6) / 2
local removed = 0
for b = 0, #KEYS - n, n do
  local member = redis.call('HGET', KEYS[b + 4], ARGV[1])
  if member then
    for i = b + 7, b + 6 + m do redis.call('ZREM', KEYS[i], member) end
    for i = b + 7 + m, b + n do redis.call('HDEL', KEYS[i], member) end
    redis.call('HDEL', KEYS[b + 2], member)
    redis.call('ZREM', KEYS[b + 3], member)
    redis.call('ZREM', KEYS[b + 6], member)
    redis.call('HDEL', KEYS[b + 4], ARGV[1])
    redis.call('INCR', KEYS[b + 5])
    redis.call('SET', KEYS[b + 1], ARGV[2], 'XX', 'KEEPTTL')
    removed = removed + 1
  end
end
return removed
"""

_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

ALL_BOARDS = tuple(Board(t, tf) for t in BoardType for tf in Timeframe)


@dataclass(frozen=True, slots=True)
class _Keys:
    meta: str
    rows: str
    expiries: str
    ids: str
    epoch: str
    lock: str
    awaiting: str
    metrics: dict[Metric, str]
    values: dict[Metric, str]

    @classmethod
    def of(cls, prefix: str, board: Board, rules: str) -> _Keys:
        """The board's keys; every key of every board carries the hash tag ``{prefix}``, so
        they share one Redis Cluster slot (scripts and transactions may span boards)."""
        kind = board.type.value
        if board.type is BoardType.HEADLINE and rules:
            kind = f"{kind}@{rules}"
        base = f"{{{prefix}}}:{kind}:{board.timeframe.value}"
        return cls(
            meta=f"{base}:meta",
            rows=f"{base}:rows",
            expiries=f"{base}:exp",
            ids=f"{base}:ids",
            epoch=f"{base}:epoch",
            lock=f"{base}:lock",
            awaiting=f"{base}:await",
            metrics={m: f"{base}:z:{m.value}" for m in Metric},
            values={m: f"{base}:v:{m.value}" for m in Metric},
        )

    def read(self, metric: Metric) -> list[str]:
        """KEYS of the page and rank scripts."""
        head = [self.meta, self.metrics[metric], self.rows, self.expiries, self.ids]
        head += [self.values[metric], self.awaiting]
        return [*head, *self.metrics.values(), *self.values.values()]

    def remove(self) -> list[str]:
        """KEYS of the remove script."""
        head = [self.meta, self.rows, self.expiries, self.ids, self.epoch, self.awaiting]
        return [*head, *self.metrics.values(), *self.values.values()]

    def data(self) -> list[str]:
        """Every key a rebuild replaces."""
        head = [self.meta, self.rows, self.expiries, self.ids, self.awaiting]
        return [*head, *self.metrics.values(), *self.values.values()]


MEMO_SIZE = 256


@dataclass(frozen=True, slots=True)
class _Memo:
    """A page as last read, valid while the board's version is unchanged and nothing in it has
    aged out of its window (``fresh_until``, epoch seconds)."""

    version: bytes
    page: Page
    fresh_until: float


class RedisLeaderboardCache:
    """Boards as Redis sorted sets (one per metric) plus a hash of pre-encoded rows.

    Per board: ``z:<metric>`` (score higher-is-better, member = tie-break prefix + agent id),
    ``rows`` (member -> row JSON), ``ids`` (agent id -> member), ``await`` (members awaiting
    forward results, listed after the ranked ones), ``exp`` (member -> when it leaves a windowed
    board; pruned on read), ``meta`` (last change; absent = cold), ``epoch`` (bumped by every
    write, so a rebuild racing a write retries) and ``lock``. Headline boards' keys carry
    ``rules`` (e.g. ``n20``, the forward bars required), so boards built under other rules are
    never served.

    A page is one script call. The process keeps the last bytes of each page it served and
    sends their version (``meta``); Redis answers with the version alone when it is current,
    so a hot page costs one tiny round trip and no encoding.

    When Redis fails the cache answers ``CacheUnavailable`` without retrying for ``retry_s``,
    logs one warning per outage, and on recovery marks every board cold: writes missed during
    the outage are then rebuilt from SQL.

    ``meta`` expires ``ttl_s`` seconds after a rebuild (writes keep its expiry), so every board
    is rebuilt from SQL at least that often: an event another process missed cannot leave a
    board stale for longer. Every key shares one hash tag, so the cache runs on a Redis Cluster
    (``cluster=True``) as on a single server.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "farm:lb",
        rules: str = "",
        ttl_s: float = DEFAULT_TTL_S,
        cluster: bool = False,
        retry_s: float = 1.0,
        lock_ms: int = 30_000,
        wait_s: float = 10.0,
    ) -> None:
        options: dict[str, Any] = {
            "socket_connect_timeout": 0.5,
            "socket_timeout": 2.0,
            "retry": Retry(NoBackoff(), 1),
        }
        self._redis: Any = (
            redis.RedisCluster.from_url(url, **options)
            if cluster
            else redis.Redis.from_url(url, health_check_interval=0, **options)
        )
        self._ttl_ms = max(1, int(ttl_s * 1000))
        self._retry_s = retry_s
        self._lock_ms = lock_ms
        self._wait_s = wait_s
        self._keys = {board: _Keys.of(prefix, board, rules) for board in ALL_BOARDS}
        self._page_script = self._redis.register_script(_PAGE)
        self._rank_script = self._redis.register_script(_RANK)
        self._remove_script = self._redis.register_script(_REMOVE)
        self._unlock_script = self._redis.register_script(_UNLOCK)
        self._memo: dict[tuple[Board, Metric, int], _Memo] = {}
        self._state = threading.Lock()
        self._down = False
        self._retry_at = 0.0

    def page(self, board: Board, metric: Metric, limit: int, load: Loader) -> Page:
        return self._guarded(
            lambda: self._warm(lambda: self._page(board, metric, limit), board, load)
        )

    def rank(self, board: Board, metric: Metric, agent_id: str, load: Loader) -> RankHit | None:
        return self._guarded(
            lambda: self._warm(lambda: self._rank(board, metric, agent_id), board, load)
        )

    def put(self, entries: Sequence[Ranked]) -> None:
        self._guarded(lambda: self._put(entries))

    def remove(self, agent_id: str) -> None:
        self._guarded(lambda: self._remove(agent_id))

    def close(self) -> None:
        self._redis.close()

    def health(self) -> tuple[str, str]:
        try:
            self._redis.ping()
        except redis.RedisError as exc:
            return "cache:redis", f"down: {exc}"
        return "cache:redis", "ok"

    # Reads: one round trip (a Lua script prunes aged entries and reads).

    def _page(self, board: Board, metric: Metric, limit: int) -> Page | _Cold:
        """One round trip; the rows come back only if the board changed since the memo."""
        key = (board, metric, limit)
        now = time.time()
        memo = self._memo.get(key)
        held = memo.version if memo is not None and now < memo.fresh_until else b""
        args = [now, limit - 1, metric.value, held]
        found = self._page_script(keys=self._keys[board].read(metric), args=args)
        if found is None:
            return COLD
        if len(found) == 1 and memo is not None:
            return memo.page
        version, rows, after = found
        memo = _Memo(version, Page(rows, version.decode()), float(after or "inf"))
        if len(self._memo) >= MEMO_SIZE:
            self._memo.clear()
        self._memo[key] = memo
        return memo.page

    def _rank(self, board: Board, metric: Metric, agent_id: str) -> RankHit | _Cold | None:
        keys = self._keys[board]
        found = self._rank_script(keys=keys.read(metric), args=[time.time(), agent_id])
        if found is None:
            return COLD
        if len(found) == 1:
            return None
        if len(found) == 2:
            return RankHit(None, None, int(found[1]))
        _, rank, value, total = found
        return RankHit(int(rank) + 1, float(value), int(total))

    # Writes: one transaction per result; every touched board's epoch is bumped.

    def _put(self, entries: Sequence[Ranked]) -> None:
        now = now_iso()
        with self._redis.pipeline(transaction=True) as pipe:
            for board in {board for entry in entries for board in entry.boards}:
                keys = self._keys[board]
                _write(pipe, keys, [e for e in entries if board in e.boards], board)
                pipe.incr(keys.epoch)
                pipe.set(keys.meta, now, xx=True, keepttl=True)
            pipe.execute()

    def _remove(self, agent_id: str) -> None:
        boards = [keys.remove() for keys in self._keys.values()]
        every = [key for keys in boards for key in keys]
        self._remove_script(keys=every, args=[agent_id, now_iso(), len(boards[0])])

    # Cold boards: one rebuild under a lock; concurrent misses wait for it.

    def _warm(self, read: Callable[[], T | _Cold], board: Board, load: Loader) -> T:
        found = read()
        if isinstance(found, _Cold):
            self._rebuild(board, load)
            found = read()
        if isinstance(found, _Cold):
            raise CacheUnavailable(f"the {board.type}/{board.timeframe} board is still cold")
        return found

    def _rebuild(self, board: Board, load: Loader) -> None:
        keys = self._keys[board]
        token = uuid.uuid4().hex
        if not self._redis.set(keys.lock, token, nx=True, px=self._lock_ms):
            deadline = time.monotonic() + self._wait_s
            while time.monotonic() < deadline and not self._redis.exists(keys.meta):
                time.sleep(0.005)
            return
        try:
            for _ in range(3):
                if self._replace(keys, board, load):
                    log.info("leaderboard cache: rebuilt %s/%s", board.type, board.timeframe)
                    return
        finally:
            self._unlock_script(keys=[keys.lock], args=[token])

    def _replace(self, keys: _Keys, board: Board, load: Loader) -> bool:
        """Load the board from SQL and swap it in; False if a write landed meanwhile."""
        with self._redis.pipeline(transaction=True) as pipe:
            pipe.watch(keys.epoch)
            entries = load(board)
            pipe.multi()
            pipe.delete(*keys.data())
            _write(pipe, keys, entries, board)
            pipe.set(keys.meta, now_iso(), px=self._ttl_ms)
            try:
                pipe.execute()
            except redis.WatchError:
                return False
        return True

    # Outages: fail fast, warn once, mark every board cold when Redis is back.

    def _guarded(self, call: Callable[[], T]) -> T:
        with self._state:
            now = time.monotonic()
            if self._down and now < self._retry_at:
                raise CacheUnavailable("Redis is down")
            probing = self._down
            if probing:  # one caller probes; the others keep failing fast meanwhile
                self._retry_at = now + self._retry_s
        try:
            if probing:
                self._redis.delete(*(keys.meta for keys in self._keys.values()))
            found = call()
        except redis.RedisError as exc:
            self._failed(exc)
            raise CacheUnavailable(str(exc)) from exc
        if probing:
            with self._state:
                self._down = False
            log.info("leaderboard cache: Redis is back; boards are rebuilt from SQL")
        return found

    def _failed(self, exc: Exception) -> None:
        with self._state:
            first = not self._down
            self._down = True
            self._retry_at = time.monotonic() + self._retry_s
        if first:
            log.warning(
                "leaderboard cache: Redis is unreachable (%s); serving from SQL until it is back",
                exc,
            )


def _write(pipe: Any, keys: _Keys, entries: Sequence[Ranked], board: Board) -> None:
    """Queue the writes of ``entries`` to one board, a few commands per 1000 entries."""
    for start in range(0, len(entries), 1000):
        chunk = [(e.member, e) for e in entries[start : start + 1000]]
        for metric, key in keys.metrics.items():
            values = {m: e.scores[metric] for m, e in chunk if metric in e.scores}
            absent = [m for m, e in chunk if metric not in e.scores]
            if values:
                pipe.zadd(key, {m: score_of(metric, v) for m, v in values.items()})
                pipe.hset(keys.values[metric], mapping={m: repr(v) for m, v in values.items()})
            if absent:
                pipe.zrem(key, *absent)
                pipe.hdel(keys.values[metric], *absent)
        pipe.hset(keys.rows, mapping={m: e.details for m, e in chunk})
        pipe.hset(keys.ids, mapping={e.agent_id: m for m, e in chunk})
        waiting = {m: 0 for m, e in chunk if e.awaiting}
        if waiting:
            pipe.zadd(keys.awaiting, waiting)
        if len(waiting) < len(chunk):
            pipe.zrem(keys.awaiting, *(m for m, e in chunk if not e.awaiting))
        expiries = {m: x for m, e in chunk if (x := _expiry(e, board)) is not None}
        if expiries:
            pipe.zadd(keys.expiries, expiries)


# --- in-process ----------------------------------------------------------------------------------


@dataclass
class _LocalBoard:
    entries: dict[str, Ranked]
    loaded_at: float
    updated_at: str
    sorted: dict[Metric, list[Ranked]] = field(default_factory=dict)

    waiting: list[Ranked] | None = None

    def ordered(self, metric: Metric) -> list[Ranked]:
        if metric not in self.sorted:
            ranked = [e for e in self.entries.values() if metric in e.scores]
            ranked.sort(key=lambda e: (score_of(metric, e.scores[metric]), e.member), reverse=True)
            self.sorted[metric] = ranked
        return self.sorted[metric]

    def awaiting(self) -> list[Ranked]:
        if self.waiting is None:
            waiting = [e for e in self.entries.values() if e.awaiting]
            self.waiting = sorted(waiting, key=lambda e: e.member, reverse=True)
        return self.waiting

    def changed(self) -> None:
        self.sorted.clear()
        self.waiting = None
        self.updated_at = now_iso()


class InProcessLeaderboardCache:
    """The embedded cache: boards in a dict, reloaded from SQL after ``ttl_s`` or when cold.

    Windowed boards skip entries that aged out of their window at read time.
    """

    def __init__(self, ttl_s: float = DEFAULT_TTL_S) -> None:
        self._ttl_s = ttl_s
        self._boards: dict[Board, _LocalBoard] = {}
        self._epochs: dict[Board, int] = dict.fromkeys(ALL_BOARDS, 0)
        self._locks = {board: threading.Lock() for board in ALL_BOARDS}
        self._state = threading.Lock()

    def page(self, board: Board, metric: Metric, limit: int, load: Loader) -> Page:
        ordered, waiting, updated_at = self._ordered(board, metric, load)
        parts: list[bytes] = []
        for entry in _live(ordered, _cutoff(board)):
            if len(parts) == limit:
                break
            parts.append(render_row(len(parts) + 1, metric, entry.scores[metric], entry.details))
        for entry in _live(waiting, _cutoff(board)):
            if len(parts) == limit:
                break
            parts.append(render_awaiting(metric, entry.details))
        return Page(b",".join(parts), updated_at)

    def rank(self, board: Board, metric: Metric, agent_id: str, load: Loader) -> RankHit | None:
        ordered, waiting, _ = self._ordered(board, metric, load)
        ranked = list(_live(ordered, _cutoff(board)))
        for rank, entry in enumerate(ranked, start=1):
            if entry.agent_id == agent_id:
                return RankHit(rank, entry.scores[metric], len(ranked))
        if any(e.agent_id == agent_id for e in _live(waiting, _cutoff(board))):
            return RankHit(None, None, len(ranked))
        return None

    def put(self, entries: Sequence[Ranked]) -> None:
        with self._state:
            for entry in entries:
                for board in entry.boards:
                    self._epochs[board] += 1
                    local = self._boards.get(board)
                    if local is not None:
                        local.entries[entry.agent_id] = entry
                        local.changed()

    def remove(self, agent_id: str) -> None:
        with self._state:
            for board in ALL_BOARDS:
                self._epochs[board] += 1
                local = self._boards.get(board)
                if local is not None and local.entries.pop(agent_id, None) is not None:
                    local.changed()

    def close(self) -> None:
        with self._state:
            self._boards.clear()

    def health(self) -> tuple[str, str]:
        return "cache:memory", "ok"

    def _ordered(
        self, board: Board, metric: Metric, load: Loader
    ) -> tuple[list[Ranked], list[Ranked], str]:
        """The board's ranked entries best first by ``metric`` and its awaiting entries in
        submission order (lists never mutated afterwards)."""
        if self._fresh(board) is None:
            self._load(board, load)
        with self._state:
            local = self._boards[board]
            return local.ordered(metric), local.awaiting(), local.updated_at

    def _load(self, board: Board, load: Loader) -> None:
        with self._locks[board]:
            while self._fresh(board) is None:
                with self._state:
                    epoch = self._epochs[board]
                entries = load(board)
                with self._state:
                    if self._epochs[board] == epoch:  # else a write raced the load: reload
                        by_agent = {e.agent_id: e for e in entries}
                        self._boards[board] = _LocalBoard(by_agent, time.monotonic(), now_iso())

    def _fresh(self, board: Board) -> _LocalBoard | None:
        with self._state:
            local = self._boards.get(board)
            if local is None or time.monotonic() - local.loaded_at > self._ttl_s:
                return None
            return local


def _cutoff(board: Board) -> datetime | None:
    window = board.timeframe.window
    return None if window is None else datetime.now(UTC) - window


def _live(entries: Iterable[Ranked], cutoff: datetime | None) -> Iterable[Ranked]:
    return entries if cutoff is None else (e for e in entries if e.evaluated_at >= cutoff)


def open_leaderboard_cache(
    redis_url: str | None,
    rules: str,
    *,
    ttl_s: float = DEFAULT_TTL_S,
    cluster: bool = False,
) -> LeaderboardCache:
    """Redis when ``FARM_REDIS_URL`` is set, the in-process cache otherwise (connects lazily);
    ``rules`` tags the Redis keys of boards that depend on ranking settings, ``ttl_s`` bounds
    how long a board is served before a rebuild, ``cluster`` speaks Redis Cluster."""
    if redis_url:
        return RedisLeaderboardCache(redis_url, rules=rules, ttl_s=ttl_s, cluster=cluster)
    return InProcessLeaderboardCache(ttl_s)
