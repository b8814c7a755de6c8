-- The lease's owner delivered an event: it and every one before it leave the stream.
--
-- KEYS: the lease, the events stream. ARGV: owner, the event's id.
if redis.call('HGET', KEYS[1], 'o') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'd', ARGV[2])
redis.call('XTRIM', KEYS[2], 'MINID', ARGV[2])
redis.call('XDEL', KEYS[2], ARGV[2])
return 1
