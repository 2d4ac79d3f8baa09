-- Settle a step left in doubt whose run no longer waits at it (the contact left the stage, a goal
-- or an exit ended the run): no timer will come back for it, so it fails now, "at most once".
-- KEYS[1] the steps in doubt (zset)  KEYS[2] the contact's ledger  KEYS[3] the contact hash
-- KEYS[4] activity stream  KEYS[5] stats hash
-- ARGV[1] its member in the steps in doubt  ARGV[2] ledger field  ARGV[3] now (journey clock)
-- ARGV[4] reason  ARGV[5] activity length  ARGV[6] contact id  ARGV[7] channel-free step label for
-- the activity entry (journey, stage, step as j|s|p), then field/value pairs of the contact hash
-- that hold while the run still waits at the step
-- Returns 1 if it was settled, 0 if it needed nothing (no longer in doubt, or its run's timer will).
local current = redis.call('HGET', KEYS[2], ARGV[2])
local outcome = current and cjson.decode(current)
if not outcome or outcome.state ~= 'unknown' then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 0
end
local waiting = true
for i = 8, #ARGV, 2 do
  if redis.call('HGET', KEYS[3], ARGV[i]) ~= ARGV[i + 1] then waiting = false end
end
if waiting then
  return 0
end
outcome.state = 'failed'
outcome.code = 'unconfirmed'
outcome.reason = ARGV[4]
redis.call('HSET', KEYS[2], ARGV[2], cjson.encode(outcome))
redis.call('ZREM', KEYS[1], ARGV[1])
local journey, stage, step = string.match(ARGV[7], '^([^|]*)|([^|]*)|(.*)$')
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[5], '*', 't', ARGV[3], 'k', 'failed', 'c', ARGV[6],
  'j', journey, 's', stage, 'p', step, 'ch', outcome.ch or '', 'd', ARGV[4])
redis.call('HINCRBY', KEYS[5], 'failed', 1)
redis.call('HINCRBY', KEYS[5], 'failed:unconfirmed', 1)
return 1
