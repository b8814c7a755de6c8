-- Void a send: if its code is still the phone's, remove the code and refund its
-- charges; otherwise (not issued yet, consumed, or replaced by a newer send, whose
-- charges are not ours to refund) mark its id so an issue of it never runs.
--
-- KEYS: code, cooldown, the send's void mark, its verification record, then counters
--       to decrement (sub-windows, surge windows), then sliding logs to remove the send
--       from, then one set per distinct quota.
-- KEYS (continued): after the sets, the counts of each range the send counted in, then
--       the index of ranges (a range left with no count leaves it), the events
--       stream, the pending verifications by end.
-- ARGV: send id, the mark's end (ms), number of counters, number of logs, now (ms),
--       the key prefix, ranges.lua's bucket layout (4 numbers), "1" with events on,
--       then one member per set; the code's "n" says which of them this send added.
-- The verification (if the code names one) turns "failed": the send's own record, or
-- the one it resumed, whose key is built from the prefix as issue.lua builds it.
-- Returns 1 when the send's charges were refunded, 0 when there were none to refund.
if redis.call('HGET', KEYS[1], 'i') ~= ARGV[1] then
  redis.call('SET', KEYS[3], ARGV[2], 'PXAT', ARGV[2])
  return 0
end
local added = redis.call('HGET', KEYS[1], 'n') or ''
local sent = tonumber(redis.call('HGET', KEYS[1], 't') or ARGV[5])
local rb = {tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])}
local members = #ARGV - 11
local vid = redis.call('HGET', KEYS[1], 'v')
if vid then
  local record = KEYS[4]
  if not string.find(record, '{' .. vid .. '}', 1, true) then
    record = ARGV[6] .. '{' .. vid .. '}:ver'
  end
  if redis.call('EXISTS', record) == 1 then
    redis.call('HSET', record, 'st', 'failed', 'u', ARGV[5])
    if ARGV[11] == '1' then
      redis.call('ZREM', KEYS[#KEYS], vid)
      emit(KEYS[#KEYS - 1], 'verification.failed', ARGV[5],
        verification_data(vid, record, 'failed'))
    end
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
for i = 5 + n + m, 4 + n + m + members do
  local j = i - 4 - n - m
  if string.sub(added, j, j) == '1' then redis.call('SREM', KEYS[i], ARGV[11 + j]) end
end
for i = 5 + n + m + members, #KEYS - 3 do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    count_range(KEYS[i], 's', sent, tonumber(ARGV[5]), -1, rb)
    if redis.call('EXISTS', KEYS[i]) == 0 then
      redis.call('ZREM', KEYS[#KEYS - 2], string.match(KEYS[i], '{([^}]*)}:cv$'))
    end
  end
end
return 1
