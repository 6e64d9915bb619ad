"""What every Lua algorithm stands on: the constants, Python's float behaviour where an
answer depends on it (``%g``, ``nextafter``, float ``//``, ``fsum``, ``bisect_right``),
and reading and writing one key (cmsgpack, with its TTL). See ``_lua_algorithms``."""

from __future__ import annotations

__all__ = ["BASE"]

BASE = """
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
"""
