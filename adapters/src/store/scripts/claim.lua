-- Claims a placement record (one HASH, one key, so one cluster slot).
-- KEYS[1]  the record
-- ARGV     1 now_ms, 2 lease_until_ms, 3 keep_for_ms, 4 owner, 5 match_id, 6 source, 7 session_id, 8 request JSON
-- Returns  {tag, pttl, fields} where tag is `created`, `taken_over` or `existing` (nothing changed),
--          pttl the record's remaining time to live after the change, fields the record's HGETALL
--          (empty for `created`: the caller knows what it just wrote, and skips reading it back).
local key = KEYS[1]
local state = redis.call('HGET', key, 'state')
local tag
if not state then
  -- Absent (or expired): a new record. DEL clears a hash without `state`, which the bridge never writes.
  redis.call('DEL', key)
  redis.call('HSET', key,
    'match_id', ARGV[5], 'source', ARGV[6], 'session_id', ARGV[7], 'request', ARGV[8],
    'accepted_at_ms', ARGV[1], 'state', 'pending', 'owner', ARGV[4], 'fence', 1, 'lease_until_ms', ARGV[2])
  tag = 'created'
elseif state == 'placed'
    or (state == 'failed' and redis.call('HGET', key, 'retryable') ~= '1')
    or (state == 'pending' and tonumber(redis.call('HGET', key, 'lease_until_ms')) > tonumber(ARGV[1])) then
  tag = 'existing'
else
  -- A retryable failure or an expired lease: take it over, keeping what was first accepted.
  redis.call('HINCRBY', key, 'fence', 1)
  redis.call('HSET', key, 'state', 'pending', 'owner', ARGV[4], 'lease_until_ms', ARGV[2])
  redis.call('HDEL', key, 'outcome', 'retryable')
  tag = 'taken_over'
end
if tag == 'created' then
  -- The time to live just set: no PTTL call (a Lua call costs Redis more than a plain command).
  redis.call('PEXPIRE', key, ARGV[3])
  return {tag, tonumber(ARGV[3]), {}}
end
local fields = redis.call('HGETALL', key)
if tag ~= 'existing' then
  redis.call('PEXPIRE', key, ARGV[3])
end
return {tag, redis.call('PTTL', key), fields}
