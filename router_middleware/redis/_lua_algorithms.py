"""The limiter's, budget's and breaker's algorithms as Redis Lua, for shared state.

:data:`LIBRARY` ports the pure functions of ``_bucket``, ``_window``, ``_budget`` and
``_breaker_algorithm`` to Lua local functions (``_lua_limits``, ``_lua_breaker``, over
``_lua_base``), operation for operation and float for float, so that replicas sharing
one Redis decide exactly as one process would with
:class:`~router_middleware.InMemoryStore`. :data:`ENTRIES` holds one entry script per
operation, to run after the library (:func:`script`). Conventions, stated before the code:

* **time is the caller's**: the library functions take ``now`` (seconds, a Lua number, in
  whatever frame the caller keeps) and never read a clock; an entry script reads the
  server's ``TIME`` only when its ``ARGV[1]`` is the empty string, so that replicas whose
  clocks disagree can share one;
* **keys are the caller's**: ``KEYS`` are every key an operation touches (in a cluster
  they share one hash tag); Lua never builds a key name;
* **entries**: ``ARGV[1]`` is ``now`` (or ``""``), then the numbers of the matching
  :class:`~router_middleware._storage.StateStore` method in its order; a breaker's config
  is six entries (``threshold``, ``sampling_duration_seconds``, ``reset_timeout_seconds``,
  ``half_open_max_calls``, ``failure_rate_threshold`` or ``""``, ``minimum_calls``) and
  its name stays in Python; every entry replies with an array whose first element is the
  ``now`` it used, then the operation's results;
* **numbers cross as text**: Redis truncates Lua numbers to integers in replies, so every
  number goes out as ``%.17g`` text (exact; ``math.huge`` is ``"inf"``), which
  ``float()`` reads back; arguments come in as ``repr`` text, read exactly by ``tonumber``;
* **state is exact and bounded**: each key is one string, a MessagePack array
  (``cmsgpack`` keeps every double; ``cjson`` would round to 14 digits): a bucket
  ``{tokens, last}``, a window ``{head, total, cells[61]}``, a budget ``{start, spent}``,
  a breaker its :class:`~router_middleware._breaker_algorithm.BreakerRecord` in field order
  (failures and buckets as nested arrays);
* **idle keys expire**: every write sets a TTL (``SET ... PX``) after which the missing
  key means the same as the stale one, or near it: a bucket ``burst/rate + 60`` s (full
  again), a window ``2 window + 60`` s (empty again), a budget the period's end + 60 s, a
  breaker ``2 max(window, reset) + 3600`` s; an operation that changes nothing writes
  nothing (its key keeps its TTL);
* **a refusal carries its wait**, as in Python: ``0`` when taken, else the seconds until
  it will be, ``inf`` when it never can; every reason text and state name is Python's.

Example:
    >>> script("bucket_take").endswith(ENTRIES["bucket_take"])
    True
    >>> sorted(ENTRIES)[:3]
    ['breaker_acquire', 'breaker_command', 'breaker_read']
"""

from __future__ import annotations

from ._lua_base import BASE
from ._lua_breaker import BREAKER
from ._lua_limits import LIMITS

__all__ = ["ENTRIES", "LIBRARY", "script"]

LIBRARY = (
    BASE
    + LIMITS
    + BREAKER
    + """
-- Entry helpers: ARGV[1] is now, or '' for the server's clock; replies as text.

local function entry_now(arg)
  if arg == '' then
    local t = redis.call('TIME')
    return tonumber(t[1]) + tonumber(t[2]) / 1e6
  end
  return tonumber(arg)
end

local function entry_cfg(i)
  local rate = false
  if ARGV[i + 4] ~= '' then rate = tonumber(ARGV[i + 4]) end
  return {threshold = tonumber(ARGV[i]), window = tonumber(ARGV[i + 1]),
          reset = tonumber(ARGV[i + 2]), half_open = tonumber(ARGV[i + 3]), rate = rate,
          minimum = tonumber(ARGV[i + 5])}
end

local function wire_transitions(events)
  local out = {}
  for i, e in ipairs(events) do out[i] = {e[1], e[2], num(e[3]), e[4]} end
  return out
end

local function wire_record(flat)
  if not flat then return false end
  local failures, buckets = {}, {}
  for i, f in ipairs(flat[5]) do failures[i] = num(f) end
  for i, b in ipairs(flat[6]) do buckets[i] = {num(b[1]), num(b[2]), num(b[3])} end
  return {flat[1], num(flat[2]), num(flat[3]), num(flat[4]), failures, buckets,
          num(flat[7]), num(flat[8])}
end

local function arg(i)
  return tonumber(ARGV[i])
end
"""
)
"""Lua local functions: the four algorithms and the entry helpers (no reply of its own)."""

