-- Shared head of issue.lua and begin_verify.lua (the store prepends it): decode the
-- parameters and count the client's request window when one is given.
--
-- ARGV[1] is one JSON document (cjson) holding every parameter other than keys;
-- times in it are milliseconds from the caller's clock, so expiry means the same
-- thing here as in the SQLite store. The window's key is the last of KEYS, its
-- limit and length in "w": [limit, win] (absent: no window). Over the window the
-- script stops here with {count, ms left, 5}; otherwise the script's reply starts
-- with the window's count and ms left (-1 and 0 without a window), then a tag.
local spec = cjson.decode(ARGV[1])

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
