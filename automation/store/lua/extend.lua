-- Extend leases, each only while it is still held by the claim with that token (the scheduler,
-- once a batch is safely in Dramatiq's queue: until then a claim's lease is short, so a scheduler
-- that dies between claiming and queueing delays its timers by seconds).
-- KEYS[1] leases zset  KEYS[2] lease tokens hash
-- ARGV[1] the new lease end (wall clock), then pairs: member, token
-- Returns how many leases were extended.
local extended = 0
for i = 2, #ARGV, 2 do
  if redis.call('HGET', KEYS[2], ARGV[i]) == ARGV[i + 1] then
    redis.call('ZADD', KEYS[1], 'XX', ARGV[1], ARGV[i])
    extended = extended + 1
  end
end
return extended
