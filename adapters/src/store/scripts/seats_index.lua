-- Adds a session to a seats index (keeping its first score) and makes the index live at least ttl_ms.
-- KEYS[1]  the index (ZSET session_id -> created_ms)
-- ARGV     1 session_id, 2 score, 3 ttl_ms (> 0)
redis.call('ZADD', KEYS[1], 'NX', ARGV[2], ARGV[1])
local want = tonumber(ARGV[3])
if redis.call('PTTL', KEYS[1]) < want then
  redis.call('PEXPIRE', KEYS[1], want)
end
return 1
