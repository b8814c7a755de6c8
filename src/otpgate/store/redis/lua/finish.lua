-- Read a verification and, when it is pending, turn it to a final status ("canceled"
-- and "approved" drop its code too).
--
-- KEYS: the verification record, the events stream, the pending verifications by end,
-- then the phone's record slices (record.lua; ARGV[9] of them). ARGV: verification
-- id, status ("": only read), now (ms), "1" with events on, the event's name for the
-- status, the phone, then the slices' first, width and count. A verification is
-- pending while its stored status is, its code's time is not up, and the phone's code
-- is still its own ("current").
-- Returns {current (1/0), field, value, ...} as the record stands after the step; {}
-- when there is none.
local st, e = unpack(redis.call('HMGET', KEYS[1], 'st', 'e'))
if not st then return {} end
local now = tonumber(ARGV[3])
local ps = {tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])}
local r, found = rec_load(4, ps[3], ARGV[6], now)
local current = r.v == ARGV[1]
if ARGV[2] ~= '' and st == 'pending' and tonumber(e) > now and current then
  if ARGV[2] == 'canceled' or ARGV[2] == 'approved' then
    rec_drop_code(r)
    rec_save(r, 4, ps[3], found, ARGV[6], now, ps)
    current = false
  end
  redis.call('HSET', KEYS[1], 'st', ARGV[2], 'u', now)
  if ARGV[4] == '1' then
    redis.call('ZREM', KEYS[3], ARGV[1])
    emit(KEYS[2], 'verification.' .. ARGV[5], now, verification_data(ARGV[1], KEYS[1], ARGV[2]))
  end
end
local out = {current and 1 or 0}
for _, x in ipairs(redis.call('HGETALL', KEYS[1])) do out[#out + 1] = x end
return out
