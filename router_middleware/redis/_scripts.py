"""The Lua of the concurrency leases and cool-downs, and the entry scripts that compose
them with the limit and breaker algorithms of ``_lua_algorithms``.

Conventions shared by every entry script (see ``_lua_algorithms``): ``KEYS`` are the keys
it touches, all of one provider (one Redis Cluster hash tag); ``ARGV[1]`` is the time to
use, or ``""`` for the server's clock; the reply's first element is that time, as a
string (Redis truncates Lua numbers to integers: every fraction travels as text).

A concurrency slot is a *lease*: a member of the provider's sorted set whose score is its
expiry. Invariants:

* a slot is granted only while fewer than ``cap`` unexpired leases are in the set; expired
  ones are dropped first, so a crashed or frozen replica's slots come back by themselves
  once ``lease_seconds`` pass without renewal;
* a release removes exactly the lease it names and, when it was there, publishes the
  provider's name on the release channel, so replicas waiting for that provider look again
  at once instead of polling;
* a cool-down keeps the later of its current and its new end (``Retry-After`` from two
  replicas never shortens it).
"""

from __future__ import annotations

from ._lua_algorithms import ENTRIES, LIBRARY

__all__ = ["LEASES", "script_sources"]

LEASES = r"""
local function clock(arg)
  if arg ~= '' then return tonumber(arg) end
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end

local function fmt(x) return string.format('%.17g', x) end

-- The cluster's counters outlive a week without traffic, then go.
local COUNTS_TTL_MS = 7 * 24 * 3600 * 1000

local function lease_take(key, now, cap, member, lease)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  local used = redis.call('ZCARD', key)
  if cap >= 0 and used >= cap then return 0 end
  redis.call('ZADD', key, now + lease, member)
  redis.call('PEXPIRE', key, math.ceil((lease + 60) * 1000))
  return used + 1
end
"""

_LEASE_TAKE = r"""
local now = clock(ARGV[1])
return {fmt(now), lease_take(KEYS[1], now, tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4]))}
"""

# A token and a slot, both or neither: the tokens are looked at first, as in memory.
_BUCKET_LEASE_TAKE = r"""
local now = clock(ARGV[1])
local rate, burst, cost = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local wait = bucket_peek(KEYS[1], now, rate, burst, cost)
if wait > 0 then return {fmt(now), fmt(wait), 0} end
local used = lease_take(KEYS[2], now, tonumber(ARGV[5]), ARGV[6], tonumber(ARGV[7]))
if used == 0 then return {fmt(now), 'inf', 0} end
bucket_take(KEYS[1], now, rate, burst, cost)
return {fmt(now), '0', used}
"""

_LEASE_RELEASE = r"""
local now = clock(ARGV[1])
local gone = redis.call('ZREM', KEYS[1], ARGV[2])
if gone == 1 then redis.call('PUBLISH', ARGV[3], ARGV[4]) end
return {fmt(now), gone}
"""

_LEASE_RENEW = r"""
local now = clock(ARGV[1])
local expiry = now + tonumber(ARGV[2])
local kept = 0
for i = 3, #ARGV do
  kept = kept + redis.call('ZADD', KEYS[1], 'XX', 'CH', expiry, ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], math.ceil((tonumber(ARGV[2]) + 60) * 1000))
return {fmt(now), kept}
"""

_LEASE_COUNT = r"""
local now = clock(ARGV[1])
return {fmt(now), redis.call('ZCOUNT', KEYS[1], '(' .. fmt(now), '+inf')}
"""

# When the earliest lease expires (a full set frees a slot then, released or not).
_LEASE_NEXT = r"""
local now = clock(ARGV[1])
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if not first[2] then return {fmt(now), '0'} end
return {fmt(now), fmt(math.max(0, tonumber(first[2]) - now))}
"""

_COOLDOWN_SET = r"""
local now = clock(ARGV[1])
local untl = now + tonumber(ARGV[2])
local old = tonumber(redis.call('GET', KEYS[1]) or '0')
if old > untl then untl = old end
redis.call('SET', KEYS[1], fmt(untl), 'PX', math.ceil((untl - now + 60) * 1000))
return {fmt(now), fmt(untl)}
"""

_COOLDOWN_GET = r"""
local now = clock(ARGV[1])
return {fmt(now), redis.call('GET', KEYS[1]) or '0'}
"""

