-- Record what a provider reports about a message we sent (delivered, bounced ...).
-- KEYS[1] ledger hash of the contact  KEYS[2] activity stream  KEYS[3] stats hash
-- KEYS[4] contact hash  KEYS[5] timers zset of the contact's shard  KEYS[6] the steps in doubt (zset)
-- ARGV[1] ledger field  ARGV[2] status  ARGV[3] rank of the status  ARGV[4] when (epoch seconds)
-- ARGV[5] detail  ARGV[6] activity length  ARGV[7] contact  ARGV[8] channel
-- ARGV[9] the step's member in the set of steps in doubt  ARGV[10] the run's step timer member
-- ARGV[11] now (journey clock)  ARGV[12] the step's delivery counter prefix in the stats hash
-- (keys.step_delivery_prefix), then field/value pairs of the contact hash that hold while the run
-- still waits at this step
-- A status never replaces one of higher rank (reports arrive out of order). A step recorded as
-- "unknown" (its worker died mid-send) that the provider reports as accepted becomes "sent", leaves
-- the set of steps in doubt, and its run, still waiting at it, moves on now instead of at the end
-- of the wait for confirmation.
-- Returns 0 if the step is not in the ledger, 1 if recorded, 2 if it also reconciled an unknown step.
local current = redis.call('HGET', KEYS[1], ARGV[1])
if not current then
  return 0
end
local outcome = cjson.decode(current)
local rank = tonumber(ARGV[3])
local reply = 1
if (outcome.delivery_rank or 0) <= rank then
  outcome.delivery = ARGV[2]
  outcome.delivery_rank = rank
  outcome.delivery_at = tonumber(ARGV[4])
  if ARGV[5] ~= '' then outcome.delivery_detail = ARGV[5] end
end
if outcome.state == 'unknown' or outcome.state == 'sending' then
  outcome.state = 'sent'
  outcome.reconciled = true
  redis.call('HINCRBY', KEYS[3], 'reconciled', 1)
  redis.call('ZREM', KEYS[6], ARGV[9])
  local waiting = true
  for i = 13, #ARGV, 2 do
    if redis.call('HGET', KEYS[4], ARGV[i]) ~= ARGV[i + 1] then waiting = false end
  end
  if waiting then
    -- XX: a timer claimed right now is already on its way; LT: never later than it was.
    redis.call('ZADD', KEYS[5], 'XX', 'LT', ARGV[11], ARGV[10])
  end
  reply = 2
end
-- Per step, each status counts once per message (a second open is not a second reader).
local seen = outcome.ds or ''
if not string.find(seen, ',' .. ARGV[2] .. ',', 1, true) then
  outcome.ds = (seen == '' and ',' or seen) .. ARGV[2] .. ','
  redis.call('HINCRBY', KEYS[3], ARGV[12] .. ARGV[2], 1)
end
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(outcome))
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[6], '*', 't', ARGV[4], 'k', 'delivery', 'c', ARGV[7],
  'ch', ARGV[8], 'p', ARGV[1], 'd', ARGV[2] .. (ARGV[5] ~= '' and (': ' .. ARGV[5]) or ''))
redis.call('HINCRBY', KEYS[3], 'delivery:' .. ARGV[2] .. ':' .. ARGV[8], 1)
return reply
