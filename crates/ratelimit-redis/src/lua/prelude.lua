-- Shared head of every policy script (prepended with concat! at build time).
--
-- Calling convention:
--   KEYS[1]  the limiter key: a string of space-separated integers
--   ARGV[1]  'check' or 'peek'
--   ARGV[2]  now in µs since the epoch, or '' to read the server's TIME
--   ARGV[3]  cost (validated by the client: 1 <= cost <= limit)
--   ARGV[4]  with an injected clock, the least TTL in ms (see expire below)
--   ARGV[5..] the policy's parameters
-- Returns {allowed (1 or 0), remaining, reset_after_us, retry_after_us}.
--
-- Each script makes at most three calls (TIME, GET, SET): inside Redis a
-- call costs more than the arithmetic around it.
--
-- Lua numbers are doubles. Every value here stays below 2^53 in the domain
-- the policies are validated for, so + - * are exact; division is not, and
-- goes through idiv.

-- floor(a / b) for integers 0 <= a < 2^53, b >= 1. In that range the
-- rounded quotient of two doubles never reaches the next integer (it stays
-- more than half an ulp below it), so math.floor is already exact; the two
-- checks make that visible here at the price of two multiplications.
local function idiv(a, b)
  local q = math.floor(a / b)
  while q * b > a do q = q - 1 end
  while (q + 1) * b <= a do q = q + 1 end
  return q
end

-- ceil(a / b), exactly, without forming a + b - 1 (which could pass 2^53).
local function ceil_div(a, b)
  local q = idiv(a, b)
  if q * b < a then q = q + 1 end
  return q
end

-- a - b floored at 0: Rust's saturating_sub.
local function sat_sub(a, b)
  if a > b then return a - b end
  return 0
end

-- An integer as a decimal string. Passing a number to redis.call would
-- format it with too few digits or an exponent above 1e14.
local function int(x)
  return string.format('%.0f', x)
end

local key = KEYS[1]
local op = ARGV[1]
local injected = ARGV[2] ~= ''
local now
if injected then
  now = tonumber(ARGV[2])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local cost = tonumber(ARGV[3])
local min_ttl_ms = tonumber(ARGV[4])

-- Stores `value` under the key, to disappear at `at_us`, when the state is
-- equivalent to a key never seen (Algorithm::expires_at): one SET with its
-- expiry, so a write is a single command. On server time the expiry is an
-- absolute PXAT. An injected clock's timeline is not the server's: the TTL
-- is the time left on that timeline, but at least min_ttl_ms, because an
-- injected clock may run slower than the wall clock or go back, and the key
-- must outlive every instant at which its state still matters.
local function store(value, at_us)
  if injected then
    local ttl = ceil_div(sat_sub(at_us, now), 1000)
    if ttl < min_ttl_ms then ttl = min_ttl_ms end
    redis.call('SET', key, value, 'PX', int(ttl))
  else
    redis.call('SET', key, value, 'PXAT', int(ceil_div(at_us, 1000)))
  end
end
