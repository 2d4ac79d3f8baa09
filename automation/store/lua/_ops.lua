-- Shared by apply.lua and record_step.lua (scripts.py pastes it where they say "--#include ops").
-- Applies a list of changes to one contact, decoded from JSON; every value arrives as a string.
--   {'h', field, value}   HSET on the contact hash      {'d', field}          HDEL
--   {'c', field, n}       HINCRBY on the contact hash   {'i', stat, n}        count a stat
--   {'z', member, due}    ZADD on the timers            {'zr', member}        ZREM
--   {'zl', member, due}   ZADD LT (only moves a timer earlier)
--   {'x', {f1, v1, ...}}  an activity entry             {'q', item}           RPUSH on the inbox
--   {'t', n}              drop the first n inbox items (the ones this evaluation processed)
--   {'l', field, value}   HSET on the step ledger (a step's outcome)
--   {'za', member, score} ZADD on the set of steps in doubt (keys.ambiguous)
--   {'wd', token}         HDEL on the waves in progress (keys.waves): a wave's outcomes are written

-- Stats counted while a script runs, written to the stats hash once at its end (flush_counts).
local counts = {}
local function count(field, n)
  counts[field] = (counts[field] or 0) + (n or 1)
end
local function flush_counts(stats)
  for field, value in pairs(counts) do
    redis.call('HINCRBY', stats, field, value)
  end
end

local function apply_ops(ops, keys, cid, now, maxlen)
  for _, op in ipairs(ops) do
    local code = op[1]
    if code == 'h' then
      redis.call('HSET', keys.contact, op[2], op[3])
    elseif code == 'd' then
      redis.call('HDEL', keys.contact, op[2])
    elseif code == 'c' then
      redis.call('HINCRBY', keys.contact, op[2], op[3])
    elseif code == 'i' then
      count(op[2], tonumber(op[3]))
    elseif code == 'z' then
      redis.call('ZADD', keys.timers, op[3], op[2])
    elseif code == 'zr' then
      redis.call('ZREM', keys.timers, op[2])
    elseif code == 'zl' then
      redis.call('ZADD', keys.timers, 'LT', op[3], op[2])
    elseif code == 'x' then
      redis.call('XADD', keys.activity, 'MAXLEN', '~', maxlen, '*', 't', now, 'c', cid, unpack(op[2]))
    elseif code == 'q' then
      redis.call('RPUSH', keys.inbox, op[2])
    elseif code == 't' then
      redis.call('LTRIM', keys.inbox, op[2], -1)
    elseif code == 'l' then
      redis.call('HSET', keys.ledger, op[2], op[3])
    elseif code == 'za' then
      redis.call('ZADD', keys.ambiguous, op[3], op[2])
    elseif code == 'wd' then
      redis.call('HDEL', keys.waves, op[2])
    end
  end
end
