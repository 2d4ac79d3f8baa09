-- One step of a SCAN over the contacts, reading the named fields of each (`lifecycle plan`): one
-- round trip per chunk instead of a command per contact, and about a millisecond of Redis's time.
-- ARGV[1] cursor  ARGV[2] pattern  ARGV[3] count  ARGV[4..] hash fields
-- Returns {next cursor, {keys}, {values, #fields per key, false for none}}.
local found = redis.call('SCAN', ARGV[1], 'MATCH', ARGV[2], 'COUNT', ARGV[3])
local fields = {}
for i = 4, #ARGV do
  fields[#fields + 1] = ARGV[i]
end
local values = {}
for _, key in ipairs(found[2]) do
  local read = redis.call('HMGET', key, unpack(fields))
  for i = 1, #fields do
    values[#values + 1] = read[i]
  end
end
return {found[1], found[2], values}
