-- Record the channel that delivered a verification's code (a fallback's).
--
-- KEYS: the verification record.
-- ARGV: the channel.
-- A record that is gone (its retention over) is not made again.
-- Returns 1 when the record was changed, 0 when there was none.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
redis.call('HSET', KEYS[1], 'ch', ARGV[1])
return 1
