-- POST a Verify v2 VerificationCheck (form-encoded, Basic auth) with a wrong code for a
-- fresh random number each time: no verification is pending, so the answer is 404 20404.
-- The path and the Authorization header come from BENCH_V2_PATH and BENCH_V2_AUTH.
dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")
local path = os.getenv("BENCH_V2_PATH")
local headers = {
  ["Content-Type"] = "application/x-www-form-urlencoded",
  ["Authorization"] = os.getenv("BENCH_V2_AUTH"),
}
function request()
  local to = string.gsub(phone(), "%+", "%%2B")
  return wrk.format("POST", path, headers, "To=" .. to .. "&Code=000000")
end
