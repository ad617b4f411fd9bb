-- Token bucket as GCRA (SPEC 3): ARGV[5] = capacity (unused: the span
-- carries it), ARGV[6] = emission interval T in µs, ARGV[7] = capacity * T
-- in µs. Value: the theoretical arrival time in µs (missing: a full
-- bucket).
local interval = tonumber(ARGV[6])
local span = tonumber(ARGV[7])

local tat = tonumber(redis.call('GET', key)) or 0

-- remaining and reset_after for a theoretical arrival time.
local function fields(t)
  local debt = sat_sub(t, now)
  return idiv(sat_sub(span, debt), interval), debt
end

if op == 'check' then
  local next_tat = math.max(tat, now) + cost * interval
  local limit_at = now + span
  if next_tat <= limit_at then
    store(int(next_tat), next_tat)
    local remaining, reset_after = fields(next_tat)
    return {1, remaining, reset_after, 0}
  end
  local remaining, reset_after = fields(tat)
  return {0, remaining, reset_after, next_tat - limit_at}
end

local remaining, reset_after = fields(tat)
if remaining > 0 then return {1, remaining, reset_after, 0} end
return {0, remaining, reset_after, sat_sub(math.max(tat, now) + interval, now + span)}
