-- created -> running (idempotent).
-- ARGV  1 now_ms
-- Tags  ok, not_found, ended
local s = load()
if not s then
  return refuse('not_found')
end
if s.meta.status == 'ended' then
  return refuse('ended')
end
redis.call('HSET', key, 'status', 'running')
return done({}, touch(s))
