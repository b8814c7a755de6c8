-- Void a send: if its code is still the phone's, remove the code and refund its
-- charges; otherwise (not issued yet, consumed, or replaced by a newer send, whose
-- charges are not ours to refund) mark its id so an issue of it never runs.
--
-- KEYS: the phone's record slices (record.lua; ARGV[16] of them), the send's void
--       mark, its verification record, then counters to decrement (sub-windows, surge
--       windows), then sliding logs to remove the send from, then one set per distinct
--       quota, then the counts of each range the send counted in, then the index of
--       ranges (a range left with no count leaves it), the events stream, the pending
--       verifications by end.
-- ARGV: send id, the mark's end (ms), number of counters, number of logs, now (ms),
--       the key prefix, ranges.lua's bucket layout (4 numbers), "1" with events on, the
--       phone, the send's short id (as the record keeps it), the slices' first, width
--       and count, "1" when the record logs the phone's sends, then one member per set;
--       the code's "n" says which of them this send added.
-- The verification (if the code names one) turns "failed": the send's own record, or
-- the one it resumed, whose key is built from the prefix as issue.lua builds it.
-- Returns 1 when the send's charges were refunded, 0 when there were none to refund.
local now, phone, short = tonumber(ARGV[5]), ARGV[12], tonumber(ARGV[13])
local ps = {tonumber(ARGV[14]), tonumber(ARGV[15]), tonumber(ARGV[16])}
local count = ps[3]
local mark, own_record = KEYS[count + 1], KEYS[count + 2]
local r, found = rec_load(1, count, phone, now)
if r.h == '' or r.i ~= short then
  redis.call('SET', mark, ARGV[2], 'PXAT', ARGV[2])
  return 0
end
local added, sent, vid = r.n, r.t, r.v
local rb = {tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])}
local members = #ARGV - 17
if vid ~= '' then
  local record = own_record
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
rec_drop_code(r)
r.c = 0
if ARGV[17] == '1' then
  local kept = {}
  for k = 1, #r.g, 2 do
    if r.g[k + 1] ~= short then
      kept[#kept + 1] = r.g[k]
      kept[#kept + 1] = r.g[k + 1]
    end
  end
  r.g = kept
  if #kept == 0 then r.ge = 0 end
end
rec_save(r, 1, count, found, phone, now, ps)
local first = count + 3
local n, m = tonumber(ARGV[3]), tonumber(ARGV[4])
for i = first, first + n - 1 do
  if redis.call('DECR', KEYS[i]) <= 0 then redis.call('DEL', KEYS[i]) end
end
for i = first + n, first + n + m - 1 do
  redis.call('ZREM', KEYS[i], ARGV[1])
end
for i = first + n + m, first + n + m + members - 1 do
  local j = i - first - n - m + 1
  if string.sub(added, j, j) == '1' then redis.call('SREM', KEYS[i], ARGV[17 + j]) end
end
for i = first + n + m + members, #KEYS - 3 do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    count_range(KEYS[i], 's', sent, now, -1, rb)
    -- No count left, only a remembered verdict (issue.lua's "vc"): nothing to keep.
    if redis.call('HLEN', KEYS[i]) == 1 and redis.call('HEXISTS', KEYS[i], 'vc') == 1 then
      redis.call('DEL', KEYS[i])
    end
    if redis.call('EXISTS', KEYS[i]) == 0 then
      redis.call('ZREM', KEYS[#KEYS - 2], string.match(KEYS[i], '{([^}]*)}:cv$'))
    end
  end
end
return 1
