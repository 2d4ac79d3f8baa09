-- Link an anonymous id to a contact and hand over what the visitor did before, in one step: an
-- item pushed concurrently either is among those returned or finds the link.
-- KEYS[1] the anonymous id's link  KEYS[2] its pending items
-- ARGV[1] contact id  ARGV[2] seconds the link is kept
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
local items = redis.call('LRANGE', KEYS[2], 0, -1)
redis.call('DEL', KEYS[2])
return items
