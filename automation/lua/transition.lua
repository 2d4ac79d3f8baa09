-- Apply the result of evaluating a contact's stages, if nothing changed the contact meanwhile.
-- KEYS[1] contact hash  KEYS[2] timers zset  KEYS[3] leases zset  KEYS[4] activity stream  KEYS[5] stats hash
-- ARGV[1] contact id  ARGV[2] version read  ARGV[3] now  ARGV[4] re-evaluate at ('' = never)
-- ARGV[5] lease end held by this message ('' = none)  ARGV[6] activity length  ARGV[7] number of changes
-- then per change: journey, new stage ('' = leaves the journey), first step id, first step due, reason
local cid = ARGV[1]
local recheck = 'r|' .. cid
local function ack()
  if ARGV[5] ~= '' then
    local score = redis.call('ZSCORE', KEYS[3], recheck)
    if score and tonumber(score) == tonumber(ARGV[5]) then
      redis.call('ZREM', KEYS[3], recheck)
    end
  end
end
local version = redis.call('HGET', KEYS[1], 'v') or '0'
if version ~= ARGV[2] then
  -- Whatever changed the contact also queued a re-evaluation, which will see the new data.
  ack()
  return 0
end
local now = ARGV[3]
local maxlen = ARGV[6]
for i = 0, tonumber(ARGV[7]) - 1 do
  local base = 8 + i * 5
  local journey, stage, step, due, reason = ARGV[base], ARGV[base + 1], ARGV[base + 2], ARGV[base + 3], ARGV[base + 4]
  local p = 'j:' .. journey .. ':'
  local member = 's|' .. journey .. '|' .. cid
  local old = redis.call('HGET', KEYS[1], p .. 'st')
  local pending = redis.call('HGET', KEYS[1], p .. 'sp')
  redis.call('ZREM', KEYS[2], member)
  if old then
    if pending then
      redis.call('XADD', KEYS[4], 'MAXLEN', '~', maxlen, '*', 't', now, 'k', 'cancelled', 'c', cid,
        'j', journey, 's', old, 'p', pending, 'd', 'left the stage')
      redis.call('HINCRBY', KEYS[5], 'cancelled', 1)
    end
    redis.call('XADD', KEYS[4], 'MAXLEN', '~', maxlen, '*', 't', now, 'k', 'exit', 'c', cid,
      'j', journey, 's', old)
    redis.call('HINCRBY', KEYS[5], 'exit:' .. journey .. ':' .. old, 1)
  end
  if stage ~= '' then
    redis.call('HINCRBY', KEYS[1], p .. 'oc', 1)
    redis.call('HSET', KEYS[1], p .. 'st', stage, p .. 'in', now)
    if step ~= '' then
      redis.call('HSET', KEYS[1], p .. 'sp', step, p .. 'du', due)
      redis.call('ZADD', KEYS[2], due, member)
    else
      redis.call('HDEL', KEYS[1], p .. 'sp', p .. 'du')
    end
    redis.call('XADD', KEYS[4], 'MAXLEN', '~', maxlen, '*', 't', now, 'k', 'enter', 'c', cid,
      'j', journey, 's', stage, 'd', reason)
    redis.call('HINCRBY', KEYS[5], 'enter:' .. journey .. ':' .. stage, 1)
  else
    redis.call('HDEL', KEYS[1], p .. 'st', p .. 'in', p .. 'sp', p .. 'du')
  end
end
if ARGV[4] ~= '' then
  redis.call('ZADD', KEYS[2], ARGV[4], recheck)
else
  redis.call('ZREM', KEYS[2], recheck)
end
ack()
return 1
