-- The sliding-window arithmetic of otpgate.domain.limits, mirrored line for line: the
-- store rules (otpgate.store.rules) call those functions, this script runs these, and the
-- equivalence test requires the same answers. Change one, change the other.
-- Integer milliseconds; Lua's numbers are doubles, exact for integers far past any
-- epoch in ms, and math.floor(a / b) floors as Python's a // b does for them.

local function sum(xs)
  local total = 0
  for i = 1, #xs do total = total + xs[i] end
  return total
end

-- limits.log_wait; `times` oldest first. Lua counts from 1: Python's times[len - limit]
-- is times[#times - limit + 1] here.
local function log_wait(times, limit, window_ms, now_ms)
  if #times < limit then
    return 0
  end
  return times[#times - limit + 1] + window_ms - now_ms
end

-- limits.bucket_index
local function bucket_index(now_ms, window_ms, buckets)
  return math.floor(now_ms / math.floor(window_ms / buckets))
end

-- limits.bucket_leaves
local function bucket_leaves(index, window_ms, buckets)
  return (index + 1) * math.floor(window_ms / buckets) + window_ms
end

-- limits.buckets_counted; Python's range(first, last + 1) is returned as first, last.
local function buckets_counted(now_ms, window_ms, buckets)
  return bucket_index(now_ms - window_ms, window_ms, buckets),
    bucket_index(now_ms, window_ms, buckets)
end

-- limits.buckets_wait; `counts` oldest first (1-based: counts[offset + 1]).
local function buckets_wait(counts, first, limit, window_ms, buckets, now_ms)
  local excess = sum(counts) + 1 - limit -- sends that must leave the count first
  if excess <= 0 then
    return 0
  end
  for offset = 0, #counts - 1 do
    excess = excess - counts[offset + 1]
    if excess <= 0 then
      return bucket_leaves(first + offset, window_ms, buckets) - now_ms
    end
  end
  error('unreachable: the counts sum to at least the excess')
end
