-- Record "about to call the provider" for a batch of steps, before the calls.
-- KEYS[i] ledger hash of step i's contact
-- ARGV[1] wall-clock now  ARGV[2] seconds after which a "sending" mark is considered
-- abandoned (the claim's lease)  ARGV[3] journey-clock now  ARGV[3 + i] step i's ledger field
-- Returns per step: 'new:<attempt>', 'ambiguous:<attempt>' (an earlier attempt died
-- mid-send), 'busy' (another worker is sending it right now) or 'done:<outcome JSON>'.
local wall, abandon, now = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local replies = {}
for i = 1, #KEYS do
  local field = ARGV[3 + i]
  local current = redis.call('HGET', KEYS[i], field)
  local attempt, state = 1, 'new'
  if current then
    local outcome = cjson.decode(current)
    if outcome.state == 'sending' then
      if wall - tonumber(outcome.w) < abandon then
        state = 'busy'
      else
        state = 'ambiguous'
        attempt = (outcome.attempt or 1) + 1
      end
    elseif outcome.state == 'retry' then
      attempt = (outcome.attempt or 1) + 1
    elseif outcome.state == 'paused' or outcome.state == 'throttled' then
      attempt = outcome.attempt or 1  -- waited without trying: not an attempt
    else
      state = 'done'
      replies[i] = 'done:' .. current
    end
  end
  if state == 'new' or state == 'ambiguous' then
    redis.call('HSET', KEYS[i], field,
      cjson.encode({state = 'sending', w = wall, at = now, attempt = attempt}))
    replies[i] = state .. ':' .. attempt
  elseif state == 'busy' then
    replies[i] = 'busy'
  end
end
return replies
