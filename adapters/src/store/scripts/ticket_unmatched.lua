-- Writes a ticket's status over none or a "searching" one. A matched ticket's status follows its
-- placement, and a final one (TicketState::is_final: anything but "searching") stands: matchmaker
-- events arrive in no set order and are retried, so a late "searching" must not undo an end.
-- KEYS[1]  the ticket's status
-- ARGV     1 the status JSON, 2 keep_ms
-- Returns  1 when written, 0 when the ticket had reached a match or a final status (nothing changed).
local stored = redis.call('GET', KEYS[1])
if stored then
  local readable, old = pcall(cjson.decode, stored)
  if readable and type(old) == 'table' then
    local matched = old.match_id ~= nil and old.match_id ~= cjson.null
    local final = type(old.status) == 'string' and old.status ~= 'searching'
    if matched or final then
      return 0
    end
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