# A whole admission (``_ops``): ARGV[2] is the operations as JSON, each naming its keys
# by their index in KEYS. They run in order; the first refusal gives back what the ones
# before it took and ends the script. Reply: now, the 1-based index of the refusal (0:
# none), then each answer.
_ADMIT = r"""
local now = clock(ARGV[1])
local ops = cjson.decode(ARGV[2])
local answers = {}

local function breaker_cfg(op)
  local rate = op[7]
  if rate == '' then rate = false end
  return {threshold = op[3], window = op[4], reset = op[5], half_open = op[6], rate = rate,
          minimum = op[8]}
end

local function give_back(op, answer)
  local kind = op[1]
  if kind == 'breaker' and answer.generation then
    breaker_report(KEYS[op[2]], now, breaker_cfg(op), answer.generation, 2)
  elseif kind == 'windows' then
    local keys, minus = {}, {}
    for i, k in ipairs(op[3]) do keys[i] = KEYS[k]; minus[i] = -op[5][i] end
    windows_adjust(now, op[2], answer.slot, keys, minus)
  elseif kind == 'spend' then
    budget_adjust(KEYS[op[2]], now, op[3], answer.start, -op[5])
  end
end

local refused, taken = 0, {}
for i, op in ipairs(ops) do
  local kind, answer, wire, no = op[1], {}, nil, false
  if kind == 'cooldown' then
    local left = tonumber(redis.call('GET', KEYS[op[2]]) or '0') - now
    if left > 0 then no = true end
    wire = fmt(left)
  elseif kind == 'spend' then
    local wait, start = budget_spend(KEYS[op[2]], now, op[3], op[4], op[5])
    answer.start = start
    no = wait > 0
    wire = {fmt(wait), fmt(start)}
  elseif kind == 'breaker' then
    local cfg = breaker_cfg(op)
    local generation, events = breaker_acquire(KEYS[op[2]], now, cfg)
    local after = 0
    if generation then
      answer.generation = generation
    else
      no = true
      local rec = breaker_load(KEYS[op[2]])
      if rec and rec.state == 'open' then after = math.max(0, rec.opened_at + cfg.reset - now) end
    end
    wire = {generation and fmt(generation) or false, wire_transitions(events), fmt(after)}
  elseif kind == 'windows' then
    local keys = {}
    for j, k in ipairs(op[3]) do keys[j] = KEYS[k] end
    local wait, slot = windows_take(now, op[2], keys, op[4], op[5])
    answer.slot = slot
    no = wait > 0
    wire = {fmt(wait), fmt(slot)}
  else -- 'take': a token (when a bucket is named) and a lease, both or neither
    local wait, used, free_in = 0, 0, math.huge
    if op[2] > 0 then wait = bucket_peek(KEYS[op[2]], now, op[4], op[5], op[6]) end
    if wait == 0 then
      used = lease_take(KEYS[op[3]], now, op[7], op[8], op[9])
      if used == 0 then
        wait = math.huge
        local first = redis.call('ZRANGE', KEYS[op[3]], 0, 0, 'WITHSCORES')
        free_in = first[2] and math.max(0, tonumber(first[2]) - now) or 0
      elseif op[2] > 0 then
        bucket_take(KEYS[op[2]], now, op[4], op[5], op[6])
      end
    end
    no = used == 0
    wire = {fmt(wait), used, fmt(free_in)}
  end
  answers[i + 2] = wire
  if no then
    refused = i
    for j = i - 1, 1, -1 do give_back(ops[j], taken[j]) end
    break
  end
  taken[i] = answer
end
answers[1] = fmt(now)
answers[2] = refused
return answers
"""

# A whole settle: every operation runs, in order. Reply: now, then each answer.
_SETTLE = r"""
local now = clock(ARGV[1])
local ops = cjson.decode(ARGV[2])
local answers = {fmt(now)}
for i, op in ipairs(ops) do
  local kind, wire = op[1], false
  if kind == 'release' then
    if redis.call('ZREM', KEYS[op[2]], op[3]) == 1 then redis.call('PUBLISH', op[4], op[5]) end
  elseif kind == 'report' then
    local rate = op[7]
    if rate == '' then rate = false end
    local cfg = {threshold = op[3], window = op[4], reset = op[5], half_open = op[6],
                 rate = rate, minimum = op[8]}
    wire = wire_transitions(breaker_report(KEYS[op[2]], now, cfg, op[9], op[10]))
  elseif kind == 'cooldown' then
    local key, untl = KEYS[op[2]], now + op[3]
    local old = tonumber(redis.call('GET', key) or '0')
    if old > untl then untl = old end
    redis.call('SET', key, fmt(untl), 'PX', math.ceil((untl - now + 60) * 1000))
    wire = fmt(untl)
  elseif kind == 'windows' then
    local keys = {}
    for j, k in ipairs(op[4]) do keys[j] = KEYS[k] end
    windows_adjust(now, op[2], op[3], keys, op[5])
  elseif kind == 'spend' then
    budget_adjust(KEYS[op[2]], now, op[3], op[4], op[5])
  elseif kind == 'count' then
    local key = KEYS[op[2]]
    for j = 3, #op, 2 do redis.call('HINCRBYFLOAT', key, op[j], op[j + 1]) end
    redis.call('PEXPIRE', key, COUNTS_TTL_MS)
  end
  answers[i + 1] = wire
end
return answers
"""

_OWN = {
    "admit": _ADMIT,
    "settle": _SETTLE,
    "lease_take": _LEASE_TAKE,
    "bucket_lease_take": _BUCKET_LEASE_TAKE,
    "lease_release": _LEASE_RELEASE,
    "lease_renew": _LEASE_RENEW,
    "lease_count": _LEASE_COUNT,
    "lease_next": _LEASE_NEXT,
    "cooldown_set": _COOLDOWN_SET,
    "cooldown_get": _COOLDOWN_GET,
}


def script_sources() -> dict[str, str]:
    """Every entry script, whole: the libraries, then the entry's own lines."""
    sources = {name: LEASES + LIBRARY + body for name, body in _OWN.items()}
    sources.update({name: LIBRARY + body for name, body in ENTRIES.items()})
    return sources
