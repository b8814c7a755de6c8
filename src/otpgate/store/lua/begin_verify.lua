-- Count one verify attempt and one failure before the caller compares anything.
-- Runs after window.lua, which decodes ARGV[1] into `spec` and counts the window.
--
-- KEYS: code, failures, the locked phones (sorted set: lockout end), the events stream,
-- then the request window if any. ARGV[1]: {"now", "exp" (expiry for a code-less
-- record), "t" threshold, "b" base ms, "m" max ms, "c" hard cap, "mem" memory ms, "ph"
-- the phone, "k" the lockout's kind, "ev" events on, "w": [limit, win] or absent}. A failure that locks the phone enters it among the
-- locked ones (for operators), and the ones whose lockout is over leave.
-- Returns {wc, wt, -5} over the window, {wc, wt, -1, ms} when locked (nothing
-- counted), else {wc, wt, attempts, hash or false, verification id or false}. Both counters rise before the
-- caller compares anything. A failure against a live code is remembered for "mem";
-- a guess at a phone with no code only as long as a code would live, so spraying
-- guesses at random numbers cannot fill the store for a month.
local o = spec
local function lockout_ms(failures)
  if failures < o.t then return 0 end
  if failures >= o.c then return o.mem end
  return math.min(o.b * 2 ^ (failures - o.t), o.m)
end
local n = tonumber(redis.call('HGET', KEYS[2], 'n') or '0')
if n >= o.t then
  local wait = lockout_ms(n)
  local last = tonumber(redis.call('HGET', KEYS[2], 'l') or '0')
  if last + wait > o.now then return {wc, wt, -1, last + wait - o.now} end
end
local a = redis.call('HINCRBY', KEYS[1], 'a', 1)
local h = redis.call('HGET', KEYS[1], 'h')
if (not h) and a == 1 then redis.call('PEXPIREAT', KEYS[1], o.exp) end
redis.call('HSET', KEYS[2], 'n', n + 1, 'l', o.now)
if n + 1 >= o.t then
  local ends = o.now + lockout_ms(n + 1)
  redis.call('ZADD', KEYS[3], ends, o.ph)
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', o.now)
  if o.ev then
    emit(KEYS[4], 'block.created', o.now,
      block_data(o.k, o.ph, 'failures', ends, {failures = n + 1}))
  end
end
if h then
  redis.call('PEXPIREAT', KEYS[2], o.now + o.mem)
elseif expires_at(KEYS[2]) < o.exp then
  redis.call('PEXPIREAT', KEYS[2], o.exp)
end
return {wc, wt, a, h or false, redis.call('HGET', KEYS[1], 'v') or false}
