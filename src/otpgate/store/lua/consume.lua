-- Delete the code if it is still this hash, and clear the phone's failures.
--
-- KEYS: code, failures. ARGV: hash. Returns 1 for the one caller that consumed it, else 0.
if redis.call('HGET', KEYS[1], 'h') == ARGV[1] then
  redis.call('DEL', KEYS[1], KEYS[2])
  return 1
end
return 0
