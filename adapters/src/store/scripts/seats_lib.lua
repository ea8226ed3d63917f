-- Prepended to every seats_*.lua script but seats_create.lua: one session's seats in one HASH.
-- KEYS[1]  the session's record `<prefix>:seats:{<session_id>}`
-- ARGV[1]  now_ms (the caller's clock): reservations with expires_ms <= now_ms are expired.
-- Fields   session_id, capacity, status, image, version (JSON), location, labels (JSON),
--          metadata (JSON), keep_ms, indexed_until_ms (Redis clock); `j:<player>` = 1 per joined player;
--          `r:<reservation_id>` = `<expires_ms>|<players JSON array>` per reservation;
--          `q:<player>` = the order (decimal JetStream stream sequence) of the last ordered join or
--          leave applied to the player, kept after they leave.
-- Replies  {tag, detail, fields, index_ttl_ms}: tag `ok` or why nothing changed; fields the
--          record's HGETALL after a change; index_ttl_ms > 0 asks the caller to refresh the
--          session indexes for that long.
local key = KEYS[1]
local now = tonumber(ARGV[1])

local function fmt(n)
  return string.format('%.0f', n)
end

-- The record, with live reservations decoded and expired ones listed; nil when absent.
local function load()
  local flat = redis.call('HGETALL', key)
  if #flat == 0 then
    return nil
  end
  local s = {
    meta = {}, joined = {}, njoined = 0, res = {}, holder = {}, reserved = 0, expired = {}, order = {},
  }
  for i = 1, #flat, 2 do
    local f, v = flat[i], flat[i + 1]
    local kind = string.sub(f, 1, 2)
    if kind == 'j:' then
      s.joined[string.sub(f, 3)] = true
      s.njoined = s.njoined + 1
    elseif kind == 'r:' then
      local rid = string.sub(f, 3)
      local bar = string.find(v, '|', 1, true)
      local expires = string.sub(v, 1, bar - 1)
      if tonumber(expires) > now then
        local players = cjson.decode(string.sub(v, bar + 1))
        s.res[rid] = { expires = expires, players = players }
        for _, p in ipairs(players) do
          s.holder[p] = rid
        end
        s.reserved = s.reserved + #players
      else
        table.insert(s.expired, { rid, v })
      end
    elseif kind == 'q:' then
      s.order[string.sub(f, 3)] = v
    else
      s.meta[f] = v
    end
  end
  return s
end

local function open_seats(s)
  return tonumber(s.meta.capacity) - s.njoined - s.reserved
end

-- Takes `p` out of the live reservation holding it (deleting the reservation when it empties).
local function unreserve(s, p)
  local rid = s.holder[p]
  local r = s.res[rid]
  local rest = {}
  for _, q in ipairs(r.players) do
    if q ~= p then
      table.insert(rest, q)
    end
  end
  r.players = rest
  s.holder[p] = nil
  s.reserved = s.reserved - 1
  if #rest == 0 then
    s.res[rid] = nil
    redis.call('HDEL', key, 'r:' .. rid)
  else
    redis.call('HSET', key, 'r:' .. rid, r.expires .. '|' .. cjson.encode(rest))
  end
end

-- Redis's own clock (ms), which also runs the keys' times to live.
local function clock_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Refreshes the record's time to live (keep_ms) and says how long the indexes must live from now:
-- 2 keep_ms when the record could outlive them (remembered in `indexed_until_ms`, on Redis's
-- clock), else 0.
local function refresh(keep)
  redis.call('PEXPIRE', key, keep)
  local clock = clock_ms()
  local indexed_until = tonumber(redis.call('HGET', key, 'indexed_until_ms') or '0')
  if clock + keep > indexed_until then
    redis.call('HSET', key, 'indexed_until_ms', fmt(clock + 2 * keep))
    return 2 * keep
  end
  return 0
end

-- After a change: drops expired reservations and refreshes the record's time to live.
local function touch(s)
  for _, e in ipairs(s.expired) do
    redis.call('HDEL', key, 'r:' .. e[1])
  end
  return refresh(tonumber(s.meta.keep_ms))
end

-- Whether decimal order `a` is greater than `b` (both without leading zeros). Compared as strings,
-- not Lua numbers, which are exact only up to 2^53 while stream sequences are 64 bits.
local function later(a, b)
  if #a ~= #b then
    return #a > #b
  end
  return a > b
end

-- Sorts an ordered change's players (ARGV[first..]; `order` '' = unordered) against their stored
-- orders: the players it applies to, and detail entries `d:<p>` (this order applied before: a
-- duplicate) and `s:<p>` (a later order applied: stale), which are skipped.
local function sort_by_order(s, order, first)
  local current, detail = {}, {}
  for i = first, #ARGV do
    local p = ARGV[i]
    local last = s.order[p]
    if order ~= '' and last and last == order then
      table.insert(detail, 'd:' .. p)
    elseif order ~= '' and last and later(last, order) then
      table.insert(detail, 's:' .. p)
    else
      table.insert(current, p)
    end
  end
  return current, detail
end

-- Stores `order` as the last applied to `players` (nothing for an unordered change).
local function record_order(players, order)
  if order ~= '' then
    for _, p in ipairs(players) do
      redis.call('HSET', key, 'q:' .. p, order)
    end
  end
end

local function refuse(tag, detail)
  return { tag, detail or {}, {}, 0 }
end

local function done(detail, index_ttl)
  return { 'ok', detail, redis.call('HGETALL', key), index_ttl }
end

