-- Token bucket as GCRA (SPEC 3): ARGV[3] = emission interval T in µs,
-- ARGV[4] = capacity * T in µs. State: the theoretical arrival time in µs
-- (missing: a full bucket).
local interval = tonumber(ARGV[3])
local span = tonumber(ARGV[4])

local function decide(stored, now, cost)
  local tat = 0
  if stored then tat = unpack('<d', stored) end

  local state
  if cost > 0 then
    local next_tat = max(tat, now) + cost * interval
    local limit_at = now + span
    if next_tat > limit_at then
      local debt = max(tat - now, 0)
      return 0, floor(max(span - debt, 0) / interval), debt, next_tat - limit_at
    end
    tat = next_tat
    state = pack('<d', tat)
  end

  -- remaining and reset_after for the stored (or just taken) arrival time.
  local debt = max(tat - now, 0)
  local remaining = floor(max(span - debt, 0) / interval)
  if cost > 0 or remaining > 0 then return 1, remaining, debt, 0, state, tat end
  return 0, remaining, debt, max(max(tat, now) + interval - (now + span), 0)
end
