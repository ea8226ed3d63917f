-- Creates a session's record unless it exists.
-- ARGV  1 now_ms, 2 keep_ms, 3.. field/value pairs of the new record
-- Tags  ok, exists, ended (the caller has indexed the session already). The reply carries no
--       record: the caller knows what it wrote.
local status = redis.call('HGET', key, 'status')
if status == 'ended' then
  return refuse('ended')
elseif status then
  return refuse('exists')
end
-- DEL clears a hash without `status`, which the bridge never writes.
redis.call('DEL', key)
-- One HSET (a Lua call costs Redis more than the fields): the record, and that the caller
-- indexed the session for 2 keep_ms just before.
local fields = { unpack(ARGV, 3) }
fields[#fields + 1] = 'indexed_until_ms'
fields[#fields + 1] = fmt(clock_ms() + 2 * tonumber(ARGV[2]))
redis.call('HSET', key, unpack(fields))
redis.call('PEXPIRE', key, ARGV[2])
return { 'ok', {}, {}, 0 }
