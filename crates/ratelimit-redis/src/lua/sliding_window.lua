-- Sliding window (ratelimit-core's SlidingWindow, ported exactly).

-- Layout (see prelude.lua): the state is the current window index, the
-- cost taken in the window before it and the cost taken in the current
-- one; the parameters are the limit and the window in µs and in ms.
local STATE = '<ddd'
local limit, window, window_ms
local function parameters()
  limit, window, window_ms = params('limit', 'window_us', 'window_ms')
end

-- The first instant at which `c` fits with no other traffic, for a window
-- starting at `start` with counts `prev` and `curr`: in this window once
-- the previous count has decayed enough, else in the next window once the
-- current count has, else at the start of the window after. The first ms
-- of a window from which `count`, decaying, leaves `budget`:
-- ceil(count * (W - e) / W) <= budget  <=>  W - e <= floor(budget * W / count).
local function allowed_at(start, prev, curr, c)
  local budget = limit - (curr + c)
  if budget >= 0 then
    local e = 0
    if prev > 0 then e = max(window_ms - floor(budget * window_ms / prev), 0) end
    if e < window_ms then return start + e * 1000 end
  end
  local e = 0
  if curr > 0 then e = max(window_ms - floor((limit - c) * window_ms / curr), 0) end
  if e < window_ms then return start + window + e * 1000 end
  return start + 2 * window
end

local function decide(stored, now, cost)
  local k_s, prev, curr = 0, 0, 0
  if stored then k_s, prev, curr = decode(STATE, stored) end

  -- Roll forward. If the clock went back before the stored window, the
  -- stored window is kept and read at its start, where its estimate is
  -- highest.
  local k = floor(now / window)
  local rolled = not stored
  if k > k_s then
    if k == k_s + 1 then prev = curr else prev = 0 end
    curr = 0
    k_s = k
    rolled = true
  end
  local start = k_s * window
  local elapsed_ms = floor(max(now - start, 0) / 1000)

  -- The part of the previous window's count that still overlaps the last
  -- window, rounded up so the estimate never admits more than the exact one.
  local estimate = ceil(prev * max(window_ms - elapsed_ms, 0) / window_ms) + curr

  if cost > 0 and estimate + cost <= limit then
    curr = curr + cost
    -- curr > 0 now: the state is full again two windows after this one's
    -- start. A stored state always had curr > 0, so its key already
    -- expires then unless the window rolled.
    local reset_at = start + 2 * window
    return 1, limit - estimate - cost, max(reset_at - now, 0), 0,
      encode(STATE, k_s, prev, curr), reset_at, not rolled
  end

  local reset_at = 0
  if curr > 0 then reset_at = start + 2 * window elseif prev > 0 then reset_at = start + window end
  local retry_after, allowed = 0, 1
  if cost > 0 then
    allowed, retry_after = 0, max(allowed_at(start, prev, curr, cost) - now, 0)
  elseif estimate >= limit then
    allowed, retry_after = 0, max(allowed_at(start, prev, curr, 1) - now, 0)
  end
  return allowed, max(limit - estimate, 0), max(reset_at - now, 0), retry_after
end
