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
redis.call('HSET', key, unpack(ARGV, 3))
-- The caller indexed the session for 2 keep_ms just before.
redis.call('HSET', key, 'indexed_until_ms', fmt(clock_ms() + 2 * tonumber(ARGV[2])))
redis.call('PEXPIRE', key, ARGV[2])
return { 'ok', {}, {}, 0 }
