-- Players join: reserved ones consume their reservation, others need a free seat; all or none.
-- ARGV  1 now_ms, 2 order ('' = unordered), 3.. players (distinct)
-- Tags  ok (detail: `n:<p>` joined into a free seat, `r:<p>` joined from a reservation, `a:<p>`
--       already joined, `d:<p>`/`s:<p>` skipped by order), not_found, ended, full (detail: open,
--       needed, capacity)
local s = load()
if not s then
  return refuse('not_found')
end
if s.meta.status == 'ended' then
  return refuse('ended')
end
local order = ARGV[2]
local current, detail = sort_by_order(s, order, 3)
local fresh, needed = {}, 0
for _, p in ipairs(current) do
  if s.joined[p] then
    table.insert(detail, 'a:' .. p)
  elseif s.holder[p] then
    table.insert(fresh, p)
    table.insert(detail, 'r:' .. p)
  else
    table.insert(fresh, p)
    table.insert(detail, 'n:' .. p)
    needed = needed + 1
  end
end
local open = open_seats(s)
if needed > open then
  return refuse('full', { fmt(open), fmt(needed), s.meta.capacity })
end
for _, p in ipairs(fresh) do
  if s.holder[p] then
    unreserve(s, p)
  end
  redis.call('HSET', key, 'j:' .. p, '1')
end
record_order(current, order)
return done(detail, touch(s))
