-- POST /api/v1/request-otp for a fresh random number each time: limits check,
-- code stored, one SNS Publish to the stub, 200.
dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")
function request()
  return post_json("/api/v1/request-otp", '{"phoneNumber":"' .. phone() .. '"}')
end
