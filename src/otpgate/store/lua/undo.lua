-- Undo an issue whose SMS failed: remove the code and refund its charges, if the
-- code is still this one (a newer send's charges are not ours to refund).
--
-- KEYS: code, cooldown, then counters to decrement (sub-windows, surge windows), then
--       sliding logs to remove the send from, then sets to remove the member from.
-- ARGV: code hash, number of counters, number of logs, send id, then one member per set.
-- Returns 1 when undone, 0 when the code was no longer this one.
if redis.call('HGET', KEYS[1], 'h') ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1], KEYS[2])
local n, m = tonumber(ARGV[2]), tonumber(ARGV[3])
for i = 3, 2 + n do
  if redis.call('DECR', KEYS[i]) <= 0 then redis.call('DEL', KEYS[i]) end
end
for i = 3 + n, 2 + n + m do
  redis.call('ZREM', KEYS[i], ARGV[4])
end
for i = 3 + n + m, #KEYS do
  redis.call('SREM', KEYS[i], ARGV[i - n - m + 2])
end
return 1
