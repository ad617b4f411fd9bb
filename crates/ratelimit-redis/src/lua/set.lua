-- Policy sets (SPEC.md section 5): ratelimit-core's PolicySet::check,
-- settle, renew, release and peek, with Policy::check_part / settle_part,
-- ported exactly. One call runs one or more operations of one set, in
-- order, each as if it were its own call.
--
-- One Redis key per (set, key): a hash with one field per policy,
-- '<name>:<tag>', read with one HMGET and written with one HSET:
--   a rate policy   its state, little-endian doubles: fixed (k, count),
--                   sliding (k, prev, curr), bucket (tat), a bucket
--                   keeping a ledger (tat, rf, seen)
--   a concurrency   its leases, packed: per lease its 16-byte id and its
--   policy          expiry in µs, a double ('' or absent: none)
-- and, on the server's time, the field ':ttl' holding the key's expiry
-- (Unix ms) as last set, so that the key's PEXPIREAT is sent only when
-- it must move later. The key expires (rounded up to a whole second) no
-- sooner than every field's state stops mattering; a field kept past its
-- own expiry is equivalent to one never written (PolicySet::is_idle), and
-- every call but a peek first drops the expired leases, so a crashed
-- holder's lease is forgotten at its expiry.
--
-- Calling convention:
--   KEYS      one key per operation
--   ARGV[1]   '' to read the server's TIME once for the whole call, or
--             'injected' when each operation carries its own now
--   ARGV[2]   with an injected clock, the least TTL in ms of a key written
--   ARGV[3]   NPOL, the number of policies
--   then per policy 6 values: kind (1 fixed window, 2 sliding window,
--   3 token bucket, 4 concurrency), settles ('1' or '0'), three
--   parameters: fixed (limit, window_us, window_ms), sliding (limit,
--   window_us, window_ms), bucket (interval_us, span_us, 0), concurrency
--   (limit, ttl_us, 0); and its field name
--   then per operation, in the order of KEYS, one packed argument: its
--   code (one byte), with an injected clock its now in µs (a double), and
--   per policy (a number is a little-endian double, an id slot a byte 1
--   and the 16-byte lease id, or 17 zero bytes for none):
--     'c' check    rate: cost; concurrency: cost and the id slot of the
--                  lease to take
--     's' settle   rate: taken, actual (at most 2^53), mark a, b, c (a
--                  window: k, 0, 0; a bucket: tat, rf, at);
--                  concurrency: the id slot
--     'r' renew, 'x' release: concurrency only: the id slot
--     'p' peek     nothing
--   (Packed, because each argument is a string Redis makes for the script
--   and each tonumber() a parse: together they cost more than a
--   decision's arithmetic.)
-- Returns an array of one string per operation, starting with a status
-- byte:
--   0  done: then per policy encode(ENTRY, allowed, remaining,
--      reset_after_us, retry_after_us, m1, m2, m3): a check's marks (a
--      window: k; a bucket: tat, rf, at; a lease: its expiry, 0 for none;
--      all zero when denied); a renew's allowed is 1 for a lease still
--      held and m1 its new expiry; a release: the number freed (a double)
--   1  a settle refused (nothing changed but its leases released): then
--      encode(FAULT, policy index from 0, reason, count) with reason 1
--      (actual != taken on a policy not declared to settle), 2 (a window
--      count out of the exact domain; count is the stored count) or 3 (a
--      bucket's tat out of it)
--   2  the key holds a value this script did not write (nothing changed):
--      then the policy index byte (255: the key itself) and a message
--      (never the key)
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
local call, try, format, char, sub, concat, byte = redis.call, redis.pcall, string.format,
  string.char, string.sub, table.concat, string.byte
local spread = unpack
local min_ttl = tonumber(ARGV[2])
local NPOL = tonumber(ARGV[3])

local ENTRY = '<Bdddddd'
local FAULT = '<BBBd'
local FW, SW, TB, CC = 1, 2, 3, 4
local U32 = 4294967295
local EXACT = 9007199254740992
local LEASE = 24
local LEASE_FMT = '<I4I4I4I4d'
local TTL = ':ttl'
local C, S, R, X, P = byte('csrxp', 1, 5)

-- The set, and the HMGET of every field (the key goes in at [2]).
local kind, settles, pa, pb, pc, field, size = {}, {}, {}, {}, {}, {}, {}
local hmget = { 'HMGET', false }
local arg = 4
for j = 1, NPOL do
  local k = tonumber(ARGV[arg])
  kind[j] = k
  settles[j] = ARGV[arg + 1] == '1'
  pa[j], pb[j], pc[j] = tonumber(ARGV[arg + 2]), tonumber(ARGV[arg + 3]), tonumber(ARGV[arg + 4])
  field[j] = ARGV[arg + 5]
  hmget[j + 2] = field[j]
  if k == FW then
    size[j] = 16
  elseif k == SW or (k == TB and settles[j]) then
    size[j] = 24
  else
    size[j] = 8
  end
  arg = arg + 6
end
hmget[NPOL + 3] = TTL

-- The operation's key and its fields as read; the fields it writes (an
-- HSET being built) and the latest expiry among them.
local key, vals
local hset, nset, latest = { 'HSET', false }, 2, 0

