-- Fixed window (ratelimit-core's FixedWindow, ported exactly).

-- Layout (see prelude.lua): the state is the window index and the cost
-- taken in it; the parameters are the limit and the window in µs.
local STATE = '<dd'
local limit, window
local function parameters()
  limit, window = params('limit', 'window_us')
end

local function decide(stored, now, cost)
  local k_s, count = 0, 0
  if stored then k_s, count = decode(STATE, stored) end

  -- A later window starts empty; an earlier one (the clock went back)
  -- keeps the stored window, which is never reopened.
  local k = floor(now / window)
  local rolled = not stored
  if k > k_s then
    k_s = k
    count = 0
    rolled = true
  end

  local allowed, state, at
  if cost > 0 then
    allowed = count + cost <= limit
    if allowed then
      count = count + cost
      state, at = encode(STATE, k_s, count), (k_s + 1) * window
    end
  else
    allowed = count < limit
  end

  local wait = max((k_s + 1) * window - now, 0)
  local reset_after = 0
  if count > 0 then reset_after = wait end
  -- The stored key already expires at the end of its window: if that is
  -- still the window, its expiry stands.
  return allowed and 1 or 0, max(limit - count, 0), reset_after, wait, state, at, not rolled
end
