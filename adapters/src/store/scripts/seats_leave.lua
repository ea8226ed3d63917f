-- Players leave or give up their reserved seats.
-- ARGV  1 now_ms, 2 order ('' = unordered), 3.. players (distinct)
-- Tags  ok (detail: `l:<p>` left, `x:<p>` reservation released, `d:<p>`/`s:<p>` skipped by
--       order), not_found, ended
local s = load()
if not s then
  return refuse('not_found')
end
if s.meta.status == 'ended' then
  return refuse('ended')
end
local order = ARGV[2]
local current, detail = sort_by_order(s, order, 3)
for _, p in ipairs(current) do
  if s.joined[p] then
    redis.call('HDEL', key, 'j:' .. p)
    s.joined[p] = nil
    s.njoined = s.njoined - 1
    table.insert(detail, 'l:' .. p)
  elseif s.holder[p] then
    unreserve(s, p)
    table.insert(detail, 'x:' .. p)
  end
end
record_order(current, order)
return done(detail, touch(s))
