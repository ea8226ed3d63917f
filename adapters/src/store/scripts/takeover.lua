-- Takes a placement record over (an expired lease or a retryable failure) if it is still exactly
-- what the claimant read: a compare-and-set on one string key (redis_record.rs has the format).
-- KEYS[1]  the record
-- ARGV     1 the value read, 2 the new value (pending under the claimant, next fence), 3 keep_for_ms
-- Returns  1 when taken over, 0 when the record changed meanwhile (nothing changed).
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
