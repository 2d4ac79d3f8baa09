-- Apply the results of evaluating a batch of contacts' stages; each only if nothing changed
-- that contact since it was read.
-- KEYS[1] activity stream  KEYS[2] stats hash
-- then per contact i, three keys from 3 + 3(i-1): contact hash, timers zset, leases zset
-- ARGV[1] now  ARGV[2] activity length, then per contact, in order:
--   contact id, version read, re-evaluate at ('' = never), lease end held ('' = none),
--   number of changes, then per change: journey, new stage ('' = leaves the journey),
--   first step id, first step due, reason
-- Returns per contact 1 if applied, 0 if the contact changed meanwhile (whatever changed it
-- also queued a re-evaluation, which will see the new data).
local now, maxlen = ARGV[1], ARGV[2]
local counts = {}
local function count(field)
  counts[field] = (counts[field] or 0) + 1
end
local replies = {}
local a = 3
for i = 1, (#KEYS - 2) / 3 do
  local k = 3 + 3 * (i - 1)
  local contact, timers, leases = KEYS[k], KEYS[k + 1], KEYS[k + 2]
  local cid, version_read, recheck_at, lease = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  local changes = tonumber(ARGV[a + 4])
  a = a + 5
  local recheck = 'r|' .. cid
  local version = redis.call('HGET', contact, 'v') or '0'
  if version ~= version_read then
    replies[i] = 0
  else
    for c = 0, changes - 1 do
      local b = a + 5 * c
      local journey, stage, step, due, reason = ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4]
      local p = 'j:' .. journey .. ':'
      local member = 's|' .. journey .. '|' .. cid
      local old = redis.call('HGET', contact, p .. 'st')
      local pending = redis.call('HGET', contact, p .. 'sp')
      redis.call('ZREM', timers, member)
      if old then
        if pending then
          redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, '*', 't', now, 'k', 'cancelled', 'c', cid,
            'j', journey, 's', old, 'p', pending, 'd', 'left the stage')
          count('cancelled')
        end
        redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, '*', 't', now, 'k', 'exit', 'c', cid,
          'j', journey, 's', old)
        count('exit:' .. journey .. ':' .. old)
      end
      if stage ~= '' then
        redis.call('HINCRBY', contact, p .. 'oc', 1)
        redis.call('HSET', contact, p .. 'st', stage, p .. 'in', now)
        if step ~= '' then
          redis.call('HSET', contact, p .. 'sp', step, p .. 'du', due)
          redis.call('ZADD', timers, due, member)
        else
          redis.call('HDEL', contact, p .. 'sp', p .. 'du')
        end
        redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, '*', 't', now, 'k', 'enter', 'c', cid,
          'j', journey, 's', stage, 'd', reason)
        count('enter:' .. journey .. ':' .. stage)
      else
        redis.call('HDEL', contact, p .. 'st', p .. 'in', p .. 'sp', p .. 'du')
      end
    end
    if recheck_at ~= '' then
      redis.call('ZADD', timers, recheck_at, recheck)
    else
      redis.call('ZREM', timers, recheck)
    end
    replies[i] = 1
  end
  a = a + 5 * changes
  if lease ~= '' then
    local score = redis.call('ZSCORE', leases, recheck)
    if score and tonumber(score) == tonumber(lease) then
      redis.call('ZREM', leases, recheck)
    end
  end
end
for field, value in pairs(counts) do
  redis.call('HINCRBY', KEYS[2], field, value)
end
return replies
