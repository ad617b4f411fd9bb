-- Token bucket as GCRA (SPEC 3): ARGV[5] = capacity (unused: the span
-- carries it), ARGV[6] = emission interval T in µs, ARGV[7] = capacity * T
-- in µs. Value: the theoretical arrival time in µs (missing: a full
-- bucket).
local interval = tonumber(ARGV[6])
local span = tonumber(ARGV[7])

local tat = tonumber(redis.call('GET', key)) or 0

if op == 'check' then
  local next_tat = max(tat, now) + cost * interval
  local limit_at = now + span
  if next_tat <= limit_at then
    store(string.format('%.0f', next_tat), next_tat)
    tat = next_tat
  else
    local debt = max(tat - now, 0)
    return {0, floor(max(span - debt, 0) / interval), debt, next_tat - limit_at}
  end
end

-- remaining and reset_after for the stored (or just taken) arrival time.
local debt = max(tat - now, 0)
local remaining = floor(max(span - debt, 0) / interval)
if op == 'check' or remaining > 0 then return {1, remaining, debt, 0} end
return {0, remaining, debt, max(max(tat, now) + interval - (now + span), 0)}
