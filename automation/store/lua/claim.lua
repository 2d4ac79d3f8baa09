-- Claim due timers of one shard, atomically, with a lease.
-- KEYS[1] timers zset (score = due time on the journey clock)
-- KEYS[2] leases zset (score = wall-clock time the lease ends)
-- KEYS[3] lease tokens hash (member -> the token of the claim holding it)
-- ARGV[1] now (journey clock)  ARGV[2] now (wall clock)  ARGV[3] lease end (wall), which is also the
-- claims' token  ARGV[4] limit
-- Returns {member1, due1, member2, due2, ...}, number of expired leases returned to the timers.
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[2], 'LIMIT', 0, ARGV[4])
for _, member in ipairs(expired) do
  -- NX: a timer rescheduled while its claim was out keeps its new due time.
  redis.call('ZADD', KEYS[1], 'NX', ARGV[1], member)
  redis.call('ZREM', KEYS[2], member)
  redis.call('HDEL', KEYS[3], member)
end
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, ARGV[4])
local members = {}
for i = 1, #due, 2 do
  members[#members + 1] = due[i]
  redis.call('ZADD', KEYS[2], ARGV[3], due[i])
  redis.call('HSET', KEYS[3], due[i], ARGV[3])
end
if #members > 0 then
  redis.call('ZREM', KEYS[1], unpack(members))
end
return {due, #expired}
