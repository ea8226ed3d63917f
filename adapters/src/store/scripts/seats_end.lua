-- Ends a session: every seat released, status `ended` (every later operation is refused). The
-- record stays as a tombstone for keep_ms, so a late create cannot bring the session back, and
-- keeps how it ended for the announcement: `ended_reason`, `ended_ms` (now_ms), `ej:<p>` per
-- player who was joined and `er:<p>` per player who held a live reservation.
-- ARGV  1 now_ms, 2 reason
-- Tags  ok (detail: `j:<p>` per joined player, `r:<id>` per live reservation), not_found, ended
local s = load()
if not s then
  return refuse('not_found')
end
if s.meta.status == 'ended' then
  return refuse('ended')
end
local detail = {}
for p in pairs(s.joined) do
  table.insert(detail, 'j:' .. p)
  redis.call('HDEL', key, 'j:' .. p)
  redis.call('HSET', key, 'ej:' .. p, '1')
end
for rid, r in pairs(s.res) do
  table.insert(detail, 'r:' .. rid)
  redis.call('HDEL', key, 'r:' .. rid)
  for _, p in ipairs(r.players) do
    redis.call('HSET', key, 'er:' .. p, '1')
  end
end
for _, e in ipairs(s.expired) do
  redis.call('HDEL', key, 'r:' .. e[1])
end
redis.call('HSET', key, 'status', 'ended', 'ended_reason', ARGV[2], 'ended_ms', ARGV[1])
redis.call('PEXPIRE', key, s.meta.keep_ms)
return done(detail, 0)
