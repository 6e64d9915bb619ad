"""The limiter's, budget's and breaker's algorithms as Redis Lua, for shared state.

:data:`LIBRARY` ports the pure functions of ``_bucket``, ``_window``, ``_budget`` and
``_breaker_algorithm`` to Lua local functions, operation for operation and float for
float, so that replicas sharing one Redis decide exactly as one process would with
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

__all__ = ["ENTRIES", "LIBRARY", "script"]

LIBRARY = """
local INF = math.huge
local TINY = math.ldexp(1, -1074)
local MAX_MS = 2 ^ 45
local SLOTS = 60
local M = SLOTS + 1
local BUCKETS = 10
local SUCCESS, FAILURE, IGNORE = 0, 1, 2

-- Exact text of a number, for a reply (Redis would truncate a Lua number).
local function num(x)
  return string.format('%.17g', x)
end

-- Python's format(x, 'g'): C's %g (six significant digits, no trailing zeros).
local function fmt_g(x)
  return string.format('%g', x)
end

-- Python's math.nextafter(x, math.inf).
local function next_up(x)
  if x ~= x or x == INF then return x end
  if x == 0 then return TINY end
  local m, e = math.frexp(x)
  local ulp
  if m == -0.5 then ulp = math.ldexp(1, e - 54) else ulp = math.ldexp(1, e - 53) end
  if ulp < TINY then ulp = TINY end
  return x + ulp
end

-- Python's float a // b (through fmod, not floor(a / b): 1 // 0.1 is 9).
local function floordiv(a, b)
  local mod = math.fmod(a, b)
  local div = (a - mod) / b
  if mod ~= 0 and (b < 0) ~= (mod < 0) then
    div = div - 1.0
  end
  if div == 0 then return 0 end
  local whole = math.floor(div)
  if div - whole > 0.5 then whole = whole + 1.0 end
  return whole
end

-- Python's math.fsum: the correctly rounded sum of finite numbers.
local function fsum(xs)
  local p, n = {}, 0
  for _, x in ipairs(xs) do
    local i = 0
    for j = 1, n do
      local y = p[j]
      if math.abs(x) < math.abs(y) then x, y = y, x end
      local hi = x + y
      local lo = y - (hi - x)
      if lo ~= 0 then
        i = i + 1
        p[i] = lo
      end
      x = hi
    end
    n = i
    if x ~= 0 then
      n = n + 1
      p[n] = x
    end
  end
  if n == 0 then return 0.0 end
  local hi = p[n]
  local lo = 0.0
  n = n - 1
  while n > 0 do
    local x = hi
    local y = p[n]
    n = n - 1
    hi = x + y
    lo = y - (hi - x)
    if lo ~= 0 then break end
  end
  if n > 0 and ((lo < 0 and p[n] < 0) or (lo > 0 and p[n] > 0)) then
    local y = lo * 2
    local x = hi + y
    if y == x - hi then hi = x end
  end
  return hi
end

-- Python's bisect.bisect_right (the same probes, so the same answer on any list).
local function bisect_right(a, x)
  local lo, hi = 0, #a
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if x < a[mid + 1] then hi = mid else lo = mid + 1 end
  end
  return lo
end

local function load(key)
  local raw = redis.call('GET', key)
  if raw then return cmsgpack.unpack(raw) end
  return nil
end

-- Write one key with its TTL: at least 1 ms, at most 2^45 ms.
local function store(key, value, seconds)
  local ms = math.ceil(seconds * 1000)
  if not (ms >= 1) then ms = 1 elseif ms > MAX_MS then ms = MAX_MS end
  redis.call('SET', key, cmsgpack.pack(value), 'PX', string.format('%d', ms))
end

-- Token buckets (_bucket): {tokens, last}; a missing key is a full bucket.

local function refilled(tokens, last, now, rate, burst)
  return math.min(burst, tokens + math.max(0.0, now - last) * rate)
end

