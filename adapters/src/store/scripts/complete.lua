-- Writes the outcome of a pending record if the caller still owns it (redis_record.rs has the format).
-- KEYS[1]  the record
-- ARGV     1 the owner's header prefix `pending|<fence>|<owner>|`, 2 the final header,
--          3 the outcome JSON, 4 keep_ms
-- Returns  1 when written, 0 when ownership was lost (nothing changed).
local v = redis.call('GET', KEYS[1])
if not v or string.sub(v, 1, #ARGV[1]) ~= ARGV[1] then
  return 0
end
-- The meta line (what was first accepted) is kept as it is.
local first = string.find(v, '\n', 1, true)
local second = string.find(v, '\n', first + 1, true)
local meta = second and string.sub(v, first + 1, second - 1) or string.sub(v, first + 1)
redis.call('SET', KEYS[1], ARGV[2] .. '\n' .. meta .. '\n' .. ARGV[3], 'PX', ARGV[4])
return 1
