-- floodwall: give back the unused permits of a lease (core/src/cache/mod.rs). Returning is an
-- optimisation: a lease that is never returned costs other instances some admissions until its
-- permits age out of the window, never an admission too many. Runs after lua/prelude.lua.
--
-- KEYS[1..3] the epoch hashes of the identity's shard (sliding window or token bucket);  KEYS[4]
--           sorted set of outstanding leases
-- ARGV[1]   "sw" or "tb";  ARGV[2] unused permits;  ARGV[3] lease member ("id:size")
-- ARGV[4]   now µs, or "" to read Redis TIME;  ARGV[5] the identity's field;  ARGV[6] the epoch
--           of the hashes µs (core/src/keys.rs)
-- sw: ARGV[6+i] the window number the lease was taken in, for window i
-- tb: ARGV[6+i] emission interval of limit i µs;  ARGV[6+n+i] TAT of limit i right after the grant
-- returns   {permits given back} (0 when the windows have moved on)

local now = now_us(ARGV[4])
local mode, unused, field, E = ARGV[1], tonumber(ARGV[2]), ARGV[5], tonumber(ARGV[6])
redis.call('ZREM', KEYS[4], ARGV[3])
if unused <= 0 then return {0} end

if mode == 'sw' then
  local n = #ARGV - 6
  local s, sh = read_state(field, 3 * n, E, now)
  if #s == 0 then return {0} end
  local given, changed = 0, false
  for i = 1, n do
    local leased_in, si = tonumber(ARGV[6 + i]), s[3 * i - 2]
    -- the permits count in window `leased_in`: as current while it is current, as previous after
    local at = nil
    if si == leased_in then at = 3 * i elseif si == leased_in + 1 then at = 3 * i - 1 end
    if at ~= nil then
      local back = unused
      if back > s[at] then back = s[at] end
      s[at] = s[at] - back
      given = back
      if back > 0 then changed = true end
    end
  end
  if changed then write_state(sh, field, s, now) end
  return {given}
end

-- tb: only while every bucket's TAT has stayed ahead of now since the grant; once a TAT fell
-- behind now, the bucket refilled past the leased permits and giving them back would add credit.
local n = (#ARGV - 6) / 2
for i = 1, n do
  if now >= tonumber(ARGV[6 + n + i]) then return {0} end
end
local s, sh = read_state(field, n, E, now)
if #s == 0 then return {0} end
for i = 1, n do
  if s[i] > now then
    local after = s[i] - tonumber(ARGV[6 + i]) * unused
    if after < now then after = now end
    s[i] = after
  end
end
write_state(sh, field, s, now)
return {unused}
