-- Shared head of issue.lua, begin_verify.lua and hit_window.lua (the store prepends
-- it): decode the parameters and count the client's request window when one is given.
--
-- ARGV[1] is one JSON document (cjson) holding every parameter other than keys;
-- times in it are milliseconds from the caller's clock, and every time computed
-- here is on that clock too (never PTTL or a relative expiry, which follow the
-- server's), so expiry means the same thing here as in the SQLite store. The
-- window's key is the last of KEYS, its limit and length in "w": [limit, win]
-- (absent: no window). Over the window the script stops here with
-- {count, ms left, -5}; otherwise the script's reply starts with the window's
-- count and ms left (-1 and 0 without a window), then a tag.
local spec = cjson.decode(ARGV[1])

-- When `key` lapses, in ms on the caller's clock; -1 without an expiry, -2 without the key.
local function expires_at(key)
  local at = redis.pcall('PEXPIRETIME', key)
  if type(at) == 'number' then return at end
  -- Redis before 7.0 has no PEXPIRETIME: the time left by its own clock, from now.
  local left = redis.call('PTTL', key)
  if left < 0 then return left end
  return spec.now + left
end

local wc, wt = -1, 0
if spec.w then
  local wk = KEYS[#KEYS]
  local ends = expires_at(wk)
  if ends >= 0 and ends <= spec.now then
    -- Over by the caller's clock though not yet by the server's: a new window.
    redis.call('DEL', wk)
    ends = -2
  end
  wc = redis.call('INCR', wk)
  if ends < 0 then
    ends = spec.now + spec.w[2]
    redis.call('PEXPIREAT', wk, ends)
  end
  wt = ends - spec.now
  -- -5: a tag no script's own reply uses (begin_verify's third field is an attempt count).
  if wc > spec.w[1] then return {wc, wt, -5} end
end
