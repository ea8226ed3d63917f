-- Ends a session: every seat released, status `ended` (every later operation is refused). The
-- record stays as a tombstone for keep_ms, so a late create cannot bring the session back, and
-- keeps how it ended for the announcement: `ended_reason`, `ended_ms` (now_ms), `ej:<p>` per
-- player who was joined and `er:<p>` per player who held a live reservation; `ended_owed` = 1 while
-- the end is owed to the session-event sinks (then kept at least keep_owed_ms).
-- ARGV  1 now_ms, 2 reason, 3 keep_owed_ms ('' = not owed)
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
local keep = tonumber(s.meta.keep_ms)
if ARGV[3] ~= '' then
  redis.call('HSET', key, 'ended_owed', '1')
  keep = math.max(keep, tonumber(ARGV[3]))
end
redis.call('PEXPIRE', key, fmt(keep))
return done(detail, 0)
