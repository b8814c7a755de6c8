-- Issue a code: check every limit, and when all pass replace the code and charge them.
-- Runs after window.lua, which decodes ARGV[1] into `spec` and counts the window.
--
-- KEYS: code, cooldown, then per quota (previous, current), per distinct quota (set),
--       per surge guard (previous, current, block), then the request window if any.
-- ARGV[1]: {"now", "ttl", "cd", "q": [[limit, win]], "d": [[member, limit, win]],
--           "s": [[min, factor, win, block]], "w": [limit, win] or absent}; ARGV[2]: hash.
-- Returns {wc, wt, tag, ...}: tag 0 issued, then 1 per distinct member this send added;
--   1 cooldown (ms); 2 quota (i, prev, cur); 3 surge block (i, ms); 4 distinct (i, ms);
--   -5 request window over (from window.lua).
local now = spec.now
local q, d, s = spec.q, spec.d, spec.s
local dbase = 3 + 2 * #q
local sbase = dbase + #d

for i = 1, #s do
  local until_ms = tonumber(redis.call('GET', KEYS[sbase + 3 * i - 1]) or '0')
  if until_ms > now then return {wc, wt, 3, i, until_ms - now} end
end

local cd = tonumber(redis.call('GET', KEYS[2]) or '0')
if cd > now then return {wc, wt, 1, cd - now} end

for i = 1, #q do
  local prev = tonumber(redis.call('GET', KEYS[1 + 2 * i]) or '0')
  local cur = tonumber(redis.call('GET', KEYS[2 + 2 * i]) or '0')
  local limit, win = q[i][1], q[i][2]
  if prev * (1 - (now % win) / win) + cur + 1 > limit then return {wc, wt, 2, i, prev, cur} end
end

for i = 1, #d do
  local key, member, limit, win = KEYS[dbase + i - 1], d[i][1], d[i][2], d[i][3]
  if redis.call('SISMEMBER', key, member) == 0 and redis.call('SCARD', key) >= limit then
    return {wc, wt, 4, i, win - (now % win)}
  end
end

for i = 1, #s do
  local g = s[i]
  local prev = tonumber(redis.call('GET', KEYS[sbase + 3 * i - 3]) or '0')
  local cur = tonumber(redis.call('GET', KEYS[sbase + 3 * i - 2]) or '0')
  if cur + 1 > math.max(g[1], g[2] * prev) then
    local until_ms = now + g[4]
    redis.call('SET', KEYS[sbase + 3 * i - 1], until_ms, 'PXAT', until_ms)
    return {wc, wt, 3, i, g[4]}
  end
end

redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'h', ARGV[2], 'a', 0)
redis.call('PEXPIREAT', KEYS[1], now + spec.ttl)
if spec.cd > 0 then redis.call('SET', KEYS[2], now + spec.cd, 'PXAT', now + spec.cd) end
for i = 1, #q do
  local win = q[i][2]
  redis.call('INCR', KEYS[2 + 2 * i])
  redis.call('PEXPIREAT', KEYS[2 + 2 * i], (math.floor(now / win) + 2) * win)
end
local out = {wc, wt, 0}
for i = 1, #d do
  local key, win = KEYS[dbase + i - 1], d[i][3]
  out[#out + 1] = redis.call('SADD', key, d[i][1])
  redis.call('PEXPIREAT', key, (math.floor(now / win) + 1) * win)
end
for i = 1, #s do
  local win = s[i][3]
  local key = KEYS[sbase + 3 * i - 2]
  redis.call('INCR', key)
  redis.call('PEXPIREAT', key, (math.floor(now / win) + 2) * win)
end
return out
