-- Record "about to call the provider" for a step, before the call.
-- KEYS[1] ledger hash of the contact
-- ARGV[1] step key  ARGV[2] wall-clock now  ARGV[3] seconds after which a "sending" mark
-- is considered abandoned (the claim's lease)  ARGV[4] journey-clock now
-- Returns 'new', 'ambiguous' (an earlier attempt died mid-send), 'busy' (another worker
-- is sending it right now) or 'done:<outcome JSON>'.
local current = redis.call('HGET', KEYS[1], ARGV[1])
local attempt = 1
local ambiguous = false
if current then
  local outcome = cjson.decode(current)
  if outcome.state == 'sending' then
    if tonumber(ARGV[2]) - tonumber(outcome.w) < tonumber(ARGV[3]) then
      return 'busy'
    end
    ambiguous = true
    attempt = (outcome.attempt or 1) + 1
  elseif outcome.state == 'retry' then
    attempt = (outcome.attempt or 1) + 1
  else
    return 'done:' .. current
  end
end
local mark = cjson.encode({state = 'sending', w = tonumber(ARGV[2]), at = tonumber(ARGV[4]), attempt = attempt})
redis.call('HSET', KEYS[1], ARGV[1], mark)
if ambiguous then
  return 'ambiguous:' .. attempt
end
return 'new:' .. attempt
