-- Record the outcomes of a batch of steps and move each contact's journey on, atomically.
-- KEYS[1] activity stream  KEYS[2] stats hash
-- then per step i, four keys from 3 + 4(i-1): contact hash, timers zset, leases zset, ledger hash
-- ARGV[1] now  ARGV[2] activity length
-- then per step i, 16 values from 3 + 16(i-1): contact id, journey, stage, occurrence, step id,
--   ledger field, outcome JSON ('' = leave the ledger as it is), mode ('advance' or 'retry'),
--   next step id ('' = last),
--   next due (or the retry time), lease end held ('' = none), outcome kind
--   (sent, skipped, failed, retry, unknown, paused, throttled), channel, reason code, detail,
--   more changes as JSON ops ('' = none; see _ops.lua) applied with the advance: what the run did
--   on its way to the next step (a split, a coupon, attributes set, the end of a run)
-- Returns per step 1 if the journey moved on, 0 if the contact had moved on meanwhile.
--#include ops
local now, maxlen = ARGV[1], ARGV[2]
local replies = {}
local n = (#KEYS - 2) / 4
for i = 1, n do
  local k = 3 + 4 * (i - 1)
  local contact, timers, leases, ledger = KEYS[k], KEYS[k + 1], KEYS[k + 2], KEYS[k + 3]
  local a = 3 + 16 * (i - 1)
  local cid, journey, stage, occ, step = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4]
  local field, outcome, mode, next_id, next_due = ARGV[a + 5], ARGV[a + 6], ARGV[a + 7], ARGV[a + 8], ARGV[a + 9]
  local lease, kind, channel, code, detail = ARGV[a + 10], ARGV[a + 11], ARGV[a + 12], ARGV[a + 13], ARGV[a + 14]
  local more = ARGV[a + 15]
  local member = 's|' .. journey .. '|' .. cid
  if outcome ~= '' then
    redis.call('HSET', ledger, field, outcome)
  end
  if kind ~= 'continue' then  -- a wait that ended is not worth an activity entry
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, '*', 't', now, 'k', kind, 'c', cid,
      'j', journey, 's', stage, 'p', step, 'ch', channel, 'd', detail)
    count(kind)
    if channel ~= '' then count(kind .. ':' .. channel) end
    if code ~= '' then count(kind .. ':' .. code) end
    count('step:' .. journey .. ':' .. stage .. ':' .. step .. ':' .. kind)
  end
  if lease ~= '' then
    local score = redis.call('ZSCORE', leases, member)
    if score and tonumber(score) == tonumber(lease) then
      redis.call('ZREM', leases, member)
    end
  end
  local p = 'j:' .. journey .. ':'
  local current = redis.call('HMGET', contact, p .. 'st', p .. 'oc', p .. 'sp')
  if current[1] ~= stage or current[2] ~= occ or current[3] ~= step then
    replies[i] = 0  -- the contact moved on meanwhile; its new stage has its own timer
  else
    if mode == 'retry' then
      redis.call('ZADD', timers, next_due, member)
    elseif next_id ~= '' then
      redis.call('HSET', contact, p .. 'sp', next_id, p .. 'du', next_due)
      redis.call('ZADD', timers, next_due, member)
    else
      redis.call('HDEL', contact, p .. 'sp', p .. 'du')
    end
    if more ~= '' then
      apply_ops(cjson.decode(more), {contact = contact, timers = timers, activity = KEYS[1]}, cid, now, maxlen)
    end
    replies[i] = 1
  end
end
flush_counts(KEYS[2])
return replies
