-- Release a claim: remove the lease only if it is still the one this message holds,
-- so a newer claim of the same timer keeps its protection.
-- KEYS[1] leases zset   ARGV[1] member   ARGV[2] lease end the message was given
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) == tonumber(ARGV[2]) then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 1
end
return 0
