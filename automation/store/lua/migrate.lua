-- Move one waiting run to a new version of its journey (`lifecycle deploy`), as planned, only if
-- the run is still where the plan saw it and no worker holds its step right now.
-- KEYS[1] the contact hash  KEYS[2] the timers of the contact's shard  KEYS[3] activity stream
-- KEYS[4] stats hash  KEYS[5] the contact's step ledger
-- ARGV[1] the run's field prefix (j:<journey>:)  ARGV[2] its timer member
-- ARGV[3..6] st, sp, du, vr as read ("" for none)
-- ARGV[7] action: move (its step, due time and version) or exit (the run ends)
-- ARGV[8] new step  ARGV[9] new due (the timer's score as text)  ARGV[10] new version
-- ARGV[11] now (journey clock)  ARGV[12] activity length  ARGV[13] contact id  ARGV[14] end field
-- value ("time|why") when a triggered run ends, "" for a stage's run (the contact stays in the stage)
-- ARGV[15] the ledger field of the run's step as read
-- Returns 1 when written, 0 when the run changed since it was read or its step is claimed (plan again),
-- 2 when its step was tried already (a send in progress or in doubt, a retry or a wait, an outcome
-- not yet moved on): it stays for the workers, who read the ledger under the step's stored id, so
-- the message keeps its idempotency key and is not sent twice.
local prefix = ARGV[1]
local read = {'st', 'sp', 'du', 'vr'}
for i, part in ipairs(read) do
  if (redis.call('HGET', KEYS[1], prefix .. part) or '') ~= ARGV[i + 2] then
    return 0
  end
end
local action = ARGV[7]
if redis.call('HEXISTS', KEYS[5], ARGV[15]) == 1 then
  return 2
end
if not redis.call('ZSCORE', KEYS[2], ARGV[2]) then
  return 0    -- a worker holds the step: its outcome moves the run; plan it again after
end
if action == 'move' then
  redis.call('HSET', KEYS[1], prefix .. 'sp', ARGV[8], prefix .. 'du', ARGV[9], prefix .. 'vr', ARGV[10])
  redis.call('ZADD', KEYS[2], ARGV[9], ARGV[2])
else
  redis.call('HDEL', KEYS[1], prefix .. 'sp', prefix .. 'du', prefix .. 'vr')
  redis.call('ZREM', KEYS[2], ARGV[2])
  local journey = string.sub(prefix, 3, -2)
  if ARGV[14] ~= '' then
    redis.call('HDEL', KEYS[1], prefix .. 'st')
    redis.call('HSET', KEYS[1], prefix .. 'en', ARGV[14])
  end
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[12], '*', 't', ARGV[11], 'k', 'cancelled', 'c', ARGV[13],
    'j', journey, 's', ARGV[3], 'p', ARGV[5], 'd', 'step removed by a deploy')
  redis.call('HINCRBY', KEYS[4], 'cancelled', 1)
end
-- An evaluation that read the run before this must not write over it: it is due again.
redis.call('HINCRBY', KEYS[1], 'v', 1)
return 1
