-- Issue a coupon to a contact: once per journey run, with a code no one else ever had.
-- KEYS[1] contact hash  KEYS[2] per-code hash of the candidate code  KEYS[3] stats hash
-- ARGV[1] contact field (k:<name>)  ARGV[2] run hash  ARGV[3] compact value to store (<= 64 bytes)
-- ARGV[4] coupon name  ARGV[5] contact id  ARGV[6] run  ARGV[7] code  ARGV[8] issued (whole seconds)
-- ARGV[9] expires at or ''  ARGV[10] percent or ''  ARGV[11] amount or ''  ARGV[12] currency or ''
-- Returns {'existing', value} if this run already has its coupon (a redelivered message),
-- {'issued', value}, {'collision', ''} if the candidate code is taken (the caller tries another),
-- or {'no_contact', ''}: a coupon must not create a contact hash of its own.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {'no_contact', ''}
end
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current then
  -- "code|issued|expires|run-hash[|value]": the same run hash means the same run.
  local run = string.match(current, '^[^|]*|[^|]*|[^|]*|([^|]*)')
  if run == ARGV[2] then
    return {'existing', current}
  end
end
-- The per-code hash is the reservation: HSETNX on it is the SET NX that makes the code ours,
-- forever (it is never deleted, so a code is never given out twice).
if redis.call('HSETNX', KEYS[2], 'contact', ARGV[5]) == 0 then
  redis.call('HINCRBY', KEYS[3], 'coupon:' .. ARGV[4] .. ':collisions', 1)
  return {'collision', ''}
end
redis.call('HSET', KEYS[2], 'code', ARGV[7], 'name', ARGV[4], 'run', ARGV[6], 'issued', ARGV[8])
local optional = {'expires', 'percent', 'amount', 'currency'}
for i, field in ipairs(optional) do
  if ARGV[8 + i] ~= '' then
    redis.call('HSET', KEYS[2], field, ARGV[8 + i])
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('HINCRBY', KEYS[3], 'coupon:' .. ARGV[4] .. ':issued', 1)
return {'issued', ARGV[3]}
