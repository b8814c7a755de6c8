-- Shared head of the scripts that queue events (the store prepends it): with events
-- on, a step appends what it did to the events stream in the same atomic step, so
-- none is lost. Each entry: "t" type, "at" time (ms), "d" its data (JSON), the shapes
-- of otpgate.domain.events.

local function emit(log, t, at, data)
  redis.call('XADD', log, '*', 't', t, 'at', at, 'd', cjson.encode(data))
end

local function verification_data(id, record, status)
  local ph, ch, pu = unpack(redis.call('HMGET', record, 'ph', 'ch', 'pu'))
  return {verificationId = id, phoneNumber = ph, channel = ch, purpose = pu or cjson.null,
    status = status}
end

local function block_data(kind, scope, reason, ends_ms, counts)
  return {kind = kind, scope = scope, reason = reason, endsAt = ends_ms / 1000, counts = counts}
end
