-- Extends the lease of a pending record if the caller still owns it.
-- KEYS[1]  the record
-- ARGV     1 owner, 2 fence, 3 lease_until_ms
-- Returns  {1, pttl} when renewed, {0, 0} when ownership was lost.
local f = redis.call('HMGET', KEYS[1], 'state', 'owner', 'fence')
if f[1] ~= 'pending' or f[2] ~= ARGV[1] or f[3] ~= ARGV[2] then
  return {0, 0}
end
redis.call('HSET', KEYS[1], 'lease_until_ms', ARGV[3])
return {1, redis.call('PTTL', KEYS[1])}
