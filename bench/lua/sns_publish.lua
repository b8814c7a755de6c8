-- The SNS stub alone: the form-encoded Query-API Publish both services send.
dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")
local headers = { ["Content-Type"] = "application/x-www-form-urlencoded; charset=utf-8" }
function request()
  local body = "Action=Publish&Version=2010-03-31&PhoneNumber=" .. phone():gsub("%+", "%%2B") ..
    "&Message=Your+verification+code+is%3A+" .. string.format("%06d", math.random(0, 999999)) ..
    "&MessageAttributes.entry.1.Name=AWS.SNS.SMS.SMSType" ..
    "&MessageAttributes.entry.1.Value.DataType=String" ..
    "&MessageAttributes.entry.1.Value.StringValue=Transactional"
  return wrk.format("POST", "/", headers, body)
end
