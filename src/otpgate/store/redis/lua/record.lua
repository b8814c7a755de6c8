-- Shared head of the scripts that read or change a phone's record (the store prepends
-- it): everything short-lived otpgate keeps per phone, in one packed value.
--
-- A record is not a key of its own: it is the field <phone> of one of the shared
-- hashes P{phones}:<slice ms>:<slice>:<shard>, filed under the time slice its last
-- part ends in; the slice's hash expires a slice after that slice is over. So a
-- record costs a hash entry rather than a key (key, expiry and object headers), and a
-- guess at a number that has no code costs a few dozen bytes, gone soon after its time.
-- The caller gives the hashes of the phone's shard for the slices a live record can
-- be in (from the one holding `now` to the one holding now + the longest any part
-- lives, and one more for a writer whose clock runs ahead), and in "ps" the first
-- slice's number and the slice width (ms).
--
-- Parts, each with its end (ms, the caller's clock; 0: none), dropped once it is over:
--   the code (or, without one, the guesses' attempts): h code HMAC ('' none), a
--     attempts, e end, i the send's short id, n its distinct flags (issue.lua), t its
--     send time, v its verification id
--   the resend cooldown: c its end
--   the sends the phone's own send limit logs: g {time, short id, ...}, ge when the
--     newest leaves the window
--   failed guesses while the phone had no code: fn, fl the last one's time, fe their
--     end (failures at a live code are remembered for weeks, in the P{phone}:fails key)
-- Packed with cmsgpack as an array, times relative to the first (the time of writing),
-- trailing empty parts left off.

local REC_TIMES = {'e', 'fl', 'fe', 'c', 'ge', 't'}

local function rec_empty()
  return {h = '', a = 0, e = 0, i = '', n = '', t = 0, v = '', c = 0, g = {}, ge = 0,
    fn = 0, fl = 0, fe = 0}
end

local function rec_encode(r, now)
  local function rel(x) if x == 0 then return false end return x - now end
  local g = {}
  for k = 1, #r.g, 2 do g[k], g[k + 1] = r.g[k] - now, r.g[k + 1] end
  local out = {now, r.a, rel(r.e), r.fn, rel(r.fl), rel(r.fe), rel(r.c), rel(r.ge), g,
    r.h, r.i, r.n, rel(r.t), r.v}
  -- Left off at the end: what decodes to the empty part (a count of 0 is, a relative
  -- time of 0 is not: it is `now`).
  local last = #out
  while last > 1 and (out[last] == false or out[last] == ''
      or (out[last] == 0 and (last == 2 or last == 4))
      or (type(out[last]) == 'table' and #out[last] == 0)) do
    out[last] = nil
    last = last - 1
  end
  return cmsgpack.pack(out)
end

local function rec_decode(packed)
  local x = cmsgpack.unpack(packed)
  local base = x[1]
  local function abs(y) if not y then return 0 end return base + y end
  local r = rec_empty()
  r.a, r.e, r.fn, r.fl, r.fe = x[2] or 0, abs(x[3]), x[4] or 0, abs(x[5]), abs(x[6])
  r.c, r.ge, r.h, r.i, r.n, r.t = abs(x[7]), abs(x[8]), x[10] or '', x[11] or '', x[12] or '', abs(x[13])
  r.v = x[14] or ''
  local g = x[9] or {}
  for k = 1, #g, 2 do r.g[k], r.g[k + 1] = base + g[k], g[k + 1] end
  return r
end

-- Forget the parts that are over at `now`.
local function rec_settle(r, now)
  if r.e <= now then r.h, r.a, r.e, r.i, r.n, r.t, r.v = '', 0, 0, '', '', 0, '' end
  if r.c <= now then r.c = 0 end
  if r.ge <= now then r.g, r.ge = {}, 0 end
  if r.fe <= now then r.fn, r.fl, r.fe = 0, 0, 0 end
  return r
end

local function rec_end(r)
  return math.max(r.e, r.c, r.ge, r.fe)
end

-- Drop the code part (and a code-less guesses' attempts): what replacing, using,
-- voiding or ending a code leaves.
local function rec_drop_code(r)
  r.h, r.a, r.e, r.i, r.n, r.t, r.v = '', 0, 0, '', '', 0, ''
end

-- The phone's consecutive failures and the last one's time: from its failures key when
-- it has one (failures at a live code, kept for weeks), else from the record; and
-- whether the key holds them.
local function rec_failures(r, fails)
  local kept = redis.call('HMGET', fails, 'n', 'l')
  if kept[1] then return tonumber(kept[1]), tonumber(kept[2] or '0'), true end
  return r.fn, r.fl, false
end

-- The phone's record from KEYS[first .. first + count - 1] (its slices' hashes), as it
-- stands at `now`, and where it was found (nil: nowhere).
local function rec_load(first, count, phone, now)
  for k = first, first + count - 1 do
    local packed = redis.call('HGET', KEYS[k], phone)
    if packed then return rec_settle(rec_decode(packed), now), k end
  end
  return rec_empty(), nil
end

-- File the record under the slice its last part ends in (forgetting it when none is
-- left), moving it from `found` when that is another slice. `ps` = {first slice, width}.
local function rec_save(r, first, count, found, phone, now, ps)
  local ends = rec_end(r)
  local at = nil
  if ends > now then
    local slice = math.floor(ends / ps[2])
    at = first + slice - ps[1]
    if at < first or at > first + count - 1 then
      error('otpgate: a phone record ends past the slices the store reads')
    end
    redis.call('HSET', KEYS[at], phone, rec_encode(r, now))
    -- Kept a slice longer than its records' ends: for a reader whose clock runs behind.
    redis.call('PEXPIREAT', KEYS[at], (slice + 2) * ps[2])
  end
  if found and found ~= at then redis.call('HDEL', KEYS[found], phone) end
end