-- Per policy, reused by every operation: a rate state before (a, b, c)
-- and after (x, y, z), the instant applied; a decision; a lease field's
-- leases kept, held, first and last expiry.
local a0, b0, c0, x1, y1, z1, inst, cost = {}, {}, {}, {}, {}, {}, {}, {}
local ok, rem, rst, rty = {}, {}, {}, {}
local kept, held, first, last, changed = {}, {}, {}, {}, {}
-- Per policy, the operation's arguments: a check's cost; a lease id (has,
-- and its four 32-bit words); a settle's taken, actual and mark.
local has, w1, w2, w3, w4 = {}, {}, {}, {}, {}
local taken, actual, ma, mb, mc = {}, {}, {}, {}, {}

local function foreign(j, message)
  return char(2, j - 1) .. message
end

-- Reads the operation's key: nil, or the reply for a key of another type.
local function load(k)
  key = k
  hmget[2] = k
  local r = try(spread(hmget))
  if r.err then return char(2, 255) .. r.err end
  vals = r
  return nil
end

-- Policy j's rate state as three numbers (absent: all zeros): fixed
-- (k, count, 0), sliding (k, prev, curr), bucket (tat, rf, seen). Returns
-- nil and a message for a value this script did not write.
local function read_rate(j)
  local v = vals[j]
  if not v then return 0, 0, 0 end
  if #v ~= size[j] then
    return nil, format('a value of %d bytes, not the %d of a state', #v, size[j])
  end
  local k = kind[j]
  if k == FW then
    local a, b = decode('<dd', v)
    return a, b, 0
  elseif size[j] == 24 then
    local a, b, c = decode('<ddd', v)
    return a, b, c
  end
  return (decode('<d', v)), 0, 0
end

-- Checks policy j's lease field: nil, or a message.
local function check_leases(j)
  local v = vals[j]
  if v and #v % LEASE ~= 0 then
    return format('a value of %d bytes, not whole leases of %d', #v, LEASE)
  end
  return nil
end

-- Scans policy j's leases at `now`, leaving out the operation's lease id
-- for it if `drop`: sets held[j], first[j], last[j] (false when none is
-- held) over the leases held; kept[j] the leases held but that one and
-- changed[j] whether that differs from what is stored. Returns the
-- expiry of the dropped lease if it is held, else false. Ids are read as
-- four 32-bit words, so a scan makes no string unless it drops a lease.
local function scan(j, now, drop)
  local v = vals[j] or ''
  local n, f, l, gone, found = 0, false, false, false, false
  local d1, d2, d3, d4 = w1[j], w2[j], w3[j], w4[j]
  for i = 1, #v, LEASE do
    local a, b, c, d, e = decode(LEASE_FMT, v, i)
    if e <= now then
      gone = true
    elseif drop and a == d1 and b == d2 and c == d3 and d == d4 then
      found = e
    else
      n = n + 1
      if not f or e < f then f = e end
      if not l or e > l then l = e end
    end
  end
  held[j], first[j], last[j] = n, f, l
  if gone or found then
    local parts = {}
    for i = 1, #v, LEASE do
      local a, b, c, d, e = decode(LEASE_FMT, v, i)
      if e > now and not (drop and a == d1 and b == d2 and c == d3 and d == d4) then
        parts[#parts + 1] = sub(v, i, i + LEASE - 1)
      end
    end
    kept[j], changed[j] = concat(parts), true
  else
    kept[j], changed[j] = v, false
  end
  return found
end

-- Policy j's lease field with the operation's lease added, expiring at
-- `expiry`.
local function with_lease(j, expiry)
  local lease = encode(LEASE_FMT, w1[j], w2[j], w3[j], w4[j], expiry)
  if kept[j] == '' then return lease end
  return kept[j] .. lease
end

-- Adds a field to the HSET being built; `at` is when its state stops
-- mattering (µs).
local function put(j, value, at)
  hset[nset + 1], hset[nset + 2] = field[j], value
  nset = nset + 2
  if at > latest then latest = at end
end

-- Sends the HSET built, if any, and moves the key's expiry later if it
-- must. On the server's time the key expires at the next whole second
-- after its latest state, and ':ttl' remembers it; on an injected clock
-- its TTL is the time left on that timeline, at least min_ttl ms, and
-- never shortened.
local function flush(now)
  if nset == 2 then return end
  hset[2] = key
  if injected then
    call(spread(hset, 1, nset))
    local ms = max(ceil((latest - now) / 1000), min_ttl)
    if ms > call('PTTL', key) then call('PEXPIRE', key, format('%d', ms)) end
  else
    local at = (floor(max(latest, now) / 1000000) + 1) * 1000
    if at > (tonumber(vals[NPOL + 1]) or 0) then
      local ttl = format('%d', at)
      hset[nset + 1], hset[nset + 2] = TTL, ttl
      call(spread(hset, 1, nset + 2))
      call('PEXPIREAT', key, ttl)
    else
      call(spread(hset, 1, nset))
    end
  end
  nset, latest = 2, 0
end

-- Writes policy j's rate state (a, b, c) if it differs from what was read.
local function write_rate(j, a, b, c)
  if a == a0[j] and b == b0[j] and c == c0[j] then return end
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
  put(j, value, at)
end

-- A window state rolled forward to the window of `now` (or `least`, if
-- later); never back.
local function roll(j, a, b, c, now, least)
  local k = max(floor(now / pb[j]), least)
  if k > a then
    if kind[j] == SW and k == a + 1 then return k, c, 0 end
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

-- Concurrency::peek / decide for policy j after a scan: sets its decision.
local function lease_decision(j, now, allowed)
  ok[j], rem[j] = allowed, max(pa[j] - held[j], 0)
  rst[j] = max((last[j] or now) - now, 0)
  rty[j] = max((first[j] or now) - now, 0)
end

-- An operation's reply is built in `out` and packed with one
-- encode(DONE, ...): creating a string costs Redis's Lua more than
-- anything else a decision does, so each operation makes as few as it can.
local DONE = '<B' .. string.rep(ENTRY:sub(2), NPOL)
local out = { 0 }
local function entry(j, m1, m2, m3)
  local o = 7 * j - 5
  out[o], out[o + 1], out[o + 2], out[o + 3] = ok[j] and 1 or 0, rem[j], rst[j], rty[j]
  out[o + 4], out[o + 5], out[o + 6] = m1, m2, m3
end
local function done()
  return encode(DONE, spread(out, 1, 1 + 7 * NPOL))
end

-- Reads every rate state of the key into a0, b0, c0 and checks every
-- lease field: nil, or the reply for a value this script did not write.
local function read_all()
  for j = 1, NPOL do
    if kind[j] == CC then
      local err = check_leases(j)
      if err then return foreign(j, err) end
    else
      local a, b, c = read_rate(j)
      if not a then return foreign(j, b) end
      a0[j], b0[j], c0[j] = a, b, c
    end
  end
  return nil
end

-- PolicySet::check.
local function check(now)
  local err = read_all()
  if err then return err end
  local all = true
  for j = 1, NPOL do
    local c = cost[j]
    if kind[j] == CC then
      -- Every check forgets the expired leases, allowed or not.
      scan(j, now, false)
      if c > 0 and held[j] < pa[j] then
        ok[j], rem[j], rty[j] = true, pa[j] - held[j] - 1, 0
        rst[j] = max(max(last[j] or 0, now + pb[j]) - now, 0)
      else
        lease_decision(j, now, held[j] < pa[j] and c == 0)
      end
    else
      -- A bucket keeping a ledger applies no instant before its `seen`.
      local t = now
      local ledger = size[j] == 24 and kind[j] == TB
      if ledger then t = max(now, c0[j]) end
      local allowed, remaining, reset_after, retry_after, x, y, z =
        decide(j, a0[j], b0[j], c0[j], t, c)
      if ledger then z = t end
      ok[j], rem[j], rst[j], rty[j] = allowed, remaining, reset_after, retry_after
      x1[j], y1[j], z1[j], inst[j] = x, y, z, t
    end
    all = all and ok[j]
  end
  for j = 1, NPOL do
    local m1, m2, m3 = 0, 0, 0
    if kind[j] == CC then
      if all and cost[j] > 0 then
        local expiry = now + pb[j]
        put(j, with_lease(j, expiry), max(last[j] or 0, expiry))
        m1 = expiry
      elseif changed[j] then
        put(j, kept[j], last[j] or 0)
      end
    else
      if all then
        write_rate(j, x1[j], y1[j], z1[j])
        if kind[j] == TB then
          m1, m2, m3 = x1[j], y1[j], inst[j]
        else
          m1 = x1[j]
        end
      end
    end
    entry(j, m1, m2, m3)
  end
  flush(now)
  return done()
end

-- Releases the operation's leases: Concurrency::release of each; returns
-- the number freed. A lease field of a foreign shape frees nothing.
local function release_all(now)
  local freed = 0
  for j = 1, NPOL do
    if kind[j] == CC and has[j] and not check_leases(j) then
      if scan(j, now, true) then freed = freed + 1 end
      if changed[j] then put(j, kept[j], last[j] or 0) end
    end
  end
  flush(now)
  return freed
end

-- Policy::settle_part for policy j on its state as read: the decision
-- (set in ok, rem, rst, rty) and the state after it (x1, y1, z1), or
-- false, reason, count.
local function settle_part(j, now, taken, actual, ma, mb, mc)
  if actual ~= taken and not settles[j] then return false, 1, 0 end
  local a, b, c = a0[j], b0[j], c0[j]
  local k = kind[j]
  if actual == taken then
    -- Nothing changes (a settling bucket's instant included).
  elseif k == FW or k == SW then
    a, b, c = roll(j, a, b, c, now, ma)
    if actual > taken then
      local x = actual - taken
      local count = b
      if k == SW then count = c end
      local total = count + x
      if total > U32 or total * pc[j] >= EXACT then return false, 2, count end
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
  else
    -- A settling bucket: a = tat, b = rf, c = seen; the receipt's mark is
    -- (tat_r, rf_r, at).
    local interval = pa[j]
    now = max(now, c)
    if actual > taken then
      local charged = max(a, now, mc) + (actual - taken) * interval
      if charged >= EXACT then return false, 3, 0 end
      a = charged
    elseif b >= mb then
      local x = taken - actual
      local ending = max(ma - (b - mb), 0)
      local r = min(x, floor(max(min(ending, a) - now, 0) / interval))
      a = a - r * interval
      b = b + r * interval
    end
    c = now
  end
  local allowed, remaining, reset_after, retry_after = decide(j, a, b, c, now, 0)
  ok[j], rem[j], rst[j], rty[j] = allowed, remaining, reset_after, retry_after
  x1[j], y1[j], z1[j] = a, b, c
  return true
end

-- PolicySet::settle (the receipt already matched to the set by the caller).
local function settle(now)
  local err = read_all()
  if err then return err end
  for j = 1, NPOL do
    if kind[j] ~= CC then
      local done, reason, count = settle_part(j, now, taken[j], actual[j], ma[j], mb[j], mc[j])
      if not done then
        release_all(now)
        return encode(FAULT, 1, j - 1, reason, count)
      end
    end
  end
  for j = 1, NPOL do
    if kind[j] == CC then
      if has[j] then
        -- Forgets the expired leases and frees this one.
        scan(j, now, true)
        if changed[j] then put(j, kept[j], last[j] or 0) end
      else
        scan(j, now, false)
      end
      lease_decision(j, now, held[j] < pa[j])
    else
      write_rate(j, x1[j], y1[j], z1[j])
    end
    entry(j, 0, 0, 0)
  end
  flush(now)
  return done()
end

-- PolicySet::renew: per concurrency policy with a lease, whether it is
-- still held and its expiry.
local function renew(now)
  for j = 1, NPOL do
    if kind[j] == CC then
      local err = check_leases(j)
      if err then return foreign(j, err) end
    end
  end
  for j = 1, NPOL do
    local still, expiry = false, 0
    if kind[j] == CC then
      if has[j] then
        local was = scan(j, now, true)
        if was then
          still = true
          expiry = max(was, now + pb[j])
          put(j, with_lease(j, expiry), max(last[j] or 0, expiry))
        elseif changed[j] then
          put(j, kept[j], last[j] or 0)
        end
      end
    end
    ok[j], rem[j], rst[j], rty[j] = still, 0, 0, 0
    entry(j, expiry, 0, 0)
  end
  flush(now)
  return done()
end

-- PolicySet::peek.
local function peek(now)
  local err = read_all()
  if err then return err end
  for j = 1, NPOL do
    if kind[j] == CC then
      scan(j, now, false)
      lease_decision(j, now, held[j] < pa[j])
    else
      local allowed, remaining, reset_after, retry_after = decide(j, a0[j], b0[j], c0[j], now, 0)
      ok[j], rem[j], rst[j], rty[j] = allowed, remaining, reset_after, retry_after
    end
    entry(j, 0, 0, 0)
  end
  return done()
end

-- Reads an operation's packed argument (see the calling convention)
-- from `pos` on into the per-policy tables.
local function parse(op, a, pos)
  for j = 1, NPOL do
    if kind[j] == CC then
      if op ~= P then
        if op == C then
          cost[j] = decode('<d', a, pos)
          pos = pos + 8
        end
        local flag
        flag, w1[j], w2[j], w3[j], w4[j] = decode('<BI4I4I4I4', a, pos)
        has[j] = flag == 1
        pos = pos + 17
      end
    elseif op == C then
      cost[j] = decode('<d', a, pos)
      pos = pos + 8
    elseif op == S then
      taken[j], actual[j], ma[j], mb[j], mc[j] = decode('<ddddd', a, pos)
      pos = pos + 40
    end
  end
end

local replies = {}
for n = 1, #KEYS do
  local a = ARGV[arg + n - 1]
  local op = byte(a, 1)
  local now, pos = server_now, 2
  if injected then
    now = decode('<d', a, 2)
    pos = 10
  end
  parse(op, a, pos)
  local reply = load(KEYS[n])
  if reply then
    if op == X then reply = char(0) .. encode('<d', 0) end
  elseif op == C then
    reply = check(now)
  elseif op == S then
    reply = settle(now)
  elseif op == R then
    reply = renew(now)
  elseif op == X then
    reply = char(0) .. encode('<d', release_all(now))
  else
    reply = peek(now)
  end
  replies[n] = reply
end
return replies
