-- Loaded by every scenario script (dofile). Gives them:
--   phone()        a random valid US number from the same space as the Python
--                  flow driver (area codes come from BENCH_AREA_CODES);
--   post_json()    a formatted POST with a JSON body (and BENCH_API_KEY as a bearer
--                  key, when set);
--   status counts  only when BENCH_COUNT_STATUS=1 (sanity runs: a response()
--                  callback makes wrk parse every reply and slows it down);
--   one line "BENCH_RESULT {json}" on exit, which bench/wrk.py parses.
local area_codes = {}
for code in string.gmatch(os.getenv("BENCH_AREA_CODES") or "212", "%d+") do
  area_codes[#area_codes + 1] = code
end

local all_threads = {}

function setup(thread)
  all_threads[#all_threads + 1] = thread
  thread:set("thread_no", #all_threads)
end

function init(args)
  math.randomseed(os.time() * 1009 + (thread_no or 0) * 7919 + math.floor(os.clock() * 1e6))
  counts = {}
end

function phone()
  return string.format("+1%s%03d%04d", area_codes[math.random(#area_codes)],
    math.random(200, 999), math.random(0, 9999))
end

local api_key = os.getenv("BENCH_API_KEY")

function post_json(path, body)
  local headers = { ["Content-Type"] = "application/json" }
  if api_key and api_key ~= "" then headers["Authorization"] = "Bearer " .. api_key end
  return wrk.format("POST", path, headers, body)
end

if os.getenv("BENCH_COUNT_STATUS") == "1" then
  function response(status, headers, body)
    counts[status] = (counts[status] or 0) + 1
  end
end

function done(summary, latency, requests)
  local merged = {}
  for _, thread in ipairs(all_threads) do
    for status, n in pairs(thread:get("counts") or {}) do
      merged[status] = (merged[status] or 0) + n
    end
  end
  local statuses = {}
  for status, n in pairs(merged) do
    statuses[#statuses + 1] = string.format('"%d":%d', status, n)
  end
  local seconds = summary.duration / 1e6
  local e = summary.errors
  io.write("BENCH_RESULT ", string.format(
    '{"requests":%d,"seconds":%.3f,"rps":%.1f,"p50_ms":%.3f,"p90_ms":%.3f,' ..
    '"p99_ms":%.3f,"max_ms":%.3f,"mean_ms":%.3f,"non_2xx_3xx":%d,' ..
    '"socket_errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d},"statuses":{%s}}',
    summary.requests, seconds, summary.requests / seconds,
    latency:percentile(50) / 1e3, latency:percentile(90) / 1e3, latency:percentile(99) / 1e3,
    latency.max / 1e3, latency.mean / 1e3, e.status,
    e.connect, e.read, e.write, e.timeout, table.concat(statuses, ",")), "\n")
end
