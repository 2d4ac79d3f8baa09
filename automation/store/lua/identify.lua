-- Create or update one contact's attributes; note the changes journeys watch.
-- KEYS[1] contact hash  KEYS[2] timers zset of the contact's shard  KEYS[3] inbox list
-- KEYS[4] set of watched attribute names  KEYS[5] (optional) phone index hash
-- ARGV[1] now, whole seconds (created at)  ARGV[2] now (re-evaluation due)  ARGV[3] recheck member
-- ARGV[4] phone number or ''  ARGV[5] inbox length kept  ARGV[6] contact id  ARGV[7] '1' to notify
-- journeys of the changes, '0' for a backfill (history that must not trigger anything)
-- ARGV[8] '1' to change only a contact that exists (an unsubscribe link must never create one), then
-- pairs: attribute name, JSON value
-- ('' removes the attribute).
-- A change of a watched attribute (or of a nested one under a watched name) is pushed to the
-- inbox as  a["name", old, new]  for attribute-change triggers. Returns 1 if anything changed, -1 if
-- the contact does not exist and ARGV[8] asked for an existing one.
local changed, created = false, redis.call('EXISTS', KEYS[1]) == 0
if created and ARGV[8] == '1' then
  return -1
end
local watched = ARGV[7] == '1'
-- An empty watch set has not been published by any worker yet: keep every change until one has.
local everything = redis.call('SCARD', KEYS[4]) == 0
for i = 9, #ARGV, 2 do
  local name, value = ARGV[i], ARGV[i + 1]
  local field = 'a:' .. name
  local old = redis.call('HGET', KEYS[1], field)
  local differs = false
  if value == '' then
    if old then
      redis.call('HDEL', KEYS[1], field)
      differs = true
    end
  elseif old ~= value then
    redis.call('HSET', KEYS[1], field, value)
    differs = true
  end
  if differs then
    changed = true
    if watched then
      local hit = everything or redis.call('SISMEMBER', KEYS[4], name) == 1
      local position = 0
      while not hit do
        position = string.find(name, '.', position + 1, true)
        if not position then break end
        hit = redis.call('SISMEMBER', KEYS[4], string.sub(name, 1, position - 1)) == 1
      end
      if hit then
        redis.call('RPUSH', KEYS[3], 'a[' .. cjson.encode(name) .. ',' .. (old or 'null') .. ',' ..
          (value ~= '' and value or 'null') .. ']')
        redis.call('LTRIM', KEYS[3], -tonumber(ARGV[5]), -1)
      end
    end
  end
end
if KEYS[5] and ARGV[4] ~= '' then
  redis.call('HSET', KEYS[5], ARGV[4], ARGV[6])
end
if changed or created then
  redis.call('HINCRBY', KEYS[1], 'v', 1)
  redis.call('HSETNX', KEYS[1], 'ct', ARGV[1])
  -- LT: an earlier pending re-evaluation stays; a later one is pulled forward to now.
  redis.call('ZADD', KEYS[2], 'LT', ARGV[2], ARGV[3])
  return 1
end
return 0
