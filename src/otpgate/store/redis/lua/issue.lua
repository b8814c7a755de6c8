-- Issue a code: check every limit, and when all pass replace the code and charge them.
-- Runs after window.lua, which decodes ARGV[1] into `spec` and counts the window,
-- limits.lua, the window arithmetic, and record.lua, the phone's record.
--
-- KEYS: the phone's record slices ("ps"[3] of them), the send's void mark, its
--       verification record, then per quota either its sliding log (buckets 0: a
--       sorted set, score = ms, member = send id; none for the quota "gq", whose log
--       is the record's) or the sub-windows it counts, oldest first
--       (buckets_counted(now): buckets + 1 counters), then per distinct quota (set),
--       per surge guard (previous, current, block), then the request window if any.
-- ARGV[1]: {"now", "id" (send id), "sid" (its short id), "ph" the phone, "ps" {first
--           slice, width, count}, "gq" the quota the record logs (absent: none),
--           "ttl", "cd", "q": [[limit, win, buckets]],
--           "v": verification id, "ch" channel, "pu" purpose, "dt" details, "ret"
--           retention (absent without a verification), "rs": the key prefix when the
--           send may resume the replaced code's pending verification, "keep" how many
--           send times a record keeps,
--           "d": [[member, limit, win]], "s": [[min, factor, win, block]],
--           "sk": per surge guard its registry field ("<kind> <scope>"),
--           "ov": override entries covering the phone, "r": ranges counted,
--           "cv": [[min sends, min rate, first bucket, last bucket, block, field]],
--           "rb": ranges.lua's bucket layout, "w": [limit, win] or absent};
--           ARGV[2]: hash. Times and windows in ms.
--       After the surge keys: the exempt set, the deny set, the blocks registry (hash
--       of "<kind> <scope>": JSON), the index of ranges (sorted set: last send), the
--       events stream, the pending verifications by end, then each range's counts
--       (ranges.lua), then per conversion guard its range's counts and its block.
--       With "ev" (events on; "kp" the key prefix), a block set here, and a pending
--       verification whose code a new send replaces, are told of (events.lua).
-- Returns {wc, wt, tag, ...}: tag 0 issued (then the verification id, "" for none); 1
--   cooldown (ms); 2 quota (i, ms until one more send fits); 3 surge block (i, ms); 4
--   distinct (i, ms); 5 range denied; 7 conversion block (i, ms); -5 request window
--   over (from window.lua); -6 the send was voided (void.lua) before this step ran.
-- An exempt range skips every surge and conversion guard (and their blocks); its
-- sends are still counted.
-- The record's code keeps the send's short id "i" and, in "n", a '1' or '0' per
-- distinct quota: whether this send added its member (what void.lua gives back).
local now = spec.now
local q, d, s = spec.q, spec.d, spec.s
local slices = spec.ps[3]

if tonumber(redis.call('GET', KEYS[slices + 1]) or '0') > now then return {wc, wt, -6} end
local rec, found = rec_load(1, slices, spec.ph, now)

-- Where each quota's keys start, and for sub-windows the first and last counted.
local qkeys = {}
local at = slices + 3
for i = 1, #q do
  local win, buckets = q[i][2], q[i][3]
  if i == spec.gq then
    qkeys[i] = {0, 0, 0}
  elseif buckets == 0 then
    qkeys[i] = {at, 0, 0}
    at = at + 1
  else
    local first, last = buckets_counted(now, win, buckets)
    qkeys[i] = {at, first, last}
    at = at + last - first + 1
  end
end
local dbase = at
local sbase = dbase + #d
local xbase = sbase + 3 * #s
local registry, rbase = KEYS[xbase + 2], xbase + 6
local events, awaiting = KEYS[xbase + 4], KEYS[xbase + 5]
local cbase = rbase + #spec.r
local guard_s, guard_cv = s, spec.cv

-- Most deployments list nothing: one EXISTS spares both look-ups.
if #spec.ov > 0 and redis.call('EXISTS', KEYS[xbase], KEYS[xbase + 1]) > 0 then
  for _, listed in ipairs(redis.call('SMISMEMBER', KEYS[xbase + 1], unpack(spec.ov))) do
    if listed == 1 then return {wc, wt, 5} end
  end
  for _, listed in ipairs(redis.call('SMISMEMBER', KEYS[xbase], unpack(spec.ov))) do
    if listed == 1 then guard_s, guard_cv = {}, {} end
  end
end

-- A block's key holds its end; a lifted one, minus its end: until then the range is
-- in grace, and its guards neither refuse nor block it.
local grace_s, grace_cv = {}, {}
for i = 1, #guard_s do
  local until_ms = tonumber(redis.call('GET', KEYS[sbase + 3 * i - 1]) or '0')
  if until_ms > now then return {wc, wt, 3, i, until_ms - now} end
  grace_s[i] = until_ms < 0 and -until_ms > now
end
for i = 1, #guard_cv do
  local until_ms = tonumber(redis.call('GET', KEYS[cbase + 2 * i - 1]) or '0')
  if until_ms > now then return {wc, wt, 7, i, until_ms - now} end
  grace_cv[i] = until_ms < 0 and -until_ms > now
end

if rec.c > now then return {wc, wt, 1, rec.c - now} end

-- The record's log: the sends still in the window, oldest first (callers' clocks may
-- disagree, so not always in the order they were logged).
local logged = {}
if spec.gq then
  local win = q[spec.gq][2]
  for k = 1, #rec.g, 2 do
    if rec.g[k] > now - win then logged[#logged + 1] = {rec.g[k], rec.g[k + 1]} end
  end
  table.sort(logged, function(x, y) return x[1] < y[1] end)
end

for i = 1, #q do
  local limit, win, buckets = q[i][1], q[i][2], q[i][3]
  local k, first, last = qkeys[i][1], qkeys[i][2], qkeys[i][3]
  local wait
  if i == spec.gq then
    local times = {}
    for k = 1, #logged do times[k] = logged[k][1] end
    wait = log_wait(times, limit, win, now)
  elseif buckets == 0 then
    -- The sends that have left the window leave the log.
    redis.call('ZREMRANGEBYSCORE', KEYS[k], '-inf', now - win)
    local times = {}
    local flat = redis.call('ZRANGE', KEYS[k], 0, -1, 'WITHSCORES')
    for j = 2, #flat, 2 do times[#times + 1] = tonumber(flat[j]) end
    wait = log_wait(times, limit, win, now)
  else
    local counts = {}
    local got = redis.call('MGET', unpack(KEYS, k, k + last - first))
    for j = 1, #got do counts[j] = tonumber(got[j] or '0') end
    wait = buckets_wait(counts, first, limit, win, buckets, now)
  end
  if wait > 0 then return {wc, wt, 2, i, wait} end
end

for i = 1, #d do
  local key, member, limit, win = KEYS[dbase + i - 1], d[i][1], d[i][2], d[i][3]
  if redis.call('SISMEMBER', key, member) == 0 and redis.call('SCARD', key) >= limit then
    return {wc, wt, 4, i, win - (now % win)}
  end
end

for i = 1, #guard_s do
  local g = guard_s[i]
  local prev = tonumber(redis.call('GET', KEYS[sbase + 3 * i - 3]) or '0')
  local cur = tonumber(redis.call('GET', KEYS[sbase + 3 * i - 2]) or '0')
  if not grace_s[i] and cur + 1 > math.max(g[1], g[2] * prev) then
    local until_ms = now + g[4]
    redis.call('SET', KEYS[sbase + 3 * i - 1], until_ms, 'PXAT', until_ms)
    local counts = {sends = cur + 1, previous = prev}
    redis.call('HSET', registry, spec.sk[i], cjson.encode(
      {r = 'surge', s = now, e = until_ms, c = counts}))
    if spec.ev then
      local kind, scope = string.match(spec.sk[i], '^(%S+) (.*)$')
      emit(events, 'block.created', now, block_data(kind, scope, 'surge', until_ms, counts))
    end
    return {wc, wt, 3, i, g[4]}
  end
end

local passed = {}  -- counts key: the weighed buckets it passed on, once the send is made
for i = 1, #guard_cv do
  local c = guard_cv[i]
  local counts_key = KEYS[cbase + 2 * i - 2]
  local sends, approvals = 0, 0
  -- The settled buckets' sends and approvals no longer change (their codes are over),
  -- so a verdict holds until the weighed buckets do: "vc" remembers the last passed.
  local weighed = c[3] .. ':' .. c[4]
  local judged = grace_cv[i] or redis.call('HGET', counts_key, 'vc') == weighed
  -- The settled buckets lie in this hour and the two before (they start less than an
  -- hour and a bucket ago): under the minimum there, nothing to weigh.
  local recent, hour = 0, math.floor(now / spec.rb[3])
  if not judged then
    for _, v in ipairs(redis.call('HMGET', counts_key,
        'S' .. hour, 'S' .. (hour - 1), 'S' .. (hour - 2))) do
      recent = recent + tonumber(v or '0')
    end
  end
  if not judged and recent >= c[1] and c[4] >= c[3] then
    local fields = {}
    for j = c[3], c[4] do
      fields[#fields + 1] = 's' .. j
      fields[#fields + 1] = 'a' .. j
    end
    local got = redis.call('HMGET', KEYS[cbase + 2 * i - 2], unpack(fields))
    for k = 1, #got, 2 do
      sends = sends + tonumber(got[k] or '0')
      approvals = approvals + tonumber(got[k + 1] or '0')
    end
  end
  if not judged then passed[counts_key] = weighed end
  if not judged and sends >= c[1] and approvals < c[2] * sends then
    local until_ms = now + c[5]
    redis.call('SET', KEYS[cbase + 2 * i - 1], until_ms, 'PXAT', until_ms)
    local counts = {sends = sends, approvals = approvals}
    redis.call('HSET', registry, c[6], cjson.encode(
      {r = 'conversion', s = now, e = until_ms, c = counts}))
    if spec.ev then
      local kind, scope = string.match(c[6], '^(%S+) (.*)$')
      emit(events, 'block.created', now, block_data(kind, scope, 'conversion', until_ms, counts))
    end
    return {wc, wt, 7, i, c[5]}
  end
end

if spec.cd > 0 then rec.c = now + spec.cd end
for i = 1, #q do
  local win, buckets = q[i][2], q[i][3]
  local k, first, last = qkeys[i][1], qkeys[i][2], qkeys[i][3]
  if i == spec.gq then
    logged[#logged + 1] = {now, spec.sid}
    rec.g = {}
    for j = 1, #logged do
      rec.g[#rec.g + 1] = logged[j][1]
      rec.g[#rec.g + 1] = logged[j][2]
      -- Kept until its newest send leaves the window.
      rec.ge = math.max(rec.ge, logged[j][1] + win)
    end
  elseif buckets == 0 then
    redis.call('ZADD', KEYS[k], now, spec.id)
    -- Kept until its newest send leaves the window: callers' clocks may disagree, so
    -- the newest is not always this one.
    local newest = redis.call('ZRANGE', KEYS[k], -1, -1, 'WITHSCORES')
    redis.call('PEXPIREAT', KEYS[k], tonumber(newest[2]) + win)
  else
    -- The current sub-window, bucket_index(now), is the last one counted.
    local key = KEYS[k + last - first]
    redis.call('INCR', key)
    redis.call('PEXPIREAT', key, bucket_leaves(last, win, buckets))
  end
end
local added = {}
for i = 1, #d do
  local key, win = KEYS[dbase + i - 1], d[i][3]
  added[i] = tostring(redis.call('SADD', key, d[i][1]))
  redis.call('PEXPIREAT', key, (math.floor(now / win) + 1) * win)
end
for i = 1, #s do
  local win = s[i][3]
  local key = KEYS[sbase + 3 * i - 2]
  redis.call('INCR', key)
  redis.call('PEXPIREAT', key, (math.floor(now / win) + 2) * win)
end
-- A resuming send continues the verification of the code it replaces when that one is
-- live, stored pending, and of this send's purpose, channel and details.
local vid, record, sends = spec.v, KEYS[slices + 2], nil
if spec.rs then
  local old = rec.v
  if old ~= '' then
    local key = spec.rs .. '{' .. old .. '}:ver'
    local f = redis.call('HMGET', key, 'st', 'e', 'ch', 'pu', 'dt', 'sa', 'c')
    if f[1] == 'pending' and tonumber(f[2]) > now and f[3] == spec.ch
        and (f[4] or false) == (spec.pu or false) and (f[5] or false) == (spec.dt or false) then
      vid, record, sends = old, key, f[6] or f[7]
    end
  end
end
if spec.ev and not sends then
  -- A new send replaces the phone's live code: its pending verification is canceled.
  local old = rec.v
  if old ~= '' then
    local key = spec.kp .. '{' .. old .. '}:ver'
    local st, e = unpack(redis.call('HMGET', key, 'st', 'e'))
    if st == 'pending' and tonumber(e) > now then
      redis.call('ZREM', awaiting, old)
      emit(events, 'verification.canceled', now, verification_data(old, key, 'canceled'))
    end
  end
end
rec_drop_code(rec)
local rb = spec.rb
for i = 1, #spec.r do
  local key = KEYS[rbase + i - 1]
  -- The first send of an hour sets how long the counts live and marks the range
  -- active (the index is pruned a day after): once an hour, not once a send.
  if count_range(key, 's', now, now, 1, rb) == 1 then
    redis.call('PEXPIREAT', key, (math.floor(now / rb[3]) + rb[4]) * rb[3])
    redis.call('ZADD', KEYS[xbase + 3], now, spec.r[i])
  end
end
for key, weighed in pairs(passed) do
  if redis.call('EXISTS', key) == 1 then redis.call('HSET', key, 'vc', weighed) end
end
rec.h, rec.a, rec.i, rec.n, rec.t, rec.e = ARGV[2], 0, spec.sid, table.concat(added), now,
  now + spec.ttl
if vid then
  rec.v = vid
  if sends then
    local times = {}
    for t in string.gmatch(sends .. ',' .. now, '[^,]+') do times[#times + 1] = t end
    local kept = {unpack(times, math.max(1, #times - spec.keep + 1))}
    redis.call('HSET', record, 'u', now, 'e', now + spec.ttl, 'sa', table.concat(kept, ','))
  else
    redis.call('DEL', record)
    redis.call('HSET', record, 'ph', spec.ph, 'st', 'pending', 'ch', spec.ch, 'c', now,
      'u', now, 'e', now + spec.ttl, 'sa', now)
    if spec.pu then redis.call('HSET', record, 'pu', spec.pu) end
    if spec.dt then redis.call('HSET', record, 'dt', spec.dt) end
  end
  redis.call('PEXPIREAT', record, now + spec.ttl + spec.ret)
  if spec.ev then redis.call('ZADD', awaiting, now + spec.ttl, vid) end
end
rec_save(rec, 1, slices, found, spec.ph, now, spec.ps)
return {wc, wt, 0, vid or ''}
