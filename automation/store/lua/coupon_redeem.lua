-- Record the redemption of a coupon code. The first redemption wins; later ones are reported.
-- KEYS[1] per-code hash  KEYS[2] stats hash
-- ARGV[1] redeeming contact or '' (unknown, e.g. a guest checkout)  ARGV[2] when (epoch seconds)
-- ARGV[3] source (e.g. "purchase")
-- Returns {status, code, name, holder, redeemed at}. Status: 'unknown_code', 'already_redeemed',
-- or for a recorded redemption 'redeemed', 'expired' (after its expiry) or 'other_contact' (by
-- someone else than the holder; takes precedence over 'expired', and both are flagged in the hash).
-- The same redemption reported again (same contact, time and source: a redelivered event)
-- returns its original status and counts nothing twice.
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HINCRBY', KEYS[2], 'coupon:unknown_code', 1)
  return {'unknown_code', '', '', '', ARGV[2]}
end
local f = redis.call('HMGET', KEYS[1], 'code', 'name', 'contact', 'expires', 'redeemed', 'redeemed_by',
  'redeemed_source', 'redeemed_status')
local code, name, holder, expires = f[1], f[2], f[3], f[4]
local prefix = 'coupon:' .. name .. ':'
if f[5] then
  if f[5] == ARGV[2] and (f[6] or '') == ARGV[1] and f[7] == ARGV[3] then
    return {f[8], code, name, holder, f[5]}
  end
  redis.call('HINCRBY', KEYS[1], 'refused', 1)
  redis.call('HINCRBY', KEYS[2], prefix .. 'already_redeemed', 1)
  return {'already_redeemed', code, name, holder, f[5]}
end
local late = expires and tonumber(ARGV[2]) > tonumber(expires)
local other = ARGV[1] ~= '' and ARGV[1] ~= holder
local status = 'redeemed'
if other then
  status = 'other_contact'
elseif late then
  status = 'expired'
end
redis.call('HSET', KEYS[1], 'redeemed', ARGV[2], 'redeemed_source', ARGV[3], 'redeemed_status', status)
if ARGV[1] ~= '' then
  redis.call('HSET', KEYS[1], 'redeemed_by', ARGV[1])
end
redis.call('HINCRBY', KEYS[2], prefix .. 'redeemed', 1)
if late then
  redis.call('HSET', KEYS[1], 'late', '1')
  redis.call('HINCRBY', KEYS[2], prefix .. 'late', 1)
end
if other then
  redis.call('HINCRBY', KEYS[2], prefix .. 'other_contact', 1)
end
return {status, code, name, holder, ARGV[2]}