local function bucket_load(key, now, burst)
  local s = load(key)
  if s == nil then return burst, now, false end
  return s[1], s[2], true
end

local function bucket_store(key, tokens, last, rate, burst)
  store(key, {tokens, last}, burst / rate + 60)
end

local function bucket_wait(tokens, last, now, rate, burst, cost)
  if refilled(tokens, last, now, rate, burst) >= cost then return 0.0 end
  if cost > burst then return INF end
  local wait = last - now + (cost - tokens) / rate
  while refilled(tokens, last, now + wait, rate, burst) < cost do
    wait = math.max(next_up(wait), next_up(now + wait) - now)
  end
  return wait
end

local function bucket_take(key, now, rate, burst, cost)
  local tokens, last, found = bucket_load(key, now, burst)
  local available = refilled(tokens, last, now, rate, burst)
  if available >= cost then
    bucket_store(key, available - cost, math.max(now, last), rate, burst)
    return 0.0
  end
  if not found then bucket_store(key, tokens, last, rate, burst) end
  return bucket_wait(tokens, last, now, rate, burst, cost)
end

local function bucket_refund(key, now, rate, burst, cost)
  local tokens, last, found = bucket_load(key, now, burst)
  if found then
    tokens = math.min(burst, refilled(tokens, last, now, rate, burst) + cost)
    last = math.max(now, last)
  end
  bucket_store(key, tokens, last, rate, burst)
end

local function bucket_peek(key, now, rate, burst, cost)
  local tokens, last = bucket_load(key, now, burst)
  return bucket_wait(tokens, last, now, rate, burst, cost)
end

local function bucket_level(key, now, rate, burst)
  local tokens, last = bucket_load(key, now, burst)
  return refilled(tokens, last, now, rate, burst)
end

local function bucket_cap(key, now, rate, burst, remaining)
  if bucket_level(key, now, rate, burst) > remaining then
    bucket_store(key, math.max(0.0, remaining), now, rate, burst)
  end
end

-- Token windows (_window): {head, total, cells}; cells[s % 61 + 1] holds slot s.

local function window_slot(now, window)
  return math.floor(now * SLOTS / window)
end

local function window_load(key)
  local s = load(key)
  if s == nil then return nil end
  return {head = s[1], total = s[2], cells = s[3]}
end

local function window_store(key, state, window)
  store(key, {state.head, state.total, state.cells}, 2 * window + 60)
end

-- The state with the slots that left the window emptied; true when it changed.
local function window_advance(state, now, window)
  local index = window_slot(now, window)
  if state == nil then
    local cells = {}
    for i = 1, M do cells[i] = 0.0 end
    return {head = index, total = 0.0, cells = cells}, true
  end
  local steps = index - state.head
  if steps <= 0 then return state, false end
  local cells = state.cells
  if steps >= M then
    for i = 1, M do cells[i] = 0.0 end
  else
    for k = state.head + 1, index do cells[k % M + 1] = 0.0 end
  end
  state.head = index
  state.total = fsum(cells)
  return state, true
end

local function window_wait(state, now, window, excess)
  local freed = 0.0
  local granule = window / SLOTS
  for j = state.head - SLOTS, state.head do
    freed = freed + state.cells[j % M + 1]
    if freed >= excess then
      local leaves = j + M
      local wait = math.max(0.0, leaves * granule - now)
      while window_slot(now + wait, window) < leaves do
        wait = math.max(next_up(wait), next_up(now + wait) - now)
      end
      return wait
    end
  end
  return granule
end

local function window_room(state, now, window, limit, cost)
  local excess = state.total + cost - limit
  if excess <= 0 then return 0.0 end
  if cost > limit then return INF end
  return window_wait(state, now, window, excess)
end

local function window_take(state, now, window, limit, cost)
  local changed
  state, changed = window_advance(state, now, window)
  local wait = window_room(state, now, window, limit, cost)
  if wait ~= 0 then return state, wait, -1, changed end
  local i = state.head % M + 1
  state.cells[i] = state.cells[i] + cost
  state.total = state.total + cost
  return state, 0.0, state.head, true
