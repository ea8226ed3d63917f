-- created -> running, answering only whether it changed (the reconciler marks sessions in bulk).
-- ARGV  1 now_ms
-- Reply {changed (1/0), index_ttl_ms, image}: unchanged when absent, ended or already running.
local status = redis.call('HGET', key, 'status')
if status ~= 'created' then
  return { 0, 0, '' }
end
redis.call('HSET', key, 'status', 'running')
local index_ttl = refresh(tonumber(redis.call('HGET', key, 'keep_ms')))
return { 1, index_ttl, redis.call('HGET', key, 'image') }
