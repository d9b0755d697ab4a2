-- floodwall: give back the unused permits of a lease (core/src/cache/mod.rs). Returning is an
-- optimisation: a lease that is never returned costs other instances some admissions until its
-- permits age out of the window, never an admission too many.
--
-- KEYS[i]   the identity's window hashes (sliding window) or TAT strings (token bucket);
--           KEYS[n+1] sorted set of outstanding leases
-- ARGV[1]   "sw" or "tb";  ARGV[2] unused permits;  ARGV[3] lease member ("id:size")
-- ARGV[4]   now µs, or "" to read Redis TIME
-- sw: ARGV[4+i] the window number the lease was taken in, for window i
-- tb: ARGV[4+i] emission interval of limit i µs;  ARGV[4+n+i] TAT of limit i right after the grant
-- returns   {permits given back} (0 when the windows have moved on)

local now
if ARGV[4] ~= '' then
  now = tonumber(ARGV[4])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local mode, unused = ARGV[1], tonumber(ARGV[2])
local n = #KEYS - 1
redis.call('ZREM', KEYS[n + 1], ARGV[3])
if unused <= 0 then return {0} end

if mode == 'sw' then
  local given = 0
  for i = 1, n do
    local leased_in = tonumber(ARGV[4 + i])
    local s = redis.call('HMGET', KEYS[i], 'i', 'p', 'c')
    local si = tonumber(s[1])
    -- the permits count in window `leased_in`: as current while it is current, as previous after
    local field = nil
    if si == leased_in then field = 'c' elseif si == leased_in + 1 then field = 'p' end
    if field ~= nil then
      local v = tonumber(s[field == 'c' and 3 or 2]) or 0
      local back = unused
      if back > v then back = v end
      if back > 0 then redis.call('HINCRBY', KEYS[i], field, -back) end
      given = back
    end
  end
  return {given}
end

-- tb: only while every bucket's TAT has stayed ahead of now since the grant; once a TAT fell
-- behind now, the bucket refilled past the leased permits and giving them back would add credit.
for i = 1, n do
  if now >= tonumber(ARGV[4 + n + i]) then return {0} end
end
for i = 1, n do
  local t = tonumber(ARGV[4 + i])
  local stored = tonumber(redis.call('GET', KEYS[i]))
  if stored ~= nil and stored > now then
    local after = stored - t * unused
    if after < now then after = now end
    redis.call('SET', KEYS[i], string.format('%.0f', after), 'KEEPTTL')
  end
end
return {unused}
