-- Record a step's outcome and move the contact's journey on, atomically.
-- KEYS[1] contact hash  KEYS[2] timers zset  KEYS[3] leases zset  KEYS[4] ledger hash
-- KEYS[5] activity stream  KEYS[6] stats hash
-- ARGV[1] contact id  ARGV[2] journey  ARGV[3] stage  ARGV[4] occurrence  ARGV[5] step id
-- ARGV[6] ledger field  ARGV[7] outcome JSON  ARGV[8] mode: 'advance' or 'retry'
-- ARGV[9] next step id ('' = last step) or, for 'retry', unused
-- ARGV[10] next step due, or the retry time  ARGV[11] lease end held ('' = none)
-- ARGV[12] now  ARGV[13] activity length  ARGV[14] outcome kind (sent, skipped, failed, retry, unknown)
-- ARGV[15] channel  ARGV[16] reason code  ARGV[17] detail for the activity log
local cid, journey, stage, occ, step = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local member = 's|' .. journey .. '|' .. cid
redis.call('HSET', KEYS[4], ARGV[6], ARGV[7])
local kind = ARGV[14]
redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[13], '*', 't', ARGV[12], 'k', kind, 'c', cid,
  'j', journey, 's', stage, 'p', step, 'ch', ARGV[15], 'd', ARGV[17])
redis.call('HINCRBY', KEYS[6], kind, 1)
if ARGV[15] ~= '' then
  redis.call('HINCRBY', KEYS[6], kind .. ':' .. ARGV[15], 1)
end
if ARGV[16] ~= '' then
  redis.call('HINCRBY', KEYS[6], kind .. ':' .. ARGV[16], 1)
end
redis.call('HINCRBY', KEYS[6], 'step:' .. journey .. ':' .. stage .. ':' .. step .. ':' .. kind, 1)
if ARGV[11] ~= '' then
  local score = redis.call('ZSCORE', KEYS[3], member)
  if score and tonumber(score) == tonumber(ARGV[11]) then
    redis.call('ZREM', KEYS[3], member)
  end
end
local p = 'j:' .. journey .. ':'
local current = redis.call('HMGET', KEYS[1], p .. 'st', p .. 'oc', p .. 'sp')
if current[1] ~= stage or current[2] ~= occ or current[3] ~= step then
  return 0  -- the contact moved on meanwhile; its new stage has its own timer
end
if ARGV[8] == 'retry' then
  redis.call('ZADD', KEYS[2], ARGV[10], member)
elseif ARGV[9] ~= '' then
  redis.call('HSET', KEYS[1], p .. 'sp', ARGV[9], p .. 'du', ARGV[10])
  redis.call('ZADD', KEYS[2], ARGV[10], member)
else
  redis.call('HDEL', KEYS[1], p .. 'sp', p .. 'du')
end
return 1
