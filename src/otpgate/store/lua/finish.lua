-- Read a verification and, when it is pending, turn it to a final status ("canceled"
-- and "approved" delete its code too).
--
-- KEYS: the verification record, the phone's code, the events stream, the pending
-- verifications by end. ARGV: verification id, status ("": only read), now (ms), "1"
-- with events on, the event's name for the status. A record is pending while its stored status is, its code's time
-- is not up, and the phone's code is still its own ("current").
-- Returns {current (1/0), field, value, ...} as the record stands after the step; {}
-- when there is none.
local st, e = unpack(redis.call('HMGET', KEYS[1], 'st', 'e'))
if not st then return {} end
local now = tonumber(ARGV[3])
local current = redis.call('HGET', KEYS[2], 'v') == ARGV[1]
if ARGV[2] ~= '' and st == 'pending' and tonumber(e) > now and current then
  if ARGV[2] == 'canceled' or ARGV[2] == 'approved' then
    redis.call('DEL', KEYS[2])
    current = false
  end
  redis.call('HSET', KEYS[1], 'st', ARGV[2], 'u', now)
  if ARGV[4] == '1' then
    redis.call('ZREM', KEYS[4], ARGV[1])
    emit(KEYS[3], 'verification.' .. ARGV[5], now, verification_data(ARGV[1], KEYS[1], ARGV[2]))
  end
end
local out = {current and 1 or 0}
for _, x in ipairs(redis.call('HGETALL', KEYS[1])) do out[#out + 1] = x end
return out
