-- Writes the outcome of a pending record if the caller still owns it.
-- KEYS[1]  the record
-- ARGV     1 owner, 2 fence, 3 state (`placed` or `failed`), 4 outcome JSON, 5 retryable (`1`/`0`), 6 keep_for_ms
-- Returns  1 when written, 0 when ownership was lost (nothing changed).
local f = redis.call('HMGET', KEYS[1], 'state', 'owner', 'fence')
if f[1] ~= 'pending' or f[2] ~= ARGV[1] or f[3] ~= ARGV[2] then
  return 0
end
redis.call('HSET', KEYS[1], 'state', ARGV[3], 'outcome', ARGV[4], 'retryable', ARGV[5])
redis.call('HDEL', KEYS[1], 'owner', 'lease_until_ms')
redis.call('PEXPIRE', KEYS[1], ARGV[6])
return 1
