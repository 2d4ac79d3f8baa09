-- Mark steps "sending" just before the provider requests that carry them are made, re-checking
-- what may have changed since their batch was loaded (automation/engine/steps.py, send phase).
-- KEYS[1] liveness zset: worker id -> its last sign of life (wall clock)
-- KEYS[2] the steps in doubt: '<contact>|<ledger field>', scored by when they fell into doubt (journey clock)
-- KEYS[3] waves in progress: token -> worker id (a wave's outcomes, once written, remove it)
-- then per step i two keys from 4 + 2(i-1): the contact's ledger hash, the contact hash
-- ARGV[1] wall-clock now  ARGV[2] liveness timeout (seconds)  ARGV[3] journey-clock now
-- ARGV[4] this worker's id  ARGV[5] this wave's token (a call repeated because its reply was lost
-- finds its own marks and sends them: nothing was sent, the caller never had the reply)
-- ARGV[6] the longest a batch runs (seconds): a mark older than that is no send in progress
-- then per step i four values from 7 + 4(i-1):
--   the ledger field; the contact field that must be 'true' (consent), '' if none is needed;
--   flags: 'd' if the adapter's provider deduplicates by our key (an attempt that may have reached
--   it is simply sent again), 'r' if the channel's policy is to send again an attempt the provider
--   has not confirmed by the end of its wait ("at least once"); the contact id
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
local wall, timeout, now, owner = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local token, longest = ARGV[5], tonumber(ARGV[6])
redis.call('ZADD', KEYS[1], wall, owner)
redis.call('HSET', KEYS[3], token, owner)
local replies = {}
for i = 1, (#KEYS - 3) / 2 do
  local ledger, contact = KEYS[2 + 2 * i], KEYS[3 + 2 * i]
  local a = 7 + 4 * (i - 1)
  local field, consent, cid = ARGV[a], ARGV[a + 1], ARGV[a + 3]
  local dedupes, resend = string.find(ARGV[a + 2], 'd', 1, true), string.find(ARGV[a + 2], 'r', 1, true)
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
    elseif state == 'paused' or state == 'throttled' then
      attempt = outcome.attempt or 1  -- waited without trying: not an attempt
    else
      reply = 'done:' .. current
    end
  end
  if not reply then
    -- Checked here, in the same script as the mark: once an opt-out has returned, no step is
    -- marked for that channel any more.
    local found = redis.call('HMGET', contact, 'ct', consent ~= '' and consent or 'ct')
    if not found[1] then
      reply = 'gone'
    elseif consent ~= '' and found[2] ~= 'true' then
      reply = 'no_consent'
    else
      redis.call('HSET', ledger, field,
        cjson.encode({state = 'sending', w = wall, at = now, attempt = attempt, o = owner, b = token}))
      reply = 'new:' .. attempt
    end
  end
  replies[i] = reply
end
return replies