end

local function window_adjust(state, now, window, slot, delta)
  local changed
  state, changed = window_advance(state, now, window)
  if state.head - SLOTS <= slot and slot <= state.head then
    local i = slot % M + 1
    local before = state.cells[i]
    local after = math.max(0.0, before + delta)
    state.cells[i] = after
    state.total = state.total + (after - before)
    changed = true
  end
  return state, changed
end

-- The states of keys, each loaded once (a key named twice is one state, as in Python).
local function window_states(keys)
  local states = {}
  for _, key in ipairs(keys) do
    if states[key] == nil then states[key] = window_load(key) or false end
  end
  return states
end

local function windows_store(states, dirty, window)
  for key in pairs(dirty) do window_store(key, states[key], window) end
end

local function windows_take(now, window, keys, limits, costs)
  local states, dirty = window_states(keys), {}
  local wait = 0.0
  for i, key in ipairs(keys) do
    local state, changed = window_advance(states[key] or nil, now, window)
    states[key] = state
    if changed then dirty[key] = true end
    wait = math.max(wait, window_room(state, now, window, limits[i], costs[i]))
  end
  if wait ~= 0 then
    windows_store(states, dirty, window)
    return wait, -1
  end
  local slot = -1
  for i, key in ipairs(keys) do
    local _, changed
    _, _, slot, changed = window_take(states[key], now, window, limits[i], costs[i])
    if changed then dirty[key] = true end
  end
  windows_store(states, dirty, window)
  return 0.0, slot
end

local function windows_adjust(now, window, slot, keys, deltas)
  local states, dirty = window_states(keys), {}
  for i, key in ipairs(keys) do
    local state, changed = window_adjust(states[key] or nil, now, window, slot, deltas[i])
    states[key] = state
    if changed then dirty[key] = true end
  end
  windows_store(states, dirty, window)
end

local function window_cap(key, now, window, limit, remaining, reset)
  local state, changed = window_advance(window_load(key), now, window)
  local phantom = limit - state.total - math.max(0.0, remaining)
  if phantom > 0 then
    local granule = window / SLOTS
    local slot = math.ceil((now + math.max(0.0, reset)) / granule) - M
    slot = math.min(math.max(slot, state.head - SLOTS), state.head)
    local i = slot % M + 1
    state.cells[i] = state.cells[i] + phantom
    state.total = state.total + phantom
    changed = true
  end
  if changed then window_store(key, state, window) end
end

local function window_used(key, now, window)
  local state = window_load(key)
  if state == nil then return 0.0 end
  local steps = window_slot(now, window) - state.head
  if steps <= 0 then return state.total end
  if steps >= M then return 0.0 end
  local gone = 0
  for k = state.head - SLOTS, state.head - SLOTS + steps - 1 do
    gone = gone + state.cells[k % M + 1]
  end
  return math.max(0.0, state.total - gone)
end

-- Budgets (_budget): {start, spent}; periods follow one another from the first charge.

local function budget_current(key, now, period)
  local s = load(key)
  if s == nil then return now, 0.0, true end
  local start = s[1]
  if now >= start + period then
    return start + math.floor((now - start) / period) * period, 0.0, true
  end
  return start, s[2], false
end

local function budget_store(key, now, period, start, spent)
  store(key, {start, spent}, start + period - now + 60)
end

local function budget_spend(key, now, period, limit, cost)
  local start, spent, changed = budget_current(key, now, period)
  if spent < limit and spent + cost <= limit then
    budget_store(key, now, period, start, spent + cost)
    return 0.0, start
  end
  if changed then budget_store(key, now, period, start, spent) end
  if cost > limit or limit <= 0 then return INF, start end
  return start + period - now, start
end

local function budget_adjust(key, now, period, start, delta)
  local current, spent, changed = budget_current(key, now, period)
  if current ~= start then
    if changed then budget_store(key, now, period, current, spent) end
    return
  end
  budget_store(key, now, period, start, math.max(0.0, spent + delta))
