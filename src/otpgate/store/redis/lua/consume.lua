-- Use the code if it is still this hash: drop it from the phone's record, clear the
-- phone's failures (and its place among the locked phones), approve the code's
-- verification when it is the one named and still pending, and count an approval in
-- each range of the send.
--
-- KEYS: the phone's record slices (record.lua; ARGV[12] of them), failures, the
-- verification record, the locked phones, the events stream, the pending verifications
-- by end, then each range's counts (ranges.lua). ARGV: hash, verification id ("" for
-- none), now (ms), the phone, ranges.lua's bucket layout (4 numbers), "1" with events
-- on, then the slices' first, width and count. Returns 1 for the one caller that
-- consumed it, else 0.
local now, phone = tonumber(ARGV[3]), ARGV[4]
local ps = {tonumber(ARGV[10]), tonumber(ARGV[11]), tonumber(ARGV[12])}
local count = ps[3]
local r, found = rec_load(1, count, phone, now)
if r.h == '' or r.h ~= ARGV[1] then return 0 end
local fails, record, locks = KEYS[count + 1], KEYS[count + 2], KEYS[count + 3]
local events, awaiting = KEYS[count + 4], KEYS[count + 5]
if ARGV[2] ~= '' and r.v == ARGV[2] and redis.call('HGET', record, 'st') == 'pending' then
  redis.call('HSET', record, 'st', 'approved', 'u', ARGV[3])
  if ARGV[9] == '1' then
    redis.call('ZREM', awaiting, ARGV[2])
    emit(events, 'verification.approved', ARGV[3],
      verification_data(ARGV[2], record, 'approved'))
  end
end
local rb = {tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])}
for i = count + 6, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then count_range(KEYS[i], 'a', r.t, now, 1, rb) end
end
rec_drop_code(r)
r.fn, r.fl, r.fe = 0, 0, 0
rec_save(r, 1, count, found, phone, now, ps)
redis.call('DEL', fails)
redis.call('ZREM', locks, phone)
return 1
