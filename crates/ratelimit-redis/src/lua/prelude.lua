-- Shared head of every policy script. The build puts after it the
-- policy's file and then decide_all.lua, so that each policy is still one
-- script, loaded and cached by its own SHA1.
--
-- Each policy's file opens with its layout, the one source of truth for
-- how that script is called and what it stores (script.rs's tests check
-- the Rust side against it):
--   local STATE = '<dd'                        the struct format of its
--                                              stored state
--   local a, b                                 its parameters, read on
--   local function parameters()                each call, in order
--     a, b = params('name_a', 'name_b')
--   end
-- and then defines decide(stored, now, cost) (see decide_all.lua).
--
-- One call decides one or more requests, in order, as if each were its own
-- call (a later request on the same key sees what an earlier one stored):
--   KEYS[i]   the i-th request's limiter key; its value is the policy's
--             state, encode(STATE, ...): little-endian doubles
--   ARGV[1]   '' to read the server's TIME once for the whole call, or
--             'injected' when each request carries its own now
--   ARGV[2]   with an injected clock, the least TTL in ms (see decide_all)
--   ARGV[3 .. 2 + NPARAMS]  the policy's parameters, as params() names them
--   then per request: its cost (0 for a peek) and, with an injected clock,
--   its now in µs since the epoch
-- Returns a string of encoded_size(REPLY) = 25 bytes per request, in order,
-- encode(REPLY, status, remaining, reset_after_us, retry_after_us)
-- with status 1 (allowed), 0 (denied) or 2 (the request's key holds a
-- value this script did not write). When some request has status 2, the
-- reply is an array instead: that string, then one message per status 2,
-- in order, saying what the value is (never the key).
--
-- Inside Redis a decision's cost is its calls (TIME, MGET, SET: about a
-- microsecond each) and its string work, not its arithmetic. So a request
-- makes at most one call of its own (SET), and the call one TIME and one
-- MGET (a GET for a call of one request) for all; the state is packed
-- with struct (a tenth of the cost of formatting and parsing decimal
-- text); the one number passed to SET is
-- formatted with '%d' ('%.0f' costs five times as much; Lua's '%d' takes a
-- C long, 64 bits where Redis runs).
--
-- Lua numbers are doubles. Every value here stays below 2^53 in the domain
-- the policies are validated for, so + - * are exact, and so is a double
-- stored by struct.pack. So are math.floor(a / b) and math.ceil(a / b) for
-- integers 0 <= a < 2^53, b >= 1: the rounded quotient never reaches the
-- next integer (it stays more than half an ulp away from it).
-- math.max(a - b, 0) is Rust's saturating_sub.

-- A script runs two ways: as a Redis function (a library loaded once with
-- FUNCTION LOAD, called with FCALL), or where functions are not available
-- as a script called with EVALSHA. What the files define is made once per
-- library as a function, once per call as a script; main() (decide_all)
-- is one call. A library is loaded before Redis's Lua libraries can be
-- used, so their functions are taken on the first call (init), and what
-- a call sets (its arguments, its clock, the policy's parameters) lives
-- in locals main() sets.
local ARGS, injected, server_now
local floor, ceil, max
-- struct's functions under names of their own, so that Lua's `unpack`
-- (a table's items as values) keeps its meaning.
local encode, decode, encoded_size

local function init()
  floor, ceil, max = math.floor, math.ceil, math.max
  encode, decode, encoded_size = struct.pack, struct.unpack, struct.size
end

-- One request's entry in the reply; script.rs reads entries of its size.
local REPLY = '<Bddd'

-- The policy's parameters: ARGV[3], ARGV[4], ... of the call as numbers,
-- one for each name, in order. The names are the layout's documentation,
-- checked against script.rs's by its tests; NPARAMS tells decide_all where
-- the requests' arguments start.
local NPARAMS = 0
local function params(...)
  NPARAMS = select('#', ...)
  local values = {}
  for i = 1, NPARAMS do values[i] = tonumber(ARGS[2 + i]) end
  return unpack(values, 1, NPARAMS)
end
