-- Mark steps "sending" just before the provider requests that carry them are made, re-checking
-- what may have changed since their batch was loaded and counting frequency caps, atomically
-- (automation/engine/steps.py, send phase).
-- KEYS[1] liveness zset: worker id -> its last sign of life (wall clock)
-- KEYS[2] the steps in doubt: '<contact>|<ledger field>', scored by when they fell into doubt (journey clock)
-- KEYS[3] waves in progress: token -> worker id (a wave's outcomes, once written, remove it)
-- then per step i three keys from 4 + 3(i-1): the contact's ledger hash, the contact hash, the
-- suppression list of the step's channel (address -> why)
-- ARGV[1] wall-clock now  ARGV[2] liveness timeout (seconds)  ARGV[3] journey-clock now
-- ARGV[4] this worker's id  ARGV[5] this wave's token (a call repeated because its reply was lost
-- finds its own marks and sends them: nothing was sent, the caller never had the reply)
-- ARGV[6] the longest a batch runs (seconds): a mark older than that is no send in progress
-- ARGV[7] the contact field of the do-not-contact flag
-- then per step i six values from 8 + 6(i-1):
--   the ledger field; the contact field that must be 'true' (consent), '' if none is needed;
--   flags: 'd' if the adapter's provider deduplicates by our key (an attempt that may have reached
--   it is simply sent again), 'r' if the channel's policy is to send again an attempt the provider
--   has not confirmed by the end of its wait ("at least once"), 'm' for a marketing message (the
--   do-not-contact flag and frequency caps apply); the contact id; the address ('' = none to check
--   against the suppression list); the frequency caps as JSON, [[field, window, limit, reserve], ...]:
--   at most `limit` marketing messages counted in `field` within `window` seconds, keeping
--   `reserve` slots for more important journeys' messages due soon
-- Returns per step one of:
--   'new:<attempt>'          marked: send it now
--   'busy'                   a live worker is sending it right now: its wave is in progress (an
--                            outcome Redis lost, a wave that failed, leave its marks in doubt)
--   'done:<outcome JSON>'    it has an outcome already
--   'ambiguous:<attempt>'    an earlier attempt's worker died during its request: left as it is,
--                            for the caller to record "unknown" and wait for the provider's word
--   'unconfirmed:<attempt>'  recorded "unknown" earlier, still unconfirmed, not to be sent again
--   'gone'                   the contact was deleted meanwhile
--   'no_consent'             the contact withdrew consent meanwhile
--   'do_not_contact'         the contact asked for no marketing at all
--   'suppressed:<why>'       the address is on the channel's suppression list
--   'capped:<when>'          a frequency cap is reached until <when> (journey clock)
local wall, timeout, now, owner = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local token, longest, dnc = ARGV[5], tonumber(ARGV[6]), ARGV[7]
redis.call('ZADD', KEYS[1], wall, owner)
redis.call('HSET', KEYS[3], token, owner)

-- Send times a field holds, oldest first.
local function times_of(contact, field)
  local list = {}
  for value in string.gmatch(redis.call('HGET', contact, field) or '', '[^,]+') do
    list[#list + 1] = tonumber(value)
  end
  return list
end

-- When the frequency caps let one more message out: nil if they do now, else the earliest time.
local function capped_until(contact, caps)
  local until_ = nil
  for _, cap in ipairs(caps) do
    local window, limit, reserve = tonumber(cap[2]), tonumber(cap[3]), tonumber(cap[4])
    local inside = {}
    for _, at in ipairs(times_of(contact, cap[1])) do
      if at > now - window then inside[#inside + 1] = at end
    end
    local over = #inside + 1 + reserve - limit
    if over > 0 then
      local free = (inside[over] or now) + window
      if not until_ or free > until_ then until_ = free end
    end
  end
  return until_
end

-- Count one more message in each field the caps read, keeping only what they can still count.
local function count(contact, caps)
  local keep, span = {}, {}
  for _, cap in ipairs(caps) do
    local field = cap[1]
    keep[field] = math.max(keep[field] or 0, tonumber(cap[3]))
    span[field] = math.max(span[field] or 0, tonumber(cap[2]))
  end
  for field, most in pairs(keep) do
    local list = {}
    for _, at in ipairs(times_of(contact, field)) do
      if at > now - span[field] then list[#list + 1] = at end
    end
    list[#list + 1] = math.floor(now)
    local first = math.max(1, #list - most + 1)
    local kept = {}
    for j = first, #list do kept[#kept + 1] = string.format('%d', list[j]) end
    redis.call('HSET', contact, field, table.concat(kept, ','))
  end
end

local replies = {}
for i = 1, (#KEYS - 3) / 3 do
  local ledger, contact, suppressed = KEYS[1 + 3 * i], KEYS[2 + 3 * i], KEYS[3 + 3 * i]
  local a = 8 + 6 * (i - 1)
  local field, consent, flags, cid, address = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4]
  local dedupes, resend = string.find(flags, 'd', 1, true), string.find(flags, 'r', 1, true)
  local marketing = string.find(flags, 'm', 1, true)
  local current = redis.call('HGET', ledger, field)
  local attempt, reply = 1, nil
  if current then
    local outcome = cjson.decode(current)
    local state = outcome.state
    if state == 'sending' then
      local seen = outcome.o and redis.call('ZSCORE', KEYS[1], outcome.o)
      if outcome.o == owner and outcome.b == token then
        attempt = outcome.attempt or 1   -- this very call, repeated: mark it again and send
      elseif seen and wall - tonumber(seen) < timeout and wall - tonumber(outcome.w) < longest
          and redis.call('HEXISTS', KEYS[3], outcome.b or '') == 1 then
        reply = 'busy'
      else
        attempt = (outcome.attempt or 1) + 1
        if not dedupes then reply = 'ambiguous:' .. attempt end
      end
    elseif state == 'unknown' then
      -- Its time to be confirmed is up: it is settled now, sent again or failed.
      redis.call('ZREM', KEYS[2], cid .. '|' .. field)
      attempt = (outcome.attempt or 1) + 1
      if not (dedupes or resend) then reply = 'unconfirmed:' .. attempt end
    elseif state == 'retry' then
      attempt = (outcome.attempt or 1) + 1
    elseif state == 'paused' or state == 'throttled' or state == 'held' or state == 'deferred' then
      attempt = outcome.attempt or 1  -- waited without trying: not an attempt
    else
      reply = 'done:' .. current
    end
  end
  if not reply then
    -- Checked here, in the same script as the mark: once an opt-out has returned, no step is
    -- marked for that channel any more.
    local found = redis.call('HMGET', contact, 'ct', consent ~= '' and consent or 'ct', dnc)
    local why = address ~= '' and redis.call('HGET', suppressed, address)
    if not found[1] then
      reply = 'gone'
    elseif why then
      reply = 'suppressed:' .. why
    elseif consent ~= '' and found[2] ~= 'true' then
      reply = 'no_consent'
    elseif marketing and found[3] == 'true' then
      reply = 'do_not_contact'
    else
      -- A message is counted once, on its first attempt: a retry already has its slot.
      local caps = marketing and attempt == 1 and cjson.decode(ARGV[a + 5]) or {}
      local until_ = capped_until(contact, caps)
      if until_ then
        reply = 'capped:' .. string.format('%.3f', until_)
      else
        count(contact, caps)
        redis.call('HSET', ledger, field,
          cjson.encode({state = 'sending', w = wall, at = now, attempt = attempt, o = owner, b = token}))
        reply = 'new:' .. attempt
      end
    end
  end
  replies[i] = reply
end
return replies
