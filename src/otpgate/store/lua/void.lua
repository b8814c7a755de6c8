-- Void a send: if its code is still the phone's, remove the code and refund its
-- charges; otherwise (not issued yet, consumed, or replaced by a newer send, whose
-- charges are not ours to refund) mark its id so an issue of it never runs.
--
-- KEYS: code, cooldown, the send's void mark, its verification record, then counters
--       to decrement (sub-windows, surge windows), then sliding logs to remove the send
--       from, then one set per distinct quota.
-- ARGV: send id, the mark's end (ms), number of counters, number of logs, now (ms),
--       the key prefix, then one member per set; the code's "n" says which of them this
--       send added.
-- The verification (if the code names one) turns "failed": the send's own record, or
-- the one it resumed, whose key is built from the prefix as issue.lua builds it.
-- Returns 1 when the send's charges were refunded, 0 when there were none to refund.
if redis.call('HGET', KEYS[1], 'i') ~= ARGV[1] then
  redis.call('SET', KEYS[3], ARGV[2], 'PXAT', ARGV[2])
  return 0
end
local added = redis.call('HGET', KEYS[1], 'n') or ''
local vid = redis.call('HGET', KEYS[1], 'v')
if vid then
  local record = KEYS[4]
  if not string.find(record, '{' .. vid .. '}', 1, true) then
    record = ARGV[6] .. '{' .. vid .. '}:ver'
  end
  if redis.call('EXISTS', record) == 1 then
    redis.call('HSET', record, 'st', 'failed', 'u', ARGV[5])
  end
end
redis.call('DEL', KEYS[1], KEYS[2])
local n, m = tonumber(ARGV[3]), tonumber(ARGV[4])
for i = 5, 4 + n do
  if redis.call('DECR', KEYS[i]) <= 0 then redis.call('DEL', KEYS[i]) end
end
for i = 5 + n, 4 + n + m do
  redis.call('ZREM', KEYS[i], ARGV[1])
end
for i = 5 + n + m, #KEYS do
  local j = i - 4 - n - m
  if string.sub(added, j, j) == '1' then redis.call('SREM', KEYS[i], ARGV[6 + j]) end
end
return 1
