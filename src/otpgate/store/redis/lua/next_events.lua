-- Take (or renew) the delivery lease and read the oldest undelivered events.
--
-- KEYS: the lease (hash: "o" owner, "u" until ms, "d" the last delivered id), the
-- events stream. ARGV: owner, now (ms), until (ms), how many. Returns false while
-- another owner holds the lease, else the entries after the last delivered one.
local owner, until_ms, done = unpack(redis.call('HMGET', KEYS[1], 'o', 'u', 'd'))
if owner and owner ~= ARGV[1] and tonumber(until_ms) > tonumber(ARGV[2]) then return false end
redis.call('HSET', KEYS[1], 'o', ARGV[1], 'u', ARGV[3])
local start = '-'
if done then start = '(' .. done end
return redis.call('XRANGE', KEYS[2], start, '+', 'COUNT', ARGV[4])
