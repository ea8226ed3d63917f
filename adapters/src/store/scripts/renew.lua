-- Extends the lease of a pending record if the caller still owns it (redis_record.rs has the format).
-- KEYS[1]  the record
-- ARGV     1 the owner's header prefix `pending|<fence>|<owner>|`, 2 the new header
-- Returns  {1, pttl} when renewed, {0, 0} when ownership was lost.
local v = redis.call('GET', KEYS[1])
if not v or string.sub(v, 1, #ARGV[1]) ~= ARGV[1] then
  return {0, 0}
end
local first = string.find(v, '\n', 1, true)
redis.call('SET', KEYS[1], ARGV[2] .. string.sub(v, first), 'KEEPTTL')
return {1, redis.call('PTTL', KEYS[1])}
