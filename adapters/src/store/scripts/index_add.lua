-- Adds or moves a match in the pending index and makes the index live at least as long as the record.
-- KEYS[1]  the pending index (ZSET match_id -> lease_until_ms)
-- ARGV     1 match_id, 2 lease_until_ms, 3 ttl_ms (> 0), 4 `NX` to only add a missing entry, or ``
-- Returns  1 when the entry was added, 0 when it existed.
local added
if ARGV[4] == 'NX' then
  added = redis.call('ZADD', KEYS[1], 'NX', ARGV[2], ARGV[1])
else
  added = redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
end
local want = tonumber(ARGV[3])
if redis.call('PTTL', KEYS[1]) < want then
  redis.call('PEXPIRE', KEYS[1], want)
end
return added
