"""The Lua scripts behind the Redis store, one per store operation.

Each runs atomically on the server. Times are milliseconds from the caller's
clock, so expiry means the same thing here as in the SQLite store. Parameters
other than keys travel as one JSON document (``cjson``) to keep the calling
convention readable.

ISSUE and BEGIN_VERIFY first count the client's request window when one is
given (its key is the last of KEYS, its limit in ``w``), so the per-IP limit
costs no extra round trip. Their replies start with the window's count and
reset time (-1 and 0 without a window), then a tag.
"""

# Shared head: count the request window, stop the script when it is over.
_WINDOW = """
local wc, wt = -1, 0
if spec.w then
  local wk = KEYS[#KEYS]
  wc = redis.call('INCR', wk)
  wt = redis.call('PTTL', wk)
  if wt < 0 then
    redis.call('PEXPIRE', wk, spec.w[2])
    wt = spec.w[2]
  end
  if wc > spec.w[1] then return {wc, wt, 5} end
end
"""


# KEYS: code, cooldown, then per quota (previous, current), per distinct quota (set),
#       per surge guard (previous, current, block), then the request window if any.
# ARGV[1]: {"now", "ttl", "cd", "q": [[limit, win]], "d": [[member, limit, win]],
#           "s": [[min, factor, win, block]], "w": [limit, win] or absent}; ARGV[2]: hash.
# Returns {wc, wt, tag, ...}: tag 0 issued, then 1 per distinct member this send added;
#   1 cooldown (ms); 2 quota (i, prev, cur); 3 surge block (i, ms); 4 distinct (i, ms);
#   5 request window over.
ISSUE = (
    """
local spec = cjson.decode(ARGV[1])
"""
    + _WINDOW
    + """
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
"""
)

# KEYS: code, cooldown, then counters to decrement, then sets to remove the member from.
# ARGV: code hash, number of counters, then one member per set.
UNDO = """
if redis.call('HGET', KEYS[1], 'h') ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1], KEYS[2])
local n = tonumber(ARGV[2])
for i = 3, 2 + n do
  if redis.call('DECR', KEYS[i]) <= 0 then redis.call('DEL', KEYS[i]) end
end
for i = 3 + n, #KEYS do
  redis.call('SREM', KEYS[i], ARGV[i - n])
end
return 1
"""

# KEYS: code, failures, then the request window if any. ARGV[1]: {"now", "exp"
# (expiry for a code-less record), "t" threshold, "b" base ms, "m" max ms, "c" hard
# cap, "mem" memory ms, "w": [limit, win] or absent}.
# Returns {wc, wt, 5} over the window, {wc, wt, -1, ms} when locked (nothing
# counted), else {wc, wt, attempts, hash or false}. Both counters rise before the
# caller compares anything. A failure against a live code is remembered for "mem";
# a guess at a phone with no code only as long as a code would live, so spraying
# guesses at random numbers cannot fill the store for a month.
BEGIN_VERIFY = (
    """
local spec = cjson.decode(ARGV[1])
"""
    + _WINDOW
    + """
local o = spec
local n = tonumber(redis.call('HGET', KEYS[2], 'n') or '0')
if n >= o.t then
  local wait = o.mem
  if n < o.c then wait = math.min(o.b * 2 ^ (n - o.t), o.m) end
  local last = tonumber(redis.call('HGET', KEYS[2], 'l') or '0')
  if last + wait > o.now then return {wc, wt, -1, last + wait - o.now} end
end
local a = redis.call('HINCRBY', KEYS[1], 'a', 1)
local h = redis.call('HGET', KEYS[1], 'h')
if (not h) and a == 1 then redis.call('PEXPIREAT', KEYS[1], o.exp) end
redis.call('HSET', KEYS[2], 'n', n + 1, 'l', o.now)
if h then
  redis.call('PEXPIREAT', KEYS[2], o.now + o.mem)
elseif redis.call('PTTL', KEYS[2]) < o.exp - o.now then
  redis.call('PEXPIREAT', KEYS[2], o.exp)
end
return {wc, wt, a, h or false}
"""
)

# KEYS: code, failures. ARGV: hash.
CONSUME = """
if redis.call('HGET', KEYS[1], 'h') == ARGV[1] then
  redis.call('DEL', KEYS[1], KEYS[2])
  return 1
end
return 0
"""

# KEYS: counter. ARGV: window_ms.
HIT_WINDOW = """
local c = redis.call('INCR', KEYS[1])
local t = redis.call('PTTL', KEYS[1])
if t < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  t = tonumber(ARGV[1])
end
return {c, t}
"""
