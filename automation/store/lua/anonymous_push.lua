-- Keep what an anonymous visitor did until they are identified, unless they already are.
-- KEYS[1] the anonymous id's link to a contact  KEYS[2] its pending items (list of JSON)
-- ARGV[1] the item (JSON)  ARGV[2] most items kept  ARGV[3] seconds kept
-- Returns the linked contact id (the caller records the item there), or false if kept here.
local linked = redis.call('GET', KEYS[1])
if linked then
  redis.call('EXPIRE', KEYS[1], ARGV[3])
  return linked
end
redis.call('RPUSH', KEYS[2], ARGV[1])
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[2]), -1)
redis.call('EXPIRE', KEYS[2], ARGV[3])
return false