ENTRIES: dict[str, str] = {
    # KEYS: bucket. ARGV: now, rate, burst, cost. Reply: now, wait.
    "bucket_take": """
local now = entry_now(ARGV[1])
return {num(now), num(bucket_take(KEYS[1], now, arg(2), arg(3), arg(4)))}
""",
    # KEYS: bucket. ARGV: now, rate, burst, cost. Reply: now.
    "bucket_refund": """
local now = entry_now(ARGV[1])
bucket_refund(KEYS[1], now, arg(2), arg(3), arg(4))
return {num(now)}
""",
    # KEYS: bucket. ARGV: now, rate, burst, cost. Reply: now, wait.
    "bucket_peek": """
local now = entry_now(ARGV[1])
return {num(now), num(bucket_peek(KEYS[1], now, arg(2), arg(3), arg(4)))}
""",
    # KEYS: bucket. ARGV: now, rate, burst. Reply: now, tokens.
    "bucket_level": """
local now = entry_now(ARGV[1])
return {num(now), num(bucket_level(KEYS[1], now, arg(2), arg(3)))}
""",
    # KEYS: bucket. ARGV: now, rate, burst, remaining. Reply: now.
    "bucket_cap": """
local now = entry_now(ARGV[1])
bucket_cap(KEYS[1], now, arg(2), arg(3), arg(4))
return {num(now)}
""",
    # KEYS: windows. ARGV: now, window, then limit and cost per key. Reply: now, wait, slot.
    "windows_take": """
local now = entry_now(ARGV[1])
local limits, costs = {}, {}
for i = 1, #KEYS do
  limits[i] = arg(1 + 2 * i)
  costs[i] = arg(2 + 2 * i)
end
local wait, slot = windows_take(now, arg(2), KEYS, limits, costs)
return {num(now), num(wait), num(slot)}
""",
    # KEYS: windows. ARGV: now, window, slot, then delta per key. Reply: now.
    "windows_adjust": """
local now = entry_now(ARGV[1])
local deltas = {}
for i = 1, #KEYS do deltas[i] = arg(3 + i) end
windows_adjust(now, arg(2), arg(3), KEYS, deltas)
return {num(now)}
""",
    # KEYS: window. ARGV: now, window, limit, remaining, reset. Reply: now.
    "window_cap": """
local now = entry_now(ARGV[1])
window_cap(KEYS[1], now, arg(2), arg(3), arg(4), arg(5))
return {num(now)}
""",
    # KEYS: window. ARGV: now, window. Reply: now, used.
    "window_used": """
local now = entry_now(ARGV[1])
return {num(now), num(window_used(KEYS[1], now, arg(2)))}
""",
    # KEYS: budget. ARGV: now, period, limit, cost. Reply: now, wait, period start.
    "budget_spend": """
local now = entry_now(ARGV[1])
local wait, start = budget_spend(KEYS[1], now, arg(2), arg(3), arg(4))
return {num(now), num(wait), num(start)}
""",
    # KEYS: budget. ARGV: now, period, start, delta. Reply: now.
    "budget_adjust": """
local now = entry_now(ARGV[1])
budget_adjust(KEYS[1], now, arg(2), arg(3), arg(4))
return {num(now)}
""",
    # KEYS: budget. ARGV: now, period. Reply: now, spent.
    "budget_spent": """
local now = entry_now(ARGV[1])
return {num(now), num(budget_spent(KEYS[1], now, arg(2)))}
""",
    # KEYS: breaker. ARGV: now, cfg (6). Reply: now, generation or nil, transitions.
    "breaker_acquire": """
local now = entry_now(ARGV[1])
local generation, events = breaker_acquire(KEYS[1], now, entry_cfg(2))
if generation then generation = num(generation) end
return {num(now), generation, wire_transitions(events)}
""",
    # KEYS: breaker. ARGV: now, cfg (6), generation, outcome. Reply: now, transitions.
    "breaker_report": """
local now = entry_now(ARGV[1])
local events = breaker_report(KEYS[1], now, entry_cfg(2), arg(8), arg(9))
return {num(now), wire_transitions(events)}
""",
    # KEYS: breaker. ARGV: now, command, cfg (6). Reply: now, record, transitions.
    "breaker_command": """
local now = entry_now(ARGV[1])
local rec, events = breaker_command(KEYS[1], ARGV[2], now, entry_cfg(3))
if events == nil then return rec end
return {num(now), wire_record(rec), wire_transitions(events)}
""",
    # KEYS: breaker. ARGV: now. Reply: now, record or nil.
    "breaker_read": """
local now = entry_now(ARGV[1])
return {num(now), wire_record(breaker_read(KEYS[1]))}
""",
}
"""Entry scripts by operation, to run after :data:`LIBRARY` (see :func:`script`)."""


def script(name: str) -> str:
    """The whole script of operation ``name``: :data:`LIBRARY` and its entry.

    Example:
        >>> "bucket_take(KEYS[1]" in script("bucket_take")
        True
    """
    return LIBRARY + ENTRIES[name]
