-- Tell of the pending verifications whose code's time is up (verification.expired).
--
-- KEYS: the pending verifications by end, the events stream. ARGV: now (ms), how many,
-- the key prefix (a record's key is built from it: <prefix>{<id>}:ver).
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, vid in ipairs(due) do
  redis.call('ZREM', KEYS[1], vid)
  local record = ARGV[3] .. '{' .. vid .. '}:ver'
  if redis.call('HGET', record, 'st') == 'pending' then
    emit(KEYS[2], 'verification.expired', ARGV[1], verification_data(vid, record, 'expired'))
  end
end
return #due
