-- Shared by ack.lua and apply.lua. A claim is known by its token (the end of its first lease), so
-- its lease can be extended without another claim of the same timer ever being taken for it.

-- Release a lease only if it is still the one with this token: a newer claim keeps its protection.
local function release(leases, tokens, member, token)
  if token ~= '' and redis.call('HGET', tokens, member) == token then
    redis.call('ZREM', leases, member)
    redis.call('HDEL', tokens, member)
    return 1
  end
  return 0
end
