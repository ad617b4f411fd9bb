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
local k = idiv(now, window)
if k > k_s then
  if k == k_s + 1 then prev = curr else prev = 0 end
  curr = 0
  k_s = k
end
local start = k_s * window
local elapsed_ms = idiv(sat_sub(now, start), 1000)

-- The part of a previous window's count that still overlaps the last
-- window, rounded up so the estimate never admits more than the exact one.
local function weighted(count, e)
  return ceil_div(count * sat_sub(window_ms, e), window_ms)
end
local estimate = weighted(prev, elapsed_ms) + curr

local function reset_at()
  if curr > 0 then return start + 2 * window end
  if prev > 0 then return start + window end
  return 0
end

-- The first ms of a window from which `count`, decaying, leaves `budget`:
-- ceil(count * (W - e) / W) <= budget  <=>  W - e <= floor(budget * W / count).
local function first_ms(count, budget)
  if count == 0 then return 0 end
  return sat_sub(window_ms, idiv(budget * window_ms, count))
end

-- The first instant at which `c` fits with no other traffic: in this window
-- once the previous count has decayed enough, else in the next window once
-- the current count has, else at the start of the window after.
local function allowed_at(c)
  local budget = limit - (curr + c)
  if budget >= 0 then
    local e = first_ms(prev, budget)
    if e < window_ms then return start + e * 1000 end
  end
  local e = first_ms(curr, limit - c)
  if e < window_ms then return start + window + e * 1000 end
  return start + 2 * window
end

if op == 'check' then
  if estimate + cost <= limit then
    curr = curr + cost
    store(int(k_s) .. ' ' .. int(prev) .. ' ' .. int(curr), reset_at())
    return {1, limit - estimate - cost, sat_sub(reset_at(), now), 0}
  end
  return {0, sat_sub(limit, estimate), sat_sub(reset_at(), now),
          sat_sub(allowed_at(cost), now)}
end

local retry_after = 0
local allowed = estimate < limit
if not allowed then retry_after = sat_sub(allowed_at(1), now) end
return {allowed and 1 or 0, sat_sub(limit, estimate), sat_sub(reset_at(), now), retry_after}
