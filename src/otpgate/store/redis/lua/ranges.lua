-- Shared head of the scripts that count a range's sends and approvals (issue.lua,
-- void.lua, consume.lua; the store prepends it). A range's counts are one hash: "s<j>"
-- sends and "a<j>" approvals per stat bucket j, "S<h>"/"A<h>" per hour h, all by the
-- send's time. `rb` is {bucket ms, buckets kept, hour ms, hours kept}
-- (otpgate.domain.limits); a bucket's count is kept while it can still be read.

local function prune_range(key, j, h, rb)
  for _, f in ipairs(redis.call('HKEYS', key)) do
    local which, b = string.sub(f, 1, 1), tonumber(string.sub(f, 2))
    local five = (which == 's' or which == 'a') and b <= j - rb[2]
    local hourly = (which == 'S' or which == 'A') and b <= h - rb[4]
    if five or hourly then redis.call('HDEL', key, f) end
  end
end

-- Count `by` sends ("s") or approvals ("a") of a send at `t` (ms) in the range `key`.
-- Returns the hour's count after the step (0 when that hour is no longer kept).
local function count_range(key, which, t, now, by, rb)
  local j, h = math.floor(t / rb[1]), math.floor(t / rb[3])
  local fields = {{which .. j, (j + rb[2]) * rb[1]}, {string.upper(which) .. h, (h + rb[4]) * rb[3]}}
  local n = 0
  for _, f in ipairs(fields) do
    n = 0
    if f[2] > now then
      n = redis.call('HINCRBY', key, f[1], by)
      if n <= 0 then
        redis.call('HDEL', key, f[1])
      elseif n == by and by > 0 and f[1] == 's' .. j then
        prune_range(key, j, h, rb)  -- a new bucket: the oldest leave
      end
    end
  end
  return n
end
