-- Removes a match from the pending index unless its entry changed since it was read (someone
-- claimed the match again meanwhile and moved the entry).
-- KEYS[1]  the pending index
-- ARGV     1 match_id, 2 the score as read (Redis's own formatting)
-- Returns  1 when removed, 0 otherwise.
if redis.call('ZSCORE', KEYS[1], ARGV[1]) ~= ARGV[2] then
  return 0
end
return redis.call('ZREM', KEYS[1], ARGV[1])
