-- Record a batch of events (one or many contacts, in order) and ask for each contact to be
-- re-evaluated. One call per batch, not per event: the per-call cost (in Redis and in packing
-- the command) was a third of an event's.
-- KEYS[1] set of watched event names; then five keys per event: contact hash, recent events (a
-- string of JSON lines, newest first), timers zset of the contact's shard, inbox list, dedupe key
-- of the event id (any key when the event has no id: it is not touched)
-- ARGV[1] now  ARGV[2] recent events kept  ARGV[3] dedupe seconds  ARGV[4] inbox length kept
-- ARGV[5] '1' to notify journeys, '0' for a backfill (history that must not trigger anything)
-- then five arguments per event: name, time (whole seconds), event JSON (one line), recheck
-- member, '1' if it has an id to deduplicate by
-- Returns one 1 (recorded) or 0 (a duplicate id) per event.
local now, keep, ttl, inbox_length, notify = ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4]), ARGV[5]
-- An empty watch set has not been published by any worker yet: keep every event until one has.
local watched = {}
local everything = redis.call('SCARD', KEYS[1]) == 0
local results = {}
for i = 0, (#KEYS - 1) / 5 - 1 do
  local contact, recent_key, timers, inbox, dedupe = KEYS[2 + 5 * i], KEYS[3 + 5 * i], KEYS[4 + 5 * i],
    KEYS[5 + 5 * i], KEYS[6 + 5 * i]
  local name, at, json, member, has_id = ARGV[6 + 5 * i], tonumber(ARGV[7 + 5 * i]), ARGV[8 + 5 * i],
    ARGV[9 + 5 * i], ARGV[10 + 5 * i]
  if has_id == '1' and not redis.call('SET', dedupe, '1', 'NX', 'EX', ttl) then
    results[i + 1] = 0
  else
    -- Event stats in one field, "count,first,last": one field per event type keeps the hash small.
    local field = 'e:' .. name
    local count, first, last = 1, at, at
    local stats = redis.call('HGET', contact, field)
    if stats then
      local n, f, l = string.match(stats, '^(%d+),(%d+),(%d+)$')
      count = tonumber(n) + 1
      first = math.min(tonumber(f), at)
      last = math.max(tonumber(l), at)
    end
    redis.call('HSET', contact, field, string.format('%d,%d,%d', count, first, last))
    -- Recent events: prepend, keep the newest N lines.
    local recent = redis.call('GET', recent_key)
    local text = json
    if recent then
      text = text .. '\n' .. recent
      local position = 0
      for _ = 1, keep do
        position = string.find(text, '\n', position + 1, true)
        if not position then break end
      end
      if position then text = string.sub(text, 1, position - 1) end
    end
    redis.call('SET', recent_key, text)
    -- Events some journey reacts to (triggers, wait_for, goals, exits, scores) wait in the inbox
    -- until the contact's next evaluation; others need nothing beyond the stats above.
    if notify == '1' then
      if watched[name] == nil then
        watched[name] = everything or redis.call('SISMEMBER', KEYS[1], name) == 1
      end
      if watched[name] then
        redis.call('RPUSH', inbox, 'e' .. json)
        redis.call('LTRIM', inbox, -inbox_length, -1)
      end
    end
    redis.call('HINCRBY', contact, 'v', 1)
    redis.call('HSETNX', contact, 'ct', now)
    -- LT: an earlier pending re-evaluation stays; a later one is pulled forward to now.
    redis.call('ZADD', timers, 'LT', now, member)
    results[i + 1] = 1
  end
end
return results
