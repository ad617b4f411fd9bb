-- Policy sets (SPEC.md section 5): ratelimit-core's PolicySet::check,
-- settle, renew, release and peek, with Policy::check_part / settle_part,
-- ported exactly. One call runs one or more operations of one set, in
-- order, each as if it were its own call.
--
-- One Redis key per (set, key): a string, read for the whole call with one
-- MGET (one GET for a call of one operation) and written with one SET
-- carrying its expiry. Its layout, numbers little-endian doubles:
--   a header      a byte 1 (the layout's version) and, on the server's
--                 time, the key's expiry (Unix ms) as last set (0 on an
--                 injected clock), so that an expiry is sent only when it
--                 must move later (else the SET keeps the key's TTL)
--   per policy    its id (see below), then its state: fixed window (k,
--   a section     count), sliding window (k, prev, curr), token bucket
--                 (tat), a bucket keeping a ledger (tat, rf, seen), a
--                 concurrency policy its number of leases n, then n leases
--                 of 24 bytes: a 16-byte id and an expiry in µs
-- A policy's id is a 49-bit hash of its name times 8 plus its tag (1
-- fixed, 2 sliding, 3 bucket, 4 bucket with a ledger, 5 concurrency), so
-- that a renamed policy or a changed algorithm reads as new while a
-- changed limit keeps its state. The script writes the sections of the
-- set's rate policies first, in set order, then its concurrency policies'
-- (so one struct.unpack reads every number but the leases), then,
-- unchanged, the sections of policies it does not know (another set's,
-- sharing the key during a reload): a value in that order is read on the
-- fast path, any other is parsed section by section. A section never
-- written reads as zeros, which every policy takes as new.
--
-- The key expires (rounded up to a whole second) no sooner than every
-- section's state stops mattering; a state kept past its own expiry is
-- equivalent to one never written (PolicySet::is_idle), and every call but
-- a peek first drops the expired leases, so a crashed holder's lease is
-- forgotten at its expiry.
--
-- Calling convention:
--   KEYS      one key per operation
--   ARGV[1]   '' to read the server's TIME once for the whole call, or
--             'injected' when each operation carries its own now
--   ARGV[2]   with an injected clock, the least TTL in ms of a key written
--   ARGV[3]   the set, packed: per policy '<BBdddd': kind (1 fixed window,
--             2 sliding window, 3 token bucket, 4 concurrency), settles (1
--             or 0), three parameters: fixed (limit, window_us,
--             window_ms), sliding (limit, window_us, window_ms), bucket
--             (interval_us, span_us, 0), concurrency (limit, ttl_us, 0);
--             and its id
--   ARGV[4]   every operation's argument, in the order of KEYS, one after
--             the other: its code (one byte), with an injected clock its
--             now in µs (a double), and per policy (a number is a
--             little-endian double, an id slot a byte 1 and the lease id as
--             four little-endian 32-bit words, or a byte 0 for none):
--     'c' check    rate: cost; concurrency: cost and the id slot of the
--                  lease to take
--     's' settle   rate: taken, actual (at most 2^53), mark a, b, c (a
--                  window: k, 0, 0; a bucket: tat, rf, at);
--                  concurrency: the id slot
--     'r' renew, 'x' release: concurrency only: the id slot
--     'p' peek     nothing
--   (One string for the whole call: each argument is a string Redis makes
--   for the script, and each tonumber() a parse.)
-- Returns one string: each operation's reply after the other's, each a
-- status byte, then doubles:
--   0  done: a check allowed, and a check denied (status 3): per policy r,
--      remaining, reset_after_us, with r -1 when the policy allows, else
--      its retry_after_us, then its marks (a window: k; a bucket: tat, rf,
--      at; a concurrency policy: its lease's expiry, 0 for none; all
--      meaningless when denied); a settle or a peek: per policy r,
--      remaining, reset_after_us; a renew: per concurrency policy its
--      lease's new expiry, 0 when it is no longer held (or none was
--      given); a release: the number freed
--   1  a settle refused (nothing changed but its leases released): then
--      encode(FAULT, policy index from 0, reason, count) with reason 1
--      (actual != taken on a policy not declared to settle), 2 (a window
--      count out of the exact domain; count is the stored count) or 3 (a
--      bucket's tat out of it)
--   2  the key holds a value this script did not write (nothing changed):
--      then the policy index byte (255: the key itself), the length of a
--      message (2 bytes) and the message (never the key)
--
-- Inside Redis's Lua every interpreted step costs: a table lookup or a
-- call some 30-40 ns, a string made 100-250 ns, a struct.pack 250 ns and
-- 35 ns a number, making a function in proportion to the locals it and
-- the functions before it capture. So a check and a settle on the common
-- layout run code written for the set (set_fast.rs), its numbers in
-- locals; an operation reads its argument and the key's numbers with one
-- struct.unpack each, makes one string for the value it writes (when it
-- changes anything) and runs one SET; the replies are packed once per
-- call; and the generic operations are made only when a call needs them.
--
-- Lua numbers are doubles: every value stays below 2^53 in the domain the
-- policies are validated for (see prelude.lua), and an actual amount is
-- capped at 2^53 by the caller, which only ever makes a charge leave the
-- domain.

-- The script runs two ways: as a Redis function (a library loaded once
-- with FUNCTION LOAD, called with FCALL), or, where functions are not
-- available, as a script called with EVALSHA. Everything down to main()
-- is made once per library as a function and once per call as a script;
-- main() is one call. A library is loaded before Redis's Lua libraries
-- can be used, so the functions of `math`, `string`, `struct`, `table`
-- and `redis` are taken on the first call (init), and what one call sets
-- (its clock, its arguments, its replies) lives in locals main() sets.
local injected, server_now, min_ttl
local floor, ceil, max, min
local encode, decode
local call, try, format, char, sub, concat, byte, rep
local spread

local function init()
  floor, ceil, max, min = math.floor, math.ceil, math.max, math.min
  encode, decode = struct.pack, struct.unpack
  call, try, format, char, sub, concat, byte, rep = redis.call, redis.pcall, string.format,
    string.char, string.sub, table.concat, string.byte, string.rep
  spread = unpack
end

local FW, SW, TB, CC = 1, 2, 3, 4
local U32 = 4294967295
local EXACT = 9007199254740992
local LEASE = 24
local LEASE_FMT = '<I4I4I4I4d'
local VERSION = 1
-- The operations' codes: byte('csrxp', 1, 5).
local C, S, R, X, P = 99, 115, 114, 120, 112

-- The formats of a value and of the replies (see FN and CHECKED in
-- generic()), which the fast paths use: set with them, by the code written
-- for the set.
local FSIZE, HEAD, BODY, CHECKED, DECIDED

-- Scans the n leases of `value` from p on at `now`, leaving out the lease of
-- id (d1, d2, d3, d4) if `drop`: returns, over the leases held, how many,
-- the first and last expiry (false when none is held), the expiry of the
-- lease dropped if it is held (else false), and the leases held as a
-- string if they differ from those stored (a lease expired or dropped),
-- else nil. Ids are read as four 32-bit words, so a scan makes no string
-- unless it drops a lease.
local function scan_block(value, p, n, now, drop, d1, d2, d3, d4)
  local stop = p + n * LEASE - 1
  local h, f, l, gone, found = 0, false, false, false, false
  for i = p, stop, LEASE do
    local a, b, c, d, e = decode(LEASE_FMT, value, i)
    if e <= now then
      gone = true
    elseif drop and a == d1 and b == d2 and c == d3 and d == d4 then
      found = e
    else
      h = h + 1
      if not f or e < f then f = e end
      if not l or e > l then l = e end
    end
  end
  if not (gone or found) then return h, f, l, found, nil end
  local parts = {}
  for i = p, stop, LEASE do
    local a, b, c, d, e = decode(LEASE_FMT, value, i)
    if e > now and not (drop and a == d1 and b == d2 and c == d3 and d == d4) then
      parts[#parts + 1] = sub(value, i, i + LEASE - 1)
    end
  end
  return h, f, l, found, concat(parts)
end

-- The key's expiry to keep in the header after a write whose latest
-- state stops mattering at `latest` (µs), the header holding `e`: on the
-- server's time the next whole second after it (Unix ms), never earlier
-- than `e`; on an injected clock 0 (the key's TTL is then the time left
-- on that timeline, at least min_ttl ms, and never shortened).
local function expiry_after(e, latest, now)
  if injected then return 0 end
  return max(e, (floor(max(latest, now) / 1000000) + 1) * 1000)
end

-- Writes `value` to key `k`, its header's expiry moved from `e` to `e2`
-- (expiry_after), moving the key's expiry only when it must.
local function store(k, value, e, e2, latest, now)
  if injected then
    local ms = max(ceil((latest - now) / 1000), min_ttl)
    if ms > call('PTTL', k) then
      call('SET', k, value, 'PX', format('%d', ms))
    else
      call('SET', k, value, 'KEEPTTL')
    end
  elseif e2 > e then
    call('SET', k, value, 'PXAT', format('%d', e2))
  else
    call('SET', k, value, 'KEEPTTL')
  end
end

-- A rate policy's decision for `cost` (0: a peek) at `now` on a state,
-- and the state after taking it, per algorithm, on its parameters:
-- allowed, remaining, reset_after, retry_after and the state. A window
-- rolls forward to the window of `now`, never back.
local function decide_fw(limit, window, a, b, now, cost)
  local k = max(floor(now / window), 0)
  if k > a then a, b = k, 0 end
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
  return allowed, max(limit - b, 0), reset_after, wait, a, b
end

local function decide_sw(limit, window, window_ms, a, b, c, now, cost)
  local k = max(floor(now / window), 0)
  if k > a then
    if k == a + 1 then b, c = c, 0 else b, c = 0, 0 end
    a = k
  end
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
  local first_at
  local budget = limit - (c + need)
  if budget >= 0 then
    local e = 0
    if b > 0 then e = max(window_ms - floor(budget * window_ms / b), 0) end
    if e < window_ms then first_at = start + e * 1000 end
  end
  if not first_at then
    local e = 0
    if c > 0 then e = max(window_ms - floor((limit - need) * window_ms / c), 0) end
    if e < window_ms then first_at = start + window + e * 1000 else first_at = start + 2 * window end
  end
  return false, max(limit - estimate, 0), max(reset_at - now, 0), max(first_at - now, 0), a, b, c
end

-- Token bucket (GCRA): a = tat.
local function decide_tb(interval, span, a, now, cost)
  if cost > 0 then
    local next_tat = max(a, now) + cost * interval
    if next_tat > now + span then
      local debt = max(a - now, 0)
      return false, floor(max(span - debt, 0) / interval), debt, next_tat - (now + span), a
    end
    a = next_tat
  end
  local debt = max(a - now, 0)
  local remaining = floor(max(span - debt, 0) / interval)
  if cost > 0 or remaining > 0 then return true, remaining, debt, 0, a end
  return false, remaining, debt, max(max(a, now) + interval - (now + span), 0), a
end

-- Policy::settle_part of a window (`sw`: a sliding one) on its state
-- (a, b, c) with actual ~= taken: true and the state after it, or false,
-- the reason and the count (see the calling convention).
local function settle_window(sw, window, window_ms, a, b, c, now, taken, actual, ma)
  -- Rolled forward to the window of `now`, or the receipt's if later.
  local k = max(floor(now / window), ma)
  if k > a then
    if sw and k == a + 1 then a, b, c = k, c, 0 else a, b, c = k, 0, 0 end
  end
  if actual > taken then
    local x = actual - taken
    local count = b
    if sw then count = c end
    local total = count + x
    if total > U32 or total * window_ms >= EXACT then return false, 2, count end
    if sw then c = total else b = total end
  else
    local x = taken - actual
    if not sw then
      if ma == a then b = max(b - x, 0) end
    elseif ma == a then
      c = max(c - x, 0)
    elseif ma + 1 == a then
      b = max(b - x, 0)
    end
  end
  return true, a, b, c
end

-- Policy::settle_part of a settling bucket (a = tat, b = rf, c = seen;
-- the receipt's mark is (tat_r, rf_r, at)) with actual ~= taken: true and
-- the state after it, its `seen` the instant applied, or false, 3, 0.
local function settle_bucket(interval, a, b, c, now, taken, actual, ma, mb, mc)
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
  return true, a, b, now
end

-- The replies. Every operation's reply goes into one string for the whole
-- call: its numbers into `out` (from no + 1 on), its format into `fmts`,
-- packed with one encode at the end (or every few thousand numbers, as
-- the Lua stack bounds an unpack): creating a string costs Redis's Lua
-- more than anything else a decision does.
local out, no, fmts, chunks
local function pack_out()
  chunks[#chunks + 1] = encode('<' .. concat(fmts), spread(out, 1, no))
  no, fmts = 0, {}
end
-- The operations' arguments, one after the other (see the calling
-- convention), and the set, packed (ARGV[3]).
local blob, desc

-- A check and a settle of this set on the fast path's layout (a value
-- never written, or the set's own sections first and nothing after them,
-- no lease expired), written by set_fast.rs for the set: its parameters
-- and section ids as constants, its numbers in locals, deciding with the
-- same functions as check() and settle(), so exactly as they do.
-- fast_check(k, stored, pos) and fast_settle(...) read the operation's
-- argument from `pos` on and return where the next one starts and the
-- value written if any, or nil (nothing done) for any other layout, and
-- for a settle refused. nil for a set with more than one concurrency
-- policy.
local fast_check, fast_settle
--@FAST_CHECK@

-- The generic operations: every operation on any value, its policies'
-- state and decisions in per-policy tables. Made on a call's first
-- operation off the fast paths (making a function costs Redis's Lua in
-- proportion to the locals it and the functions before it capture, and
-- most calls never need these).
local function generic()
  -- The set. Per policy: kind, settles, parameters, id; nst the numbers
  -- of its state (a concurrency policy: its count of leases); at its id's
  -- index in a value's numbers as read (see below). `rates` and `ccs` list
  -- the rate and the concurrency policies, in set order.
  local NPOL = #desc / 34
  local kind, settles, ledger, pa, pb, pc, id, nst, at = {}, {}, {}, {}, {}, {}, {}, {}, {}
  local rates, ccs = {}, {}
  do
    local d = { decode('<' .. rep('BBdddd', NPOL), desc) }
    for j = 1, NPOL do
      local o = 6 * j - 6
      local k = d[o + 1]
      kind[j], settles[j] = k, d[o + 2] == 1
      pa[j], pb[j], pc[j], id[j] = d[o + 3], d[o + 4], d[o + 5], d[o + 6]
      ledger[j] = k == TB and settles[j]
      if k == CC then
        ccs[#ccs + 1] = j
        nst[j] = 1
      else
        rates[#rates + 1] = j
        if k == FW then nst[j] = 2 elseif k == TB and not ledger[j] then nst[j] = 1 else nst[j] = 3 end
      end
    end
  end
  local NCC = #ccs
  -- The state's numbers as one struct format, which reads and writes the
  -- header, every rate policy's section and the first concurrency policy's
  -- id and count: HEAD reads them (FN numbers, FSIZE bytes), BODY writes
  -- them and, as a string, all that follows (the leases, the other
  -- concurrency policies' sections, the unknown sections). ZERO: a key
  -- never written.
  local FN, FSIZE, HEAD, BODY, ZERO
  do
    local f, z = { '<Bd' }, { VERSION, 0 }
    local function section(j, n)
      at[j] = #z + 1
      f[#f + 1] = rep('d', n + 1)
      z[#z + 1] = id[j]
      for _ = 1, n do z[#z + 1] = 0 end
    end
    for _, j in ipairs(rates) do section(j, nst[j]) end
    if NCC > 0 then section(ccs[1], 1) end
    HEAD = concat(f)
    BODY = HEAD .. 'c0'
    FN = #z
    FSIZE = 1 + 8 * (FN - 1)
    ZERO = z
  end

  -- The replies' formats: a check's (CHECK_AT[j]: where policy j's entry
  -- starts), decisions', a renew's.
  local CHECKED, CHECK_AT, DECIDED, RENEWED = nil, {}, nil, nil
  do
    local g, o = { 'B' }, 1
    for j = 1, NPOL do
      CHECK_AT[j] = o
      if kind[j] == TB then
        g[#g + 1] = 'dddddd'
        o = o + 6
      else
        g[#g + 1] = 'dddd'
        o = o + 4
      end
    end
    CHECKED = concat(g)
    DECIDED = 'B' .. rep('ddd', NPOL)
    RENEWED = 'B' .. rep('d', NCC)
  end
  local FAULT = 'BBBd'
  -- The operation's key, its stored value (v, '' for none) and its
  -- numbers (s, the HEAD's, in place: what is decided is written back into
  -- it); per concurrency policy, where its leases start in v (lp) and how
  -- many (ln); the unknown sections (`tail`, a string, or the position in v
  -- where they start).
  local key, v, s, tail
  local lp, ln = {}, {}
  -- Whether the operation changes the value, and the latest instant (µs)
  -- at which a part it changed stops mattering.
  local dirty, latest = false, 0
  -- Per policy, reused by every operation: a rate state after (x, y, z),
  -- the instant applied; a decision; a concurrency policy's leases held
  -- (their count), first and last expiry, and the leases to write (nil:
  -- those stored) and how many.
  local x1, y1, z1, inst = {}, {}, {}, {}
  local ok, rem, rst, rty = {}, {}, {}, {}
  local held, first, last, block, count = {}, {}, {}, {}, {}
  -- Per policy, the operation's arguments: a check's cost; a lease id (has,
  -- and its four 32-bit words); a settle's taken, actual and mark.
  local cost, has, w1, w2, w3, w4 = {}, {}, {}, {}, {}, {}
  local taken, actual, ma, mb, mc = {}, {}, {}, {}, {}

  local function foreign(j, message)
    return { j - 1, message }
  end

  -- Reads v, not in the fast path's order, section by section: into s, lp,
  -- ln and tail. Returns nil, or the reply for a value this script did not
  -- write.
  local function parse_sections()
    local size = #v
    if size < 9 or byte(v, 1) ~= VERSION then
      return foreign(256, format('a value of %d bytes, not one this script wrote', size))
    end
    s = { spread(ZERO, 1, FN) }
    s[2] = decode('<d', v, 2)
    for _, j in ipairs(ccs) do ln[j], lp[j] = 0, 1 end
    local index = {}
    for j = 1, NPOL do index[id[j]] = j end
    local seen, others, pos = {}, {}, 10
    while pos <= size do
      if pos + 7 > size then
        return foreign(256, format('a section cut short at byte %d of %d', pos, size))
      end
      local sid = decode('<d', v, pos)
      local tag = sid % 8
      local j = index[sid]
      local n, bytes = 0, 0
      if tag == 1 then
        n = 2
      elseif tag == 2 or tag == 4 then
        n = 3
      elseif tag == 3 then
        n = 1
      elseif tag == 5 then
        if pos + 15 > size then
          return foreign(j or 256, format('a section cut short at byte %d of %d', pos, size))
        end
        local leases = decode('<d', v, pos + 8)
        if leases < 0 or leases ~= floor(leases) or pos + 15 + leases * LEASE > size then
          return foreign(j or 256, format('%s leases in %d bytes', leases, size - pos - 15))
        end
        n, bytes = 1, leases * LEASE
      else
        return foreign(j or 256, format('a section of tag %s at byte %d', tag, pos))
      end
      local stop = pos + 8 * (n + 1) + bytes
      if stop - 1 > size then
        return foreign(j or 256, format('a section of %d bytes cut short', stop - pos))
      end
      if j then
        if seen[j] then return foreign(j, 'a policy stored twice') end
        seen[j] = true
        if kind[j] == CC then
          ln[j], lp[j] = bytes / LEASE, pos + 16
          if j == ccs[1] then s[at[j] + 1] = ln[j] end
        else
          for i = 1, n do s[at[j] + i] = decode('<d', v, pos + 8 * i) end
        end
      else
        others[#others + 1] = sub(v, pos, stop - 1)
      end
      pos = stop
    end
    tail = concat(others)
    return nil
  end

  -- Reads the operation's key, its value `stored` (false: none; a table:
  -- GET's error): sets key, v, s, lp, ln, tail. Returns nil, or the reply
  -- for a key this script did not write (its index 255: the key itself).
  local function load(k, stored)
    key = k
    dirty, latest = false, 0
    for c = 1, NCC do
      local j = ccs[c]
      ln[j], lp[j], block[j], count[j] = 0, 1, nil, 0
    end
    if type(stored) == 'table' then return { 255, stored.err } end
    if not stored then
      v, s, tail = '', { spread(ZERO, 1, FN) }, 1
      return nil
    end
    v = stored
    local size = #v
    -- The fast path: the set's own sections first, in its order.
    if size >= FSIZE then
      s = { decode(HEAD, v) }
      local fast = s[1] == VERSION
      if fast then
        for j = 1, NPOL do
          if at[j] and s[at[j]] ~= id[j] then
            fast = false
            break
          end
        end
      end
      local pos = s[FN + 1]
      for c = 1, NCC do
        if not fast then break end
        local j, n = ccs[c], nil
        if c == 1 then
          n = s[FN]
        elseif pos + 15 <= size then
          local sid
          sid, n = decode('<dd', v, pos)
          if sid ~= id[j] then fast = false end
          pos = pos + 16
        else
          fast = false
        end
        if fast and n >= 0 and n == floor(n) and pos + n * LEASE - 1 <= size then
          lp[j], ln[j] = pos, n
          pos = pos + n * LEASE
        else
          fast = false
        end
      end
      if fast then
        tail = pos
        for c = 1, NCC do
          local j = ccs[c]
          count[j] = ln[j]
        end
        return nil
      end
    end
    local err = parse_sections()
    if err then return err end
    for _, j in ipairs(ccs) do count[j] = ln[j] end
    return nil
  end

  -- Policy j's leases as stored.
  local function stored_leases(j)
    if ln[j] == 0 then return '' end
    return sub(v, lp[j], lp[j] + ln[j] * LEASE - 1)
  end

  -- Scans policy j's leases (scan_block), leaving out the operation's lease
  -- id for it if `drop`: sets held[j], first[j], last[j], and if the leases
  -- held differ from those stored, block[j] and count[j] to them and marks
  -- the value changed. Returns the expiry of the dropped lease if it is
  -- held, else false.
  local function scan(j, now, drop)
    local h, f, l, found, kept = scan_block(v, lp[j], ln[j], now, drop, w1[j], w2[j], w3[j], w4[j])
    held[j], first[j], last[j] = h, f, l
    if kept then
      block[j], count[j] = kept, h
      dirty = true
      if l and l > latest then latest = l end
    end
    return found
  end

  -- Adds the operation's lease for policy j, expiring at `expiry`, to the
  -- leases scan left.
  local function add_lease(j, expiry)
    local lease = encode(LEASE_FMT, w1[j], w2[j], w3[j], w4[j], expiry)
    block[j] = (block[j] or stored_leases(j)) .. lease
    count[j] = held[j] + 1
    dirty = true
    latest = max(latest, last[j] or 0, expiry)
  end

  -- What follows the numbers BODY writes: the first concurrency policy's
  -- leases, the other concurrency policies' sections, the unknown sections.
  -- Sets the first one's count in s.
  local function rest_of_value()
    if NCC == 0 then
      if type(tail) == 'string' then return tail end
      if tail <= #v then return sub(v, tail) end
      return ''
    end
    local j = ccs[1]
    s[FN] = count[j]
    if NCC == 1 and type(tail) == 'number' then
      -- On the fast path the stored leases run on to the end of v.
      local leases = block[j]
      if not leases then
        if lp[j] <= #v then return sub(v, lp[j]) end
        return ''
      end
      if tail <= #v then return leases .. sub(v, tail) end
      return leases
    end
    local parts = {}
    for c = 1, NCC do
      j = ccs[c]
      if c > 1 then parts[#parts + 1] = encode('<dd', id[j], count[j]) end
      parts[#parts + 1] = block[j] or stored_leases(j)
    end
    if type(tail) == 'string' then
      parts[#parts + 1] = tail
    elseif tail <= #v then
      parts[#parts + 1] = sub(v, tail)
    end
    return concat(parts)
  end

  -- Writes the value, if the operation changed it; returns the value
  -- written, or nil.
  local function flush(now)
    if not dirty then return nil end
    s[FN + 1] = rest_of_value()
    local e = s[2]
    local e2 = expiry_after(e, latest, now)
    s[2] = e2
    local value = encode(BODY, spread(s, 1, FN + 1))
    store(key, value, e, e2, latest, now)
    return value
  end

  -- Writes policy j's rate state (a, b, c) if it differs from what was read.
  local function write_rate(j, a, b, c)
    local o = at[j]
    local k, until_ = kind[j], 0
    if k == FW then
      if a == s[o + 1] and b == s[o + 2] then return end
      s[o + 1], s[o + 2] = a, b
      if b > 0 then until_ = (a + 1) * pb[j] end
    elseif k == SW then
      if a == s[o + 1] and b == s[o + 2] and c == s[o + 3] then return end
      s[o + 1], s[o + 2], s[o + 3] = a, b, c
      local start = a * pb[j]
      if c > 0 then until_ = start + 2 * pb[j] elseif b > 0 then until_ = start + pb[j] end
    elseif ledger[j] then
      if a == s[o + 1] and b == s[o + 2] and c == s[o + 3] then return end
      s[o + 1], s[o + 2], s[o + 3] = a, b, c
      until_ = a
    else
      if a == s[o + 1] then return end
      s[o + 1] = a
      until_ = a
    end
    dirty = true
    if until_ > latest then latest = until_ end
  end

  -- Policy j's rate state as read: three numbers (zeros past its state).
  local function state(j)
    local o, n = at[j], nst[j]
    if n == 2 then return s[o + 1], s[o + 2], 0 end
    if n == 3 then return s[o + 1], s[o + 2], s[o + 3] end
    return s[o + 1], 0, 0
  end

  -- Policy j's decision: allowed, remaining, reset_after, retry_after and
  -- its state after it as three numbers (zeros past its state).
  local function decide(j, a, b, c, now, cost)
    local k = kind[j]
    if k == FW then
      local allowed, remaining, reset_after, retry_after, x, y = decide_fw(pa[j], pb[j], a, b, now, cost)
      return allowed, remaining, reset_after, retry_after, x, y, 0
    elseif k == SW then
      return decide_sw(pa[j], pb[j], pc[j], a, b, c, now, cost)
    end
    local allowed, remaining, reset_after, retry_after, x = decide_tb(pa[j], pb[j], a, now, cost)
    return allowed, remaining, reset_after, retry_after, x, b, c
  end

  -- Concurrency::peek / decide for policy j after a scan: sets its decision.
  local function lease_decision(j, now, allowed)
    ok[j], rem[j] = allowed, max(pa[j] - held[j], 0)
    rst[j] = max((last[j] or now) - now, 0)
    rty[j] = max((first[j] or now) - now, 0)
  end

  -- The decisions as DECIDED lays them out, under `status`.
  local function decided(status)
    out[no + 1] = status
    local o = no + 2
    for j = 1, NPOL do
      if ok[j] then out[o] = -1 else out[o] = rty[j] end
      out[o + 1], out[o + 2] = rem[j], rst[j]
      o = o + 3
    end
    no = o - 1
    fmts[#fmts + 1] = DECIDED
  end
  -- A reply for a value this script did not write, from foreign().
  local function refuse(reply)
    out[no + 1], out[no + 2], out[no + 3], out[no + 4] = 2, reply[1], #reply[2], reply[2]
    no = no + 4
    fmts[#fmts + 1] = 'BBI2c0'
  end

  -- PolicySet::check. Each policy's decision goes into `out` as CHECKED
  -- lays it out: r (-1 when allowed, else the retry_after), remaining,
  -- reset_after and its marks (CHECK_AT[j]: where policy j's entry starts).
  local function check(now)
    local all = true
    local base = no + 1
    local o = base + 1
    for j = 1, NPOL do
      local c = cost[j]
      if kind[j] == CC then
        -- Every check forgets the expired leases, allowed or not.
        scan(j, now, false)
        local limit, h = pa[j], held[j]
        if c > 0 and h < limit then
          out[o], out[o + 1] = -1, limit - h - 1
          out[o + 2] = max(max(last[j] or 0, now + pb[j]) - now, 0)
        else
          -- Concurrency::peek, or a gate (cost 0).
          if h < limit and c == 0 then
            out[o] = -1
          else
            out[o] = max((first[j] or now) - now, 0)
            all = false
          end
          out[o + 1], out[o + 2] = max(limit - h, 0), max((last[j] or now) - now, 0)
        end
        out[o + 3] = 0
        o = o + 4
      else
        local p, size = at[j], nst[j]
        local a, b, z = s[p + 1], 0, 0
        if size == 2 then
          b = s[p + 2]
        elseif size == 3 then
          b, z = s[p + 2], s[p + 3]
        end
        -- A bucket keeping a ledger applies no instant before its `seen`.
        local t = now
        if ledger[j] then t = max(now, z) end
        local allowed, remaining, reset_after, retry_after, x, y, w = decide(j, a, b, z, t, c)
        if allowed then
          out[o] = -1
        else
          out[o] = retry_after
          all = false
        end
        out[o + 1], out[o + 2], out[o + 3] = remaining, reset_after, x
        if kind[j] == TB then
          out[o + 4], out[o + 5] = y, t
          o = o + 6
        else
          o = o + 4
        end
        if ledger[j] then w = t end
        x1[j], y1[j], z1[j] = x, y, w
      end
    end
    no = o - 1
    fmts[#fmts + 1] = CHECKED
    if not all then
      -- Only the expired leases dropped are written.
      out[base] = 3
      return
    end
    out[base] = 0
    for j = 1, NPOL do
      if kind[j] == CC then
        if cost[j] > 0 then
          local expiry = now + pb[j]
          add_lease(j, expiry)
          out[base + CHECK_AT[j] + 3] = expiry
        end
      else
        write_rate(j, x1[j], y1[j], z1[j])
      end
    end
  end

  -- Releases the operation's leases: Concurrency::release of each; returns
  -- the number freed.
  local function release_all(now)
    local freed = 0
    for _, j in ipairs(ccs) do
      if has[j] and scan(j, now, true) then freed = freed + 1 end
    end
    return freed
  end

  -- Policy::settle_part for policy j on its state as read: the decision
  -- (set in ok, rem, rst, rty) and the state after it (x1, y1, z1), or
  -- false, reason, count.
  local function settle_part(j, now, taken, actual, ma, mb, mc)
    if actual ~= taken and not settles[j] then return false, 1, 0 end
    local a, b, c = state(j)
    local k = kind[j]
    -- actual == taken changes nothing (a settling bucket's instant
    -- included).
    if actual ~= taken then
      local done
      if k == TB then
        done, a, b, c = settle_bucket(pa[j], a, b, c, now, taken, actual, ma, mb, mc)
        if done then now = c end
      else
        done, a, b, c = settle_window(k == SW, pb[j], pc[j], a, b, c, now, taken, actual, ma)
      end
      if not done then return false, a, b end
    end
    local allowed, remaining, reset_after, retry_after = decide(j, a, b, c, now, 0)
    ok[j], rem[j], rst[j], rty[j] = allowed, remaining, reset_after, retry_after
    x1[j], y1[j], z1[j] = a, b, c
    return true
  end

  -- PolicySet::settle (the receipt already matched to the set by the caller).
  local function settle(now)
    for _, j in ipairs(rates) do
      local done, reason, n = settle_part(j, now, taken[j], actual[j], ma[j], mb[j], mc[j])
      if not done then
        release_all(now)
        out[no + 1], out[no + 2], out[no + 3], out[no + 4] = 1, j - 1, reason, n
        no = no + 4
        fmts[#fmts + 1] = FAULT
        return
      end
    end
    for j = 1, NPOL do
      if kind[j] == CC then
        -- Forgets the expired leases and frees this one.
        scan(j, now, has[j])
        lease_decision(j, now, held[j] < pa[j])
      else
        write_rate(j, x1[j], y1[j], z1[j])
      end
    end
    decided(0)
  end

  -- PolicySet::renew: per concurrency policy with a lease, its new expiry
  -- if it is still held, else 0.
  local function renew(now)
    out[no + 1] = 0
    for c = 1, NCC do
      local j, expiry = ccs[c], 0
      if has[j] then
        local was = scan(j, now, true)
        if was then
          expiry = max(was, now + pb[j])
          add_lease(j, expiry)
        end
      end
      out[no + 1 + c] = expiry
    end
    no = no + 1 + NCC
    fmts[#fmts + 1] = RENEWED
  end

  -- PolicySet::peek.
  local function peek(now)
    for j = 1, NPOL do
      if kind[j] == CC then
        scan(j, now, false)
        lease_decision(j, now, held[j] < pa[j])
        -- A peek writes nothing.
        dirty = false
      else
        local a, b, c = state(j)
        local allowed, remaining, reset_after, retry_after = decide(j, a, b, c, now, 0)
        ok[j], rem[j], rst[j], rty[j] = allowed, remaining, reset_after, retry_after
      end
    end
    decided(0)
  end

  -- Reads the argument of an operation of code `op` from `pos` on into the
  -- per-policy tables; returns its now on an injected clock (else nil) and
  -- where the next operation's starts.
  local function parse(op, pos)
    local now
    if injected then now, pos = decode('<d', blob, pos) end
    if op == P then return now, pos end
    for j = 1, NPOL do
      if kind[j] == CC then
        if op == C then cost[j], pos = decode('<d', blob, pos) end
        if byte(blob, pos) == 1 then
          has[j] = true
          w1[j], w2[j], w3[j], w4[j], pos = decode('<I4I4I4I4', blob, pos + 1)
        else
          has[j] = false
          pos = pos + 1
        end
      elseif op == C then
        cost[j], pos = decode('<d', blob, pos)
      elseif op == S then
        taken[j], actual[j], ma[j], mb[j], mc[j], pos = decode('<ddddd', blob, pos)
      end
    end
    return now, pos
  end

  -- Runs an operation of code `op` on key `k`, its value `stored`, its
  -- argument from `pos` on: returns where the next one starts and the value
  -- written if any.
  return function(op, k, stored, pos)
    local now
    now, pos = parse(op, pos)
    if not injected then now = server_now end
    local problem = load(k, stored)
    if problem then
      if op == X then
        out[no + 1], out[no + 2] = 0, 0
        no = no + 2
        fmts[#fmts + 1] = 'Bd'
      else
        refuse(problem)
      end
    elseif op == C then
      check(now)
    elseif op == S then
      settle(now)
    elseif op == R then
      renew(now)
    elseif op == X then
      local freed = release_all(now)
      out[no + 1], out[no + 2] = 0, freed
      no = no + 2
      fmts[#fmts + 1] = 'Bd'
    else
      peek(now)
    end
    return pos, flush(now)
  end
end

-- The generic operations, made for the set `desc` on a call's first
-- operation off the fast paths (a library keeps them from call to call
-- while the set is the same; a script makes them again on each call).
local generic_run

-- One call. Every value of a call of several operations in one MGET,
-- which answers false for a missing key and for a key of another type
-- alike; a GET tells them apart. A key may come more than once: `written`
-- holds what this call stored last for it.
local function main(KEYS, ARGV)
  if not call then init() end
  injected = ARGV[1] ~= ''
  if not injected then
    local t = call('TIME')
    server_now = t[1] * 1000000 + t[2]
  end
  min_ttl = tonumber(ARGV[2])
  blob = ARGV[4]
  if desc ~= ARGV[3] then
    desc, generic_run = ARGV[3], nil
  end
  out, no, fmts, chunks = {}, 0, {}, {}
  local n = #KEYS
  local values, written = {}, {}
  if n > 1 then values = call('MGET', spread(KEYS)) end
  local pos = 1
  for i = 1, n do
    local op = byte(blob, pos)
    local k = KEYS[i]
    local stored = written[k]
    if stored == nil then stored = values[i] end
    if not stored then stored = try('GET', k) end
    local next_pos, fast_value
    if op == C and fast_check then
      next_pos, fast_value = fast_check(k, stored, pos + 1)
    elseif op == S and fast_settle then
      next_pos, fast_value = fast_settle(k, stored, pos + 1)
    end
    if not next_pos then
      generic_run = generic_run or generic()
      next_pos, fast_value = generic_run(op, k, stored, pos + 1)
    end
    pos = next_pos
    if fast_value then written[k] = fast_value end
    if no > 4000 then pack_out() end
  end
  pack_out()
  if #chunks == 1 then return chunks[1] end
  return concat(chunks)
end

--@ENTRY@
return main(KEYS, ARGV)
