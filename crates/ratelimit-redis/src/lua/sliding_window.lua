-- Sliding window (SPEC 3): ARGV[5] = limit, ARGV[6] = window in µs,
-- ARGV[7] = window in ms. Value: "<current window index> <cost taken in
-- the window before it> <cost taken in the current one>".
local limit = tonumber(ARGV[5])
local window = tonumber(ARGV[6])
local window_ms = tonumber(ARGV[7])

local k_s, prev, curr = 0, 0, 0
local stored = redis.call('GET', key)
if stored then
  local w, p, n = string.match(stored, '^(%d+) (%d+) (%d+)$')
  k_s, prev, curr = tonumber(w), tonumber(p), tonumber(n)
end

-- Roll forward. If the clock went back before the stored window, the stored
-- window is kept and read at its start, where its estimate is highest.
local k = floor(now / window)
if k > k_s then
  if k == k_s + 1 then prev = curr else prev = 0 end
  curr = 0
  k_s = k
end
local start = k_s * window
local elapsed_ms = floor(max(now - start, 0) / 1000)

-- The part of the previous window's count that still overlaps the last
-- window, rounded up so the estimate never admits more than the exact one.
local estimate = ceil(prev * max(window_ms - elapsed_ms, 0) / window_ms) + curr

-- The first instant at which `c` fits with no other traffic: in this window
-- once the previous count has decayed enough, else in the next window once
-- the current count has, else at the start of the window after. The first
-- ms of a window from which `count`, decaying, leaves `budget`:
-- ceil(count * (W - e) / W) <= budget  <=>  W - e <= floor(budget * W / count).
local function allowed_at(c)
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

if op == 'check' then
  if estimate + cost <= limit then
    curr = curr + cost
    -- curr > 0 now: the state is full again two windows after this one's start.
    local reset_at = start + 2 * window
    store(string.format('%.0f %.0f %.0f', k_s, prev, curr), reset_at)
    return {1, limit - estimate - cost, max(reset_at - now, 0), 0}
  end
end

local reset_at = 0
if curr > 0 then reset_at = start + 2 * window elseif prev > 0 then reset_at = start + window end
local retry_after, allowed = 0, 1
if op == 'check' then
  allowed, retry_after = 0, max(allowed_at(cost) - now, 0)
elseif estimate >= limit then
  allowed, retry_after = 0, max(allowed_at(1) - now, 0)
end
return {allowed, max(limit - estimate, 0), max(reset_at - now, 0), retry_after}
