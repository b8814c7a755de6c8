-- Count one hit on a fixed-window request counter, for requests that reach no other
-- store operation.
--
-- KEYS: counter. ARGV: window_ms. Returns {count, ms left in the window}.
local c = redis.call('INCR', KEYS[1])
local t = redis.call('PTTL', KEYS[1])
if t < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  t = tonumber(ARGV[1])
end
return {c, t}
