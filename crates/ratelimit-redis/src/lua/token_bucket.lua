-- Token bucket as GCRA (ratelimit-core's TokenBucket, ported exactly).
--
-- The state is a full bucket again from tat on; its key expires at the
-- first whole second at or after tat, so that the tokens taken before that
-- second keep the key's expiry (SET ... KEEPTTL, a third cheaper inside
-- Redis) instead of each moving it. A key outlives its state's use by
-- less than a second.

-- Layout (see prelude.lua): the state is the theoretical arrival time in
-- µs (a missing key is a full bucket); the parameters are the emission
-- interval T and the span capacity * T, both in µs.
local STATE = '<d'
local interval, span
local function parameters()
  interval, span = params('interval_us', 'span_us')
end

local SECOND = 1000000

local function decide(stored, now, cost)
  local tat = 0
  if stored then tat = decode(STATE, stored) end
  local stored_tat = tat

  local state
  if cost > 0 then
    local next_tat = max(tat, now) + cost * interval
    local limit_at = now + span
    if next_tat > limit_at then
      local debt = max(tat - now, 0)
      return 0, floor(max(span - debt, 0) / interval), debt, next_tat - limit_at
    end
    tat = next_tat
    state = encode(STATE, tat)
  end

  -- remaining and reset_after for the stored (or just taken) arrival time.
  local debt = max(tat - now, 0)
  local remaining = floor(max(span - debt, 0) / interval)
  if cost > 0 then
    local at = ceil(tat / SECOND) * SECOND
    return 1, remaining, debt, 0, state, at, stored and at == ceil(stored_tat / SECOND) * SECOND
  end
  if remaining > 0 then return 1, remaining, debt, 0 end
  return 0, remaining, debt, max(max(tat, now) + interval - (now + span), 0)
end
