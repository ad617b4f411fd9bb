-- Shared tail of every policy script: runs the policy's `decide` for each
-- request of the call (see prelude.lua for the calling convention).
--
-- decide(stored, now, cost) gets the stored value (false for a missing
-- key; else a string of encoded_size(STATE) bytes) and returns allowed, remaining, reset_after_us,
-- retry_after_us and, when the request changed the state, the new packed
-- state, the instant (µs) its key is to expire at (from then on the state
-- is equivalent to a key never seen: Algorithm::expires_at, or for the
-- token bucket that instant rounded up to a whole second), and whether
-- that is the instant the stored key already expires at.
--
-- A new state is stored with one SET carrying its expiry. On server time
-- the expiry is an absolute PXAT, or the key keeps its own when it is the
-- same (KEEPTTL costs a third less than PXAT inside Redis). An injected
-- clock's timeline is not the server's: the TTL is the time left on that
-- timeline, but at least ARGV[2] ms, because an injected clock may run
-- slower than the wall clock or go back, and the key must outlive every
-- instant at which its state still matters.
-- One call.
local function main(KEYS, ARGV)
  if not floor then init() end
  ARGS, injected = ARGV, ARGV[1] ~= ''
  if not injected then
    local t = redis.call('TIME')
    server_now = t[1] * 1000000 + t[2]
  end
  parameters()
  local format, call, try = string.format, redis.call, redis.pcall
  local arg = 3 + NPARAMS
  local SIZE = encoded_size(STATE)
  local min_ttl = tonumber(ARGV[2])
  -- Every state of a call of several requests in one MGET, which answers
  -- false for a missing key and for a key of another type alike; a GET
  -- tells them apart. A key may come more than once: `written` holds what
  -- this call stored last for it. A call of one request (every call at low
  -- concurrency) reads its key with one GET and keeps no tables but `out`.
  local n = #KEYS
  local values, written
  if n > 1 then
    values = call('MGET', unpack(KEYS))
    written = {}
  end
  local out, problems = {}, nil
  for i = 1, n do
    local key = KEYS[i]
    local cost = tonumber(ARGV[arg])
    local now = server_now
    if injected then
      now = tonumber(ARGV[arg + 1])
      arg = arg + 2
    else
      arg = arg + 1
    end
    -- A value of another type or shape was not written by this script:
    -- reading it would be a guess, and only this request fails.
    local stored, problem
    if written then
      stored = written[key]
      if stored == nil then stored = values[i] end
    end
    if not stored then stored = try('GET', key) end
    -- The message names what is wrong, never the key: it ends up in log
    -- lines, and the key holds the client's (often an IP address).
    if type(stored) == 'table' then
      problem = stored.err
    elseif stored and #stored ~= SIZE then
      problem = format('a string of %d bytes, not the %d of a state', #stored, SIZE)
    end
    if problem then
      out[i] = encode(REPLY, 2, 0, 0, 0)
      problems = problems or {}
      problems[#problems + 1] = problem
    else
      local allowed, remaining, reset_after, retry_after, state, at, same = decide(stored, now, cost)
      if state then
        if written then written[key] = state end
        if injected then
          call('SET', key, state, 'PX', format('%d', max(ceil((at - now) / 1000), min_ttl)))
        elseif same then
          call('SET', key, state, 'KEEPTTL')
        else
          call('SET', key, state, 'PXAT', format('%d', ceil(at / 1000)))
        end
      end
      out[i] = encode(REPLY, allowed, remaining, reset_after, retry_after)
    end
  end
  -- One string for all the decisions (cheaper to write and to read than
  -- four integers each). Returned alone when every request was decided (a
  -- table reply costs Redis about a microsecond more to convert); else in
  -- an array, followed by the problems' messages in order.
  if not problems then
    if n == 1 then return out[1] end
    return table.concat(out)
  end
  table.insert(problems, 1, table.concat(out))
  return problems
end

--@ENTRY@
return main(KEYS, ARGV)
