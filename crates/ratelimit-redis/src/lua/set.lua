-- Policy sets (SPEC.md section 5): ratelimit-core's PolicySet::check,
-- settle, renew, release and peek, with Policy::check_part / settle_part,
-- ported exactly. One call runs one or more operations of one set, in
-- order, each as if it were its own call.
--
-- Calling convention:
--   KEYS      NPOL keys per operation, in set order: a rate policy's key
--             holds its state (a string of little-endian doubles), a
--             concurrency policy's key is a ZSET of leases (member: the
--             16-byte lease id, score: its expiry in µs)
--   ARGV[1]   '' to read the server's TIME once for the whole call, or
--             'injected' when each operation carries its own now
--   ARGV[2]   with an injected clock, the least TTL in ms of a key written
--   ARGV[3]   NPOL, the number of policies
--   then per policy 5 values: kind (1 fixed window, 2 sliding window,
--   3 token bucket, 4 concurrency), settles ('1' or '0'), and three
--   parameters: fixed (limit, window_us, window_ms), sliding (limit, window_us,
--   window_ms), bucket (interval_us, span_us, 0), concurrency (limit,
--   ttl_us, 0)
--   then per operation: its code, with an injected clock its now in µs,
--   and per policy:
--     'c' check    rate: cost; concurrency: cost and the lease id to take
--     's' settle   rate: taken, actual (at most 2^53), mark a, b, c (a
--                  window: k, 0, 0; a bucket: tat, rf, at);
--                  concurrency: the lease id, or '' for none
--     'r' renew, 'x' release: concurrency only: the lease id, or ''
--     'p' peek     nothing
-- Returns an array of one string per operation, starting with a status
-- byte:
--   0  done: then per policy encode(ENTRY, allowed, remaining,
--      reset_after_us, retry_after_us, m1, m2, m3): a check's marks (a
--      window: k; a bucket: tat, rf, at; a lease: its expiry, 0 for none;
--      all zero when denied); a renew's allowed is 1 for a lease still
--      held and m1 its new expiry
--   1  a settle refused (nothing changed but its leases released): then
--      encode(FAULT, policy index from 0, reason, count) with reason 1
--      (actual != taken on a policy not declared to settle), 2 (a window
--      count out of the exact domain; count is the stored count) or 3 (a
--      bucket's tat out of it)
--   2  a key holds a value this script did not write: then the policy
--      index byte and a message (never the key)
--
-- Lua numbers are doubles: every value stays below 2^53 in the domain the
-- policies are validated for (see prelude.lua), and an actual amount is
-- capped at 2^53 by the caller, which only ever makes a charge leave the
-- domain.

local injected = ARGV[1] ~= ''
local server_now
if not injected then
  local t = redis.call('TIME')
  server_now = t[1] * 1000000 + t[2]
end
local floor, ceil, max, min = math.floor, math.ceil, math.max, math.min
local encode, decode = struct.pack, struct.unpack
local call, try, format, char = redis.call, redis.pcall, string.format, string.char
local min_ttl = tonumber(ARGV[2])
local NPOL = tonumber(ARGV[3])

local ENTRY = '<Bdddddd'
local FAULT = '<BBBd'
local FW, SW, TB, CC = 1, 2, 3, 4
local U32 = 4294967295
local EXACT = 9007199254740992

local kind, settles, pa, pb, pc = {}, {}, {}, {}, {}
local arg = 4
for j = 1, NPOL do
  kind[j] = tonumber(ARGV[arg])
  settles[j] = ARGV[arg + 1] == '1'
  pa[j], pb[j], pc[j] = tonumber(ARGV[arg + 2]), tonumber(ARGV[arg + 3]), tonumber(ARGV[arg + 4])
  arg = arg + 5
end

-- The stored size of each rate policy's state: a settling bucket keeps
-- (tat, rf, seen), the others what a single-policy limiter stores.
local function size(j)
  local k = kind[j]
  if k == FW then return 16 elseif k == SW then return 24 elseif settles[j] then return 24 end
  return 8
end

-- A rate state as three numbers (a missing key is all zeros): fixed
-- (k, count, 0), sliding (k, prev, curr), bucket (tat, rf, seen).
-- Returns nil and a message for a value this script did not write.
local function read_rate(key, j)
  local v = try('GET', key)
  if type(v) == 'table' then return nil, v.err end
  if not v then return 0, 0, 0 end
  if #v ~= size(j) then
    return nil, format('a string of %d bytes, not the %d of a state', #v, size(j))
  end
  local k = kind[j]
  if k == FW then
    local a, b = decode('<dd', v)
    return a, b, 0
  elseif k == SW then
    local a, b, c = decode('<ddd', v)
    return a, b, c
  elseif settles[j] then
    local a, b, c = decode('<ddd', v)
    return a, b, c
  end
  return (decode('<d', v)), 0, 0
end

-- Stores a rate state, its key expiring at `at` µs (Algorithm::expires_at:
-- from then on it is a key never seen). On an injected clock the TTL is
-- the time left on that timeline, at least min_ttl ms.
local function expire_arg(at, now)
  if injected then return 'PX', format('%d', max(ceil((at - now) / 1000), min_ttl)) end
  return 'PXAT', format('%d', floor(max(at, now) / 1000) + 1)
end

local function write_rate(key, j, a, b, c, now)
  local k, value, at = kind[j]
  if k == FW then
    value = encode('<dd', a, b)
    at = 0
    if b > 0 then at = (a + 1) * pb[j] end
  elseif k == SW then
    value = encode('<ddd', a, b, c)
    local start = a * pb[j]
    at = 0
    if c > 0 then at = start + 2 * pb[j] elseif b > 0 then at = start + pb[j] end
  elseif settles[j] then
    value, at = encode('<ddd', a, b, c), a
  else
    value, at = encode('<d', a), a
  end
  local unit, ttl = expire_arg(at, now)
  call('SET', key, value, unit, ttl)
end

-- A window state rolled forward to the window of `now` (or `least`, if
-- later); never back.
local function roll(j, a, b, c, now, least)
  local k = max(floor(now / pb[j]), least)
  if k > a then
    if kind[j] == SW then
      if k == a + 1 then return k, c, 0 end
      return k, 0, 0
    end
    return k, 0, 0
  end
  return a, b, c
end

-- A rate policy's decision for `cost` (0: a peek) at `now` on a state,
-- and the state after taking it: allowed, remaining, reset_after,
-- retry_after, a, b, c.
local function decide(j, a, b, c, now, cost)
  local k = kind[j]
  if k == FW then
    local limit, window = pa[j], pb[j]
    a, b = roll(j, a, b, 0, now, 0)
    local allowed
    if cost > 0 then
      allowed = b + cost <= limit
      if allowed then b = b + cost end
    else
      allowed = b < limit
    end
    local wait = max((a + 1) * window - now, 0)
    local reset_after = 0
    if b > 0 then reset_after = wait end
    return allowed, max(limit - b, 0), reset_after, wait, a, b, 0
  elseif k == SW then
    local limit, window, window_ms = pa[j], pb[j], pc[j]
    a, b, c = roll(j, a, b, c, now, 0)
    local start = a * window
    local elapsed_ms = floor(max(now - start, 0) / 1000)
    local estimate = ceil(b * max(window_ms - elapsed_ms, 0) / window_ms) + c
    if cost > 0 and estimate + cost <= limit then
      c = c + cost
      return true, limit - estimate - cost, max(start + 2 * window - now, 0), 0, a, b, c
    end
    local reset_at = 0
    if c > 0 then reset_at = start + 2 * window elseif b > 0 then reset_at = start + window end
    local need = cost
    if cost == 0 then
      if estimate < limit then
        return true, limit - estimate, max(reset_at - now, 0), 0, a, b, c
      end
      need = 1
    end
    -- The first instant `need` fits: see sliding_window.lua's allowed_at.
    local at
    local budget = limit - (c + need)
    if budget >= 0 then
      local e = 0
      if b > 0 then e = max(window_ms - floor(budget * window_ms / b), 0) end
      if e < window_ms then at = start + e * 1000 end
    end
    if not at then
      local e = 0
      if c > 0 then e = max(window_ms - floor((limit - need) * window_ms / c), 0) end
      if e < window_ms then at = start + window + e * 1000 else at = start + 2 * window end
    end
    return false, max(limit - estimate, 0), max(reset_at - now, 0), max(at - now, 0), a, b, c
  end
  -- Token bucket (GCRA): a = tat.
  local interval, span = pa[j], pb[j]
  if cost > 0 then
    local next_tat = max(a, now) + cost * interval
    if next_tat > now + span then
      local debt = max(a - now, 0)
      return false, floor(max(span - debt, 0) / interval), debt, next_tat - (now + span), a, b, c
    end
    a = next_tat
  end
  local debt = max(a - now, 0)
  local remaining = floor(max(span - debt, 0) / interval)
  if cost > 0 or remaining > 0 then return true, remaining, debt, 0, a, b, c end
  return false, remaining, debt, max(max(a, now) + interval - (now + span), 0), a, b, c
end

-- How many leases of a concurrency policy are held at `now`; nil and a
-- message for a key of another type. `forget` first removes the expired
-- ones (every call but a peek and a gate's settle does, as the core);
-- without it they are only left out.
local function count_leases(key, now, forget)
  if forget then
    local r = try('ZREMRANGEBYSCORE', key, '-inf', format('%d', now))
    if type(r) == 'table' then return nil, r.err end
    return call('ZCARD', key)
  end
  local r = try('ZCOUNT', key, '(' .. format('%d', now), '+inf')
  if type(r) == 'table' then return nil, r.err end
  return r
end

-- The earliest expiry of the leases held at `now` (some are).
local function first_lease(key, now)
  return tonumber(call('ZRANGEBYSCORE', key, '(' .. format('%d', now), '+inf',
    'WITHSCORES', 'LIMIT', 0, 1)[2])
end

-- The latest expiry of the leases held (some are).
local function last_lease(key)
  return tonumber(call('ZRANGE', key, -1, -1, 'WITHSCORES')[2])
end

-- The earliest and latest expiry of the `n` leases held at `now`.
local function bounds(key, now, n)
  if n == 0 then return nil, nil end
  return first_lease(key, now), last_lease(key)
end

-- Concurrency::peek / decide: (allowed, remaining, reset_after, retry_after).
local function lease_decision(j, n, first, last, now, allowed)
  first, last = first or now, last or now
  return allowed, max(pa[j] - n, 0), max(last - now, 0), max(first - now, 0)
end

-- A lease key expires with its last lease.
local function expire_leases(key, last, now)
  if injected then
    call('PEXPIRE', key, format('%d', max(ceil((last - now) / 1000), min_ttl)))
  else
    call('PEXPIREAT', key, format('%d', ceil(last / 1000)))
  end
end

local function entry(allowed, remaining, reset_after, retry_after, m1, m2, m3)
  return encode(ENTRY, allowed and 1 or 0, remaining, reset_after, retry_after,
    m1 or 0, m2 or 0, m3 or 0)
end

local function foreign(j, message)
  return char(2, j - 1) .. message
end

-- PolicySet::check.
local function check(base, now)
  -- Per policy: its decision, and for the write if the set allows: a
  -- rate policy's state before and after and the instant applied to it;
  -- a concurrency policy's cost, lease id and latest expiry.
  local out, before, after, instant, cost, id, last = {}, {}, {}, {}, {}, {}, {}
  local all = true
  for j = 1, NPOL do
    local key = KEYS[base + j]
    cost[j] = tonumber(ARGV[arg])
    arg = arg + 1
    local o
    if kind[j] == CC then
      id[j] = ARGV[arg]
      arg = arg + 1
      local held, err = count_leases(key, now, true)
      if not held then return foreign(j, err) end
      local l
      if held > 0 then l = last_lease(key) end
      last[j] = l
      if cost[j] > 0 and held < pa[j] then
        o = { true, pa[j] - held - 1, max(max(l or 0, now + pb[j]) - now, 0), 0 }
      else
        local f
        if held > 0 then f = first_lease(key, now) end
        o = { lease_decision(j, held, f, l, now, held < pa[j] and cost[j] == 0) }
      end
    else
      local a, b, c = read_rate(key, j)
      if not a then return foreign(j, b) end
      -- A bucket keeping a ledger applies no instant before its `seen`.
      local t = now
      local ledger = kind[j] == TB and settles[j]
      if ledger then t = max(now, c) end
      local allowed, remaining, reset_after, retry_after, x, y, z = decide(j, a, b, c, t, cost[j])
      if ledger then z = t end
      o = { allowed, remaining, reset_after, retry_after }
      before[j], after[j], instant[j] = { a, b, c }, { x, y, z }, t
    end
    out[j] = o
    all = all and o[1]
  end
  local parts = { char(0) }
  for j = 1, NPOL do
    local o = out[j]
    local m1, m2, m3 = 0, 0, 0
    if all then
      local key = KEYS[base + j]
      if kind[j] == CC then
        if cost[j] > 0 then
          local expiry = now + pb[j]
          call('ZADD', key, format('%d', expiry), id[j])
          expire_leases(key, max(last[j] or 0, expiry), now)
          m1 = expiry
        end
      else
        local s0, s1 = before[j], after[j]
        if s1[1] ~= s0[1] or s1[2] ~= s0[2] or s1[3] ~= s0[3] then
          write_rate(key, j, s1[1], s1[2], s1[3], instant[j])
        end
        if kind[j] == TB then
          m1, m2, m3 = s1[1], s1[2], instant[j]
        else
          m1 = s1[1]
        end
      end
    end
    parts[#parts + 1] = entry(o[1], o[2], o[3], o[4], m1, m2, m3)
  end
  return table.concat(parts)
end

-- Releases the leases named from ARGV[at] on (one value per policy for a
-- concurrency policy): Concurrency::release of each; returns the number
-- freed. Keys of another type free nothing.
local function release_from(base, at, now, per_rate)
  local freed = 0
  for j = 1, NPOL do
    if kind[j] == CC then
      local id = ARGV[at]
      at = at + 1
      if id ~= '' then
        local key = KEYS[base + j]
        local r = try('ZREMRANGEBYSCORE', key, '-inf', format('%d', now))
        if type(r) ~= 'table' then freed = freed + call('ZREM', key, id) end
      end
    else
      at = at + per_rate
    end
  end
  return freed
end

-- Policy::settle_part for policy j: the state after it and the decision,
-- or nil, reason, count.
local function settle_part(j, a, b, c, now, taken, actual, ma, mb, mc)
  if actual ~= taken and not settles[j] then return nil, 1, 0 end
  if actual == taken then
    local allowed, remaining, reset_after, retry_after = decide(j, a, b, c, now, 0)
    return { allowed, remaining, reset_after, retry_after }, a, b, c
  end
  local k = kind[j]
  if k == FW or k == SW then
    a, b, c = roll(j, a, b, c, now, ma)
    if actual > taken then
      local x = actual - taken
      local count = b
      if k == SW then count = c end
      local total = count + x
      if total > U32 or total * pc[j] >= EXACT then return nil, 2, count end
      if k == SW then c = total else b = total end
    else
      local x = taken - actual
      if k == FW then
        if ma == a then b = max(b - x, 0) end
      elseif ma == a then
        c = max(c - x, 0)
      elseif ma + 1 == a then
        b = max(b - x, 0)
      end
    end
    local allowed, remaining, reset_after, retry_after = decide(j, a, b, c, now, 0)
    return { allowed, remaining, reset_after, retry_after }, a, b, c
  end
  -- A settling bucket: a = tat, b = rf, c = seen; the receipt's mark is
  -- (tat_r, rf_r, at).
  local interval = pa[j]
  now = max(now, c)
  if actual > taken then
    local charged = max(a, now, mc) + (actual - taken) * interval
    if charged >= EXACT then return nil, 3, 0 end
    a = charged
  elseif b >= mb then
    local x = taken - actual
    local ending = max(ma - (b - mb), 0)
    local r = min(x, floor(max(min(ending, a) - now, 0) / interval))
    a = a - r * interval
    b = b + r * interval
  end
  c = now
  local allowed, remaining, reset_after, retry_after = decide(j, a, b, c, now, 0)
  return { allowed, remaining, reset_after, retry_after }, a, b, c
end

-- PolicySet::settle (the receipt already matched to the set by the caller).
local function settle(base, now)
  local start = arg
  local before, after, out, held = {}, {}, {}, {}
  for j = 1, NPOL do
    local key = KEYS[base + j]
    if kind[j] == CC then
      local id = ARGV[arg]
      arg = arg + 1
      local n, err = count_leases(key, now, id ~= '')
      if not n then return foreign(j, err) end
      held[j] = { n = n, id = id }
    else
      local taken, actual = tonumber(ARGV[arg]), tonumber(ARGV[arg + 1])
      local ma, mb, mc = tonumber(ARGV[arg + 2]), tonumber(ARGV[arg + 3]), tonumber(ARGV[arg + 4])
      arg = arg + 5
      local a, b, c = read_rate(key, j)
      if not a then return foreign(j, b) end
      local d, x, y, z = settle_part(j, a, b, c, now, taken, actual, ma, mb, mc)
      if not d then
        release_from(base, start, now, 5)
        return encode(FAULT, 1, j - 1, x, y)
      end
      before[j], after[j], out[j] = { a, b, c }, { x, y, z }, d
    end
  end
  local parts = { char(0) }
  for j = 1, NPOL do
    local key = KEYS[base + j]
    local o = out[j]
    if kind[j] == CC then
      local n, id = held[j].n, held[j].id
      if id ~= '' then n = n - call('ZREM', key, id) end
      local f, l = bounds(key, now, n)
      o = { lease_decision(j, n, f, l, now, n < pa[j]) }
    else
      local s0, s1 = before[j], after[j]
      if s1[1] ~= s0[1] or s1[2] ~= s0[2] or s1[3] ~= s0[3] then
        write_rate(key, j, s1[1], s1[2], s1[3], now)
      end
    end
    parts[#parts + 1] = entry(o[1], o[2], o[3], o[4])
  end
  return table.concat(parts)
end

-- PolicySet::renew: per concurrency policy with a lease, whether it is
-- still held and its expiry.
local function renew(base, now)
  local parts = { char(0) }
  for j = 1, NPOL do
    local held, expiry = false, 0
    if kind[j] == CC then
      local id = ARGV[arg]
      arg = arg + 1
      if id ~= '' then
        local key = KEYS[base + j]
        local r = try('ZREMRANGEBYSCORE', key, '-inf', format('%d', now))
        if type(r) == 'table' then return foreign(j, r.err) end
        local score = call('ZSCORE', key, id)
        if score then
          held = true
          expiry = max(tonumber(score), now + pb[j])
          call('ZADD', key, 'XX', format('%d', expiry), id)
          local last = tonumber(call('ZRANGE', key, -1, -1, 'WITHSCORES')[2])
          expire_leases(key, last, now)
        end
      end
    end
    parts[#parts + 1] = entry(held, 0, 0, 0, expiry)
  end
  return table.concat(parts)
end

-- PolicySet::peek.
local function peek(base, now)
  local parts = { char(0) }
  for j = 1, NPOL do
    local key = KEYS[base + j]
    local o
    if kind[j] == CC then
      local held, err = count_leases(key, now, false)
      if not held then return foreign(j, err) end
      local f, l = bounds(key, now, held)
      o = { lease_decision(j, held, f, l, now, held < pa[j]) }
    else
      local a, b, c = read_rate(key, j)
      if not a then return foreign(j, b) end
      o = { decide(j, a, b, c, now, 0) }
    end
    parts[#parts + 1] = entry(o[1], o[2], o[3], o[4])
  end
  return table.concat(parts)
end

-- How many arguments each operation carries per policy, after its code
-- and now.
local WIDTH = {
  c = { 1, 2 }, s = { 5, 1 }, r = { 0, 1 }, x = { 0, 1 }, p = { 0, 0 },
}

local replies = {}
local base = 0
while arg <= #ARGV do
  local op = ARGV[arg]
  local now = server_now
  if injected then
    now = tonumber(ARGV[arg + 1])
    arg = arg + 2
  else
    arg = arg + 1
  end
  -- Where the next operation starts, whatever this one reads: an
  -- operation that ends early (a foreign value, a refused settle) leaves
  -- its remaining arguments unread.
  local width, after = WIDTH[op], arg
  for j = 1, NPOL do
    if kind[j] == CC then after = after + width[2] else after = after + width[1] end
  end
  local reply
  if op == 'c' then
    reply = check(base, now)
  elseif op == 's' then
    reply = settle(base, now)
  elseif op == 'r' then
    reply = renew(base, now)
  elseif op == 'x' then
    reply = char(0) .. encode('<d', release_from(base, arg, now, 0))
  else
    reply = peek(base, now)
  end
  replies[#replies + 1] = reply
  arg = after
  base = base + NPOL
end
return replies
