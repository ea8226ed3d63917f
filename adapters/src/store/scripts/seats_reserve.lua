-- Reserves seats for all players or none; players holding a reservation here move into the new one.
-- ARGV  1 now_ms, 2 reservation id, 3 expires_ms, 4.. players (distinct)
-- Tags  ok (detail: `m:<p>` moved from another reservation, `e:<expires_ms>` the expiry kept from
--       one), not_found, ended, no_players,
--       already_joined (detail: the joined players), no_seats (detail: open, needed)
local s = load()
if not s then
  return refuse('not_found')
end
if s.meta.status == 'ended' then
  return refuse('ended')
end
if #ARGV < 4 then
  return refuse('no_players')
end
local players, joined, moved, needed = {}, {}, {}, 0
for i = 4, #ARGV do
  local p = ARGV[i]
  table.insert(players, p)
  if s.joined[p] then
    table.insert(joined, p)
  elseif s.holder[p] then
    table.insert(moved, p)
  else
    needed = needed + 1
  end
end
if #joined > 0 then
  return refuse('already_joined', joined)
end
local open = open_seats(s)
if needed > open then
  return refuse('no_seats', { fmt(open), fmt(needed) })
end
-- A player moved out of a longer hold keeps it: moving never shortens a seat's hold. The expiry
-- used is answered (`e:<expires_ms>`) when it is not ARGV[3].
local detail, expires = {}, ARGV[3]
for _, p in ipairs(moved) do
  local held = s.res[s.holder[p]].expires
  if later(held, expires) then
    expires = held
  end
  unreserve(s, p)
  table.insert(detail, 'm:' .. p)
end
if expires ~= ARGV[3] then
  table.insert(detail, 'e:' .. expires)
end
redis.call('HSET', key, 'r:' .. ARGV[2], expires .. '|' .. cjson.encode(players))
return done(detail, touch(s))
