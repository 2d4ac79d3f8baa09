-- Record one event on a contact and ask for the contact to be re-evaluated.
-- KEYS[1] contact hash  KEYS[2] recent events (a string of JSON lines, newest first)
-- KEYS[3] timers zset of the contact's shard  KEYS[4] inbox list  KEYS[5] set of watched event names
-- KEYS[6] (optional) dedupe key of the event id
-- ARGV[1] event name  ARGV[2] event time (whole seconds)  ARGV[3] event JSON (one line)
-- ARGV[4] now  ARGV[5] recent events kept  ARGV[6] dedupe seconds  ARGV[7] recheck member
-- ARGV[8] inbox length kept  ARGV[9] '1' to notify journeys, '0' for a backfill (history that must
-- not trigger anything)
if KEYS[6] then
  if not redis.call('SET', KEYS[6], '1', 'NX', 'EX', ARGV[6]) then
    return 0
  end
end
-- Event stats in one field, "count,first,last": one field per event type keeps the hash small.
local field = 'e:' .. ARGV[1]
local at = tonumber(ARGV[2])
local count, first, last = 1, at, at
local stats = redis.call('HGET', KEYS[1], field)
if stats then
  local n, f, l = string.match(stats, '^(%d+),(%d+),(%d+)$')
  count = tonumber(n) + 1
  first = math.min(tonumber(f), at)
  last = math.max(tonumber(l), at)
end
redis.call('HSET', KEYS[1], field, string.format('%d,%d,%d', count, first, last))
-- Recent events: prepend, keep the newest N lines.
local recent = redis.call('GET', KEYS[2])
local text = ARGV[3]
if recent then
  text = text .. '\n' .. recent
  local keep, position = tonumber(ARGV[5]), 0
  for _ = 1, keep do
    position = string.find(text, '\n', position + 1, true)
    if not position then break end
  end
  if position then text = string.sub(text, 1, position - 1) end
end
redis.call('SET', KEYS[2], text)
-- Events some journey reacts to (triggers, wait_for, goals, exits, scores) wait in the inbox
-- until the contact's next evaluation; others need nothing beyond the stats above.
if ARGV[9] == '1' and redis.call('SISMEMBER', KEYS[5], ARGV[1]) == 1 then
  redis.call('RPUSH', KEYS[4], 'e' .. ARGV[3])
  redis.call('LTRIM', KEYS[4], -tonumber(ARGV[8]), -1)
end
redis.call('HINCRBY', KEYS[1], 'v', 1)
redis.call('HSETNX', KEYS[1], 'ct', ARGV[4])
-- LT: an earlier pending re-evaluation stays; a later one is pulled forward to now.
redis.call('ZADD', KEYS[3], 'LT', ARGV[4], ARGV[7])
return 1
