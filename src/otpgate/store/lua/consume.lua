-- Delete the code if it is still this hash, clear the phone's failures, and approve
-- the code's verification when it is the one named and still pending.
--
-- KEYS: code, failures, the verification record. ARGV: hash, verification id ("" for
-- none), now (ms). Returns 1 for the one caller that consumed it, else 0.
if redis.call('HGET', KEYS[1], 'h') == ARGV[1] then
  if ARGV[2] ~= '' and redis.call('HGET', KEYS[1], 'v') == ARGV[2]
      and redis.call('HGET', KEYS[3], 'st') == 'pending' then
    redis.call('HSET', KEYS[3], 'st', 'approved', 'u', ARGV[3])
  end
  redis.call('DEL', KEYS[1], KEYS[2])
  return 1
end
return 0
