"""The limits' algorithms in Lua, each a port of its Python module: token buckets
(``_bucket``), token windows (``_window``) and budgets (``_budget``). See
``_lua_algorithms`` for the conventions."""

from __future__ import annotations

__all__ = ["LIMITS"]

LIMITS = """
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
"""
