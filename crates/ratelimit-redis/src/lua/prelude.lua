-- Shared head of every policy script (prepended with concat! at build time).
--
-- Calling convention:
--   KEYS[1]  the limiter key: a string of space-separated integers
--   ARGV[1]  'check' or 'peek'
--   ARGV[2]  now in µs since the epoch, or '' to read the server's TIME
--   ARGV[3]  cost (validated by the client: 1 <= cost <= limit)
--   ARGV[4]  with an injected clock, the least TTL in ms (see store below)
--   ARGV[5..] the policy's parameters
-- Returns {allowed (1 or 0), remaining, reset_after_us, retry_after_us}.
--
-- Each script makes at most three calls (TIME, GET, SET), and creates as
-- few closures and strings as it can: inside Redis these, not the
-- arithmetic, are what a decision costs.
--
-- Lua numbers are doubles. Every value here stays below 2^53 in the domain
-- the policies are validated for, so + - * are exact. So are
-- math.floor(a / b) and math.ceil(a / b) for integers 0 <= a < 2^53,
-- b >= 1: the rounded quotient never reaches the next integer (it stays
-- more than half an ulp away from it). math.max(a - b, 0) is Rust's
-- saturating_sub. Integers are written with '%.0f': passing a number to
-- redis.call would format it with too few digits above 1e14.

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
local floor, ceil, max = math.floor, math.ceil, math.max

-- Stores `value` under the key, to disappear at `at_us`, when the state is
-- equivalent to a key never seen (Algorithm::expires_at): one SET with its
-- expiry, so a write is a single command. On server time the expiry is an
-- absolute PXAT. An injected clock's timeline is not the server's: the TTL
-- is the time left on that timeline, but at least ARGV[4] ms, because an
-- injected clock may run slower than the wall clock or go back, and the key
-- must outlive every instant at which its state still matters.
local function store(value, at_us)
  if injected then
    local ttl = max(ceil((at_us - now) / 1000), tonumber(ARGV[4]))
    redis.call('SET', key, value, 'PX', string.format('%.0f', ttl))
  else
    redis.call('SET', key, value, 'PXAT', string.format('%.0f', ceil(at_us / 1000)))
  end
end
