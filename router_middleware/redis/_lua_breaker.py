"""The circuit breaker's algorithm in Lua, a port of ``_breaker_algorithm``: records with
their generation, the count and rate rules, half-open permits, stale outcomes ignored.
See ``_lua_algorithms`` for the conventions."""

from __future__ import annotations

__all__ = ["BREAKER"]

BREAKER = """
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
"""
