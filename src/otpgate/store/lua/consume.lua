-- Delete the code if it is still this hash, clear the phone's failures (and its
-- place among the locked phones), approve the code's verification when it is
-- the one named and still pending, and count an approval in each range of the send.
--
-- KEYS: code, failures, the verification record, the locked phones, the events stream,
-- the pending verifications by end, then each range's counts (ranges.lua). ARGV: hash,
-- verification id ("" for none), now (ms), the phone, ranges.lua's bucket layout (4
-- numbers), "1" with events on. Returns 1 for
-- the one caller that consumed it, else 0.
if redis.call('HGET', KEYS[1], 'h') == ARGV[1] then
  if ARGV[2] ~= '' and redis.call('HGET', KEYS[1], 'v') == ARGV[2]
      and redis.call('HGET', KEYS[3], 'st') == 'pending' then
    redis.call('HSET', KEYS[3], 'st', 'approved', 'u', ARGV[3])
    if ARGV[9] == '1' then
      redis.call('ZREM', KEYS[6], ARGV[2])
      emit(KEYS[5], 'verification.approved', ARGV[3],
        verification_data(ARGV[2], KEYS[3], 'approved'))
    end
  end
  local sent = redis.call('HGET', KEYS[1], 't')
  if sent then
    local rb = {tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])}
    for i = 7, #KEYS do
      if redis.call('EXISTS', KEYS[i]) == 1 then
        count_range(KEYS[i], 'a', tonumber(sent), tonumber(ARGV[3]), 1, rb)
      end
    end
  end
  redis.call('DEL', KEYS[1], KEYS[2])
  redis.call('ZREM', KEYS[4], ARGV[4])
  return 1
end
return 0
