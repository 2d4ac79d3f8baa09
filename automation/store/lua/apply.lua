-- Apply what happened to a batch of contacts: evaluations (automation/engine/evaluation.py), runs
-- moving past waits that ended, and the outcomes of sent steps. Each contact's changes apply only
-- if nothing changed that contact since it was read. Plans are built by automation/engine/apply.py.
-- KEYS[1] activity stream  KEYS[2] stats hash  KEYS[3] the steps in doubt (zset)
-- KEYS[4] the waves in progress (hash)
-- then per contact i, six keys from 5 + 6(i-1): contact hash, timers zset, leases zset, ledger hash, inbox,
-- lease tokens hash
-- ARGV[1] now  ARGV[2] activity length, then per contact one JSON plan:
--   c      the contact id
--   pre    ops applied whatever the guards say (a step's outcome: ledger entry, activity, counters)
--   v      the contact's version as read ('' = do not check)
--   g      guards: [[field, value or false], ...] that must all still hold (false: field absent)
--   ops    the changes (see _ops.lua), applied only if the guards hold
--   lease, lm   the token of the claim held and the timer member it is for ('' = none); released
--               either way, if still held by that claim
--   r      (evaluations) the contact's re-evaluation timer, due again at once if the plan is stale
-- Returns per contact 1 if applied (the contact's version is then bumped), 0 if the contact changed
-- meanwhile: an evaluation is then simply due again, and will see the new data (unprocessed
-- inbox items stay in the inbox); a step's run has its own timer where it moved to.
--#include ops
--#include lease
local now, maxlen = ARGV[1], ARGV[2]
local replies = {}
for i = 1, (#KEYS - 4) / 6 do
  local k = 5 + 6 * (i - 1)
  local keys = {contact = KEYS[k], timers = KEYS[k + 1], ledger = KEYS[k + 3], inbox = KEYS[k + 4],
                activity = KEYS[1], ambiguous = KEYS[3], waves = KEYS[4]}
  local plan = cjson.decode(ARGV[2 + i])
  if plan.pre then
    apply_ops(plan.pre, keys, plan.c, now, maxlen)
  end
  local ok = true
  if plan.v ~= '' and (redis.call('HGET', keys.contact, 'v') or '0') ~= plan.v then
    ok = false
  end
  if ok and plan.g then
    for _, guard in ipairs(plan.g) do
      local current = redis.call('HGET', keys.contact, guard[1])
      if guard[2] == false then
        if current then ok = false end
      elseif current ~= guard[2] then
        ok = false
      end
    end
  end
  if ok then
    apply_ops(plan.ops, keys, plan.c, now, maxlen)
    -- A new version: an evaluation of this contact that read it before this change (a second
    -- worker holding a newer re-evaluation timer) must not apply its now stale result.
    redis.call('HINCRBY', keys.contact, 'v', 1)
    replies[i] = 1
  else
    replies[i] = 0
    if plan.r then
      redis.call('ZADD', keys.timers, 'LT', now, plan.r)
    end
  end
  release(KEYS[k + 2], KEYS[k + 5], plan.lm, plan.lease)
end
flush_counts(KEYS[2])
return replies
