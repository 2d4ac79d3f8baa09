-- Take up to ARGV[2] permits from a fixed window allowing ARGV[1]; the key expires after ARGV[3] s.
-- KEYS[1] the window's counter. Returns the number of permits granted.
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local granted = math.min(tonumber(ARGV[2]), math.max(0, tonumber(ARGV[1]) - used))
if granted > 0 then
  redis.call('INCRBY', KEYS[1], granted)
  redis.call('EXPIRE', KEYS[1], ARGV[3])
end
return granted
