-- Record one event on a contact and ask for the contact's stages to be re-evaluated.
-- KEYS[1] contact hash  KEYS[2] recent events list  KEYS[3] timers zset of the contact's shard
-- KEYS[4] (optional) dedupe key of the event id
-- ARGV[1] event name  ARGV[2] event time  ARGV[3] event JSON  ARGV[4] now
-- ARGV[5] recent events kept  ARGV[6] dedupe seconds  ARGV[7] recheck member
if KEYS[4] then
  if not redis.call('SET', KEYS[4], '1', 'NX', 'EX', ARGV[6]) then
    return 0
  end
end
local prefix = 'e:' .. ARGV[1]
local at = tonumber(ARGV[2])
redis.call('HINCRBY', KEYS[1], prefix .. ':n', 1)
local last = tonumber(redis.call('HGET', KEYS[1], prefix .. ':t'))
if not last or at > last then
  redis.call('HSET', KEYS[1], prefix .. ':t', ARGV[2])
end
local first = tonumber(redis.call('HGET', KEYS[1], prefix .. ':f'))
if not first or at < first then
  redis.call('HSET', KEYS[1], prefix .. ':f', ARGV[2])
end
redis.call('LPUSH', KEYS[2], ARGV[3])
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[5]) - 1)
redis.call('HINCRBY', KEYS[1], 'v', 1)
redis.call('HSETNX', KEYS[1], 'ct', ARGV[4])
-- LT: an earlier pending re-evaluation stays; a later one is pulled forward to now.
redis.call('ZADD', KEYS[3], 'LT', ARGV[4], ARGV[7])
return 1
