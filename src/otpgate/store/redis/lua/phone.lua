-- What operators see of a phone, and the lifting of its lockout.
--
-- KEYS: the phone's record slices (record.lua; ARGV[5] of them), its failures.
-- ARGV: the phone, now (ms), the slices' first and width, their count, "1" to forget
-- the phone's failures (a lifted lockout), the window of the sends the record logs
-- (ms; 0: it logs none).
-- Returns {code pending (1/0), code end, attempts, verification id, cooldown end, sends
-- in the window, failures, last failure}, ends and times in ms (0: none).
local phone, now = ARGV[1], tonumber(ARGV[2])
local ps = {tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])}
local count = ps[3]
local r, found = rec_load(1, count, phone, now)
local fails = KEYS[count + 1]
if ARGV[6] == '1' then
  r.fn, r.fl, r.fe = 0, 0, 0
  rec_save(r, 1, count, found, phone, now, ps)
  redis.call('DEL', fails)
end
local n, last = rec_failures(r, fails)
local win, sends = tonumber(ARGV[7]), 0
if win > 0 then
  for k = 1, #r.g, 2 do
    if r.g[k] > now - win then sends = sends + 1 end
  end
end
local pending = r.h ~= ''
return {pending and 1 or 0, pending and r.e or 0, pending and r.a or 0, r.v, r.c, sends, n, last}
