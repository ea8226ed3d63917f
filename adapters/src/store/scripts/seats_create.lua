-- Creates a session's record unless it exists. A new session's record is created with plain
-- commands (staged, then RENAMENX: seats_redis.rs); this script runs when that rename found a key
-- there, to answer which kind (or to create over a hash that is not the bridge's). Standalone,
-- unlike the other seats_*.lua scripts (not prepended with seats_lib.lua): it needs none of it.
-- KEYS[1]  the session's record `<prefix>:seats:{<session_id>}`
-- KEYS[2]  (optional) the staged copy the refused rename left behind, deleted here
-- ARGV     1 now_ms, 2 keep_ms, 3.. field/value pairs of the new record (seats_lib.lua's fields,
--          without indexed_until_ms, which this script adds on Redis's clock)
-- Replies  {tag, {}, {}, 0}, tag `ok`, `exists` or `ended` (the caller has indexed the session
--          already). No record: the caller knows what it wrote.
if KEYS[2] then
  redis.call('DEL', KEYS[2])
end
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'ended' then
  return { 'ended', {}, {}, 0 }
elseif status then
  return { 'exists', {}, {}, 0 }
end
-- A hash without `status` is not the bridge's: every script writes it with the record.
local keep = tonumber(ARGV[2])
local t = redis.call('TIME')
local clock = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- One HSET (a Lua call costs Redis more than its fields): the record, and that the caller indexed
-- the session for 2 keep_ms just before. ARGV's first two slots, read above, carry that pair.
ARGV[1] = 'indexed_until_ms'
ARGV[2] = string.format('%.0f', clock + 2 * keep)
redis.call('HSET', KEYS[1], unpack(ARGV))
redis.call('PEXPIRE', KEYS[1], keep)
return { 'ok', {}, {}, 0 }
