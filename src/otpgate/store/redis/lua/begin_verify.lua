-- Count one verify attempt and one failure before the caller compares anything.
-- Runs after window.lua, which decodes ARGV[1] into `spec` and counts the window, and
-- record.lua.
--
-- KEYS: the phone's record slices (record.lua; "ps"[3] of them), failures, the locked
-- phones (sorted set: lockout end), the events stream, then the request window if any.
-- ARGV[1]: {"now", "exp" (the end of a guess's attempts when there is no code), "t"
-- threshold, "b" base ms, "m" max ms, "c" hard cap, "mem" memory ms, "ph" the phone,
-- "k" the lockout's kind, "ev" events on, "ps" {first slice, width, count}, "w":
-- [limit, win] or absent}. A failure that locks the phone enters it among the locked
-- ones (for operators), and the ones whose lockout is over leave.
-- Returns {wc, wt, -5} over the window, {wc, wt, -1, ms} when locked (nothing
-- counted), else {wc, wt, attempts, hash or false, verification id or false}. Both
-- counters rise before the caller compares anything. A failure against a live code is
-- remembered for "mem" (the failures key); a guess at a phone with no code only as
-- long as a code would live, in the record, so spraying guesses at random numbers
-- cannot fill the store for a month, nor with a key per number.
local o = spec
local count = o.ps[3]
local fails, locks, events = KEYS[count + 1], KEYS[count + 2], KEYS[count + 3]
local function lockout_ms(failures)
  if failures < o.t then return 0 end
  if failures >= o.c then return o.mem end
  return math.min(o.b * 2 ^ (failures - o.t), o.m)
end
local r, found = rec_load(1, count, o.ph, o.now)
local n, last, in_key = rec_failures(r, fails)
if n >= o.t then
  local wait = lockout_ms(n)
  if last + wait > o.now then return {wc, wt, -1, last + wait - o.now} end
end
-- Without a code, the guesses' attempts last as long as a code would from the first.
if r.e == 0 then r.e = o.exp end
r.a = r.a + 1
local live = r.h ~= ''
if live or in_key then
  redis.call('HSET', fails, 'n', n + 1, 'l', o.now)
  if live then
    redis.call('PEXPIREAT', fails, o.now + o.mem)
  elseif expires_at(fails) < o.exp then
    redis.call('PEXPIREAT', fails, o.exp)
  end
  r.fn, r.fl, r.fe = 0, 0, 0
else
  r.fn, r.fl, r.fe = n + 1, o.now, math.max(r.fe, o.exp)
end
if n + 1 >= o.t then
  local ends = o.now + lockout_ms(n + 1)
  redis.call('ZADD', locks, ends, o.ph)
  redis.call('ZREMRANGEBYSCORE', locks, '-inf', o.now)
  if o.ev then
    emit(events, 'block.created', o.now,
      block_data(o.k, o.ph, 'failures', ends, {failures = n + 1}))
  end
end
rec_save(r, 1, count, found, o.ph, o.now, o.ps)
return {wc, wt, r.a, live and r.h or false, r.v ~= '' and r.v or false}