end

local function budget_spent(key, now, period)
  local _, spent = budget_current(key, now, period)
  return spent
end

-- Circuit breakers (_breaker_algorithm). A record is a table with BreakerRecord's fields,
-- never changed in place: an operation that changes it makes a new one, so a record
-- that is still the loaded one needs no write.

local function breaker_load(key)
  local s = load(key)
  if s == nil then return nil end
  return {state = s[1], generation = s[2], opened_at = s[3], in_flight = s[4],
          failures = s[5], buckets = s[6], trips = s[7], transitions = s[8]}
end

-- BreakerRecord's fields in order: what is stored, and what a caller is given.
local function breaker_flat(rec)
  return {rec.state, rec.generation, rec.opened_at, rec.in_flight, rec.failures,
          rec.buckets, rec.trips, rec.transitions}
end

local function breaker_store(key, rec, cfg)
  store(key, breaker_flat(rec), 2 * math.max(cfg.window, cfg.reset) + 3600)
end

local function breaker_copy(rec)
  return {state = rec.state, generation = rec.generation, opened_at = rec.opened_at,
          in_flight = rec.in_flight, failures = rec.failures, buckets = rec.buckets,
          trips = rec.trips, transitions = rec.transitions}
end

local function append(events, more)
  for _, e in ipairs(more) do events[#events + 1] = e end
  return events
end

-- Enter `to`: a new generation, no trial in flight and an empty window.
local function breaker_move(rec, to, now, reason)
  local event = {rec.state, to, now, reason}
  local new = {state = to, generation = rec.generation + 1, opened_at = rec.opened_at,
               in_flight = 0, failures = {}, buckets = {}, trips = rec.trips,
               transitions = rec.transitions + 1}
  if to == 'open' then
    new.opened_at = now
    new.trips = rec.trips + 1
  end
  return new, {event}
end

local function breaker_advance(rec, now, cfg)
  if rec == nil then
    return {state = 'closed', generation = 0, opened_at = 0.0, in_flight = 0,
            failures = {}, buckets = {}, trips = 0, transitions = 0}, {}
  end
  if rec.state == 'open' and now >= rec.opened_at + cfg.reset then
    return breaker_move(rec, 'half_open', now, 'reset timeout elapsed')
  end
  return rec, {}
end

-- Add one call to the ring; return it with the window's total calls and failures.
local function count_call(ring, epoch, failed)
  local new = {}
  for i = 1, BUCKETS do new[i] = ring[i] or {epoch - BUCKETS, 0, 0} end
  local i = epoch % BUCKETS + 1
  local seen, calls, fails = new[i][1], new[i][2], new[i][3]
  if seen ~= epoch then calls, fails = 0, 0 end
  new[i] = {epoch, calls + 1, fails + (failed and 1 or 0)}
  calls, fails = 0, 0
  for _, b in ipairs(new) do
    if epoch - b[1] < BUCKETS then
      calls = calls + b[2]
      fails = fails + b[3]
    end
  end
  return new, calls, fails
end

local function closed_outcome(rec, now, cfg, outcome)
  local window, rate = cfg.window, cfg.rate
  local buckets, calls, fails = rec.buckets, 0, 0
  if rate then
    buckets, calls, fails = count_call(buckets, floordiv(now, window / BUCKETS),
                                       outcome == FAILURE)
  end
  if outcome == SUCCESS then
    if not rate then return rec, {} end
    local new = breaker_copy(rec)
    new.buckets = buckets
    return new, {}
  end
  -- Only the last `threshold` failures can matter, so only they are kept.
  local old = rec.failures
  local kept = {}
  for i = bisect_right(old, now - window) + 1, #old do kept[#kept + 1] = old[i] end
  kept[#kept + 1] = now
  local failures = {}
  for i = math.max(1, #kept - cfg.threshold + 1), #kept do
    failures[#failures + 1] = kept[i]
  end
  if #failures >= cfg.threshold then
    local reason = string.format('%d failures in %ss', cfg.threshold, fmt_g(window))
    return breaker_move(rec, 'open', now, reason)
  end
  if rate and calls >= cfg.minimum and fails / calls >= rate then
    local reason = string.format('%d/%d calls failed in %ss', fails, calls, fmt_g(window))
    return breaker_move(rec, 'open', now, reason)
  end
  local new = breaker_copy(rec)
  new.failures = failures
  new.buckets = buckets
  return new, {}
end

local function breaker_acquire_rec(rec, now, cfg)
  local events
  rec, events = breaker_advance(rec, now, cfg)
  if rec.state == 'closed' then return rec, rec.generation, events end
  if rec.state == 'half_open' and rec.in_flight < cfg.half_open then
    local new = breaker_copy(rec)
    new.in_flight = rec.in_flight + 1
    return new, rec.generation, events
  end
  return rec, false, events
end

local function breaker_report_rec(rec, now, cfg, generation, outcome)
  local events, moved
  rec, events = breaker_advance(rec, now, cfg)
  if generation ~= rec.generation then
    -- Stale permits have no say: their half-open slot, if any, ended with their phase.
    return rec, events
  end
  if rec.state == 'half_open' then
    if outcome == IGNORE then
      local new = breaker_copy(rec)
      new.in_flight = math.max(0, rec.in_flight - 1)
      return new, events
    end
    if outcome == SUCCESS then
      rec, moved = breaker_move(rec, 'closed', now, 'trial succeeded')
    else
      rec, moved = breaker_move(rec, 'open', now, 'trial failed')
    end
    return rec, append(events, moved)
  end
  if rec.state == 'closed' and outcome ~= IGNORE then
    rec, moved = closed_outcome(rec, now, cfg, outcome)
    return rec, append(events, moved)
  end
  return rec, events
end

local function breaker_reset_rec(rec, now, cfg)
  local events, moved
  rec, events = breaker_advance(rec, now, cfg)
  if rec.state == 'closed' then
    local new = breaker_copy(rec)
    new.failures, new.buckets = {}, {}
    return new, events
  end
  rec, moved = breaker_move(rec, 'closed', now, 'reset')
  return rec, append(events, moved)
end

local function breaker_force_open_rec(rec, now, cfg)
  local events, moved
  rec, events = breaker_advance(rec, now, cfg)
  if rec.state == 'open' then
    -- Already open: forcing it again holds it open for a full reset timeout from now.
    local new = breaker_copy(rec)
    new.opened_at = now
    return new, events
  end
  rec, moved = breaker_move(rec, 'open', now, 'forced open')
  return rec, append(events, moved)
end

local BREAKER_COMMANDS = {observe = breaker_advance, reset = breaker_reset_rec,
                          force_open = breaker_force_open_rec}

local function breaker_acquire(key, now, cfg)
  local old = breaker_load(key)
  local rec, generation, events = breaker_acquire_rec(old, now, cfg)
  if rec ~= old then breaker_store(key, rec, cfg) end
  return generation, events
end

local function breaker_report(key, now, cfg, generation, outcome)
  local old = breaker_load(key)
  local rec, events = breaker_report_rec(old, now, cfg, generation, outcome)
  if rec ~= old then breaker_store(key, rec, cfg) end
  return events
end

local function breaker_command(key, command, now, cfg)
  local fn = BREAKER_COMMANDS[command]
  if fn == nil then return redis.error_reply('unknown breaker command: ' .. command) end
  local old = breaker_load(key)
  local rec, events = fn(old, now, cfg)
  -- A look at a breaker that never had a call creates nothing (metrics() looks often).
  if rec ~= old and (old ~= nil or command ~= 'observe') then breaker_store(key, rec, cfg) end
  return breaker_flat(rec), events
end

local function breaker_read(key)
  local rec = breaker_load(key)
  if rec == nil then return false end
  return breaker_flat(rec)
end

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
