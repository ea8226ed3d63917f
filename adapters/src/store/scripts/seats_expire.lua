-- Drops the reservations expired at now_ms.
-- ARGV  1 now_ms
-- Tags  ok (detail: reservation id, stored value, … per expired reservation), not_found, ended
local s = load()
if not s then
  return refuse('not_found')
end
if s.meta.status == 'ended' then
  return refuse('ended')
end
local detail = {}
for _, e in ipairs(s.expired) do
  table.insert(detail, e[1])
  table.insert(detail, e[2])
end
return done(detail, touch(s))
