-- Fixed window (SPEC 3): ARGV[5] = limit, ARGV[6] = window in µs.
-- Value: "<window index> <cost taken in it>".
local limit = tonumber(ARGV[5])
local window = tonumber(ARGV[6])

local k_s, count = 0, 0
local stored = redis.call('GET', key)
if stored then
  local w, n = string.match(stored, '^(%d+) (%d+)$')
  k_s, count = tonumber(w), tonumber(n)
end

-- A later window starts empty; an earlier one (the clock went back) keeps
-- the stored window, which is never reopened.
local k = floor(now / window)
if k > k_s then
  k_s = k
  count = 0
end

local allowed
if op == 'check' then
  allowed = count + cost <= limit
  if allowed then
    count = count + cost
    store(string.format('%.0f %.0f', k_s, count), (k_s + 1) * window)
  end
else
  allowed = count < limit
end

local wait = max((k_s + 1) * window - now, 0)
local reset_after = 0
if count > 0 then reset_after = wait end
return {allowed and 1 or 0, max(limit - count, 0), reset_after, wait}
