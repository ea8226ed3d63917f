-- Writes a ticket's status unless the stored one names a match (`match_id`): a matched ticket's
-- status follows its placement, and matchmaker events arrive in no set order.
-- KEYS[1]  the ticket's status
-- ARGV     1 the status JSON, 2 keep_ms
-- Returns  1 when written, 0 when the ticket had reached a match (nothing changed).
local stored = redis.call('GET', KEYS[1])
if stored then
  local readable, old = pcall(cjson.decode, stored)
  if readable and type(old) == 'table' and old.match_id ~= nil and old.match_id ~= cjson.null then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
