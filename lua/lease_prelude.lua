-- floodwall lease prelude, prepended after lua/prelude.lua to the scripts of the local cache
-- layer (core/src/scripts.rs): reading one identity's state, and the lease bookkeeping. Kept out of
-- decide.lua's prelude because every function defined is a closure made again on every call.

-- The `width` numbers in `raw`, the value of a state key (lua/prelude.lua format). nil when the
-- key is absent (`raw` not a string), holds another shape, or is of another type (GET refuses
-- it): such state starts afresh. (decide.lua does the same inline, on an MGET's values.)
local function decode_state(raw, width)
  if type(raw) ~= 'string' or #raw ~= 8 * width then return nil end
  local t = {struct.unpack(format(width), raw)}
  t[width + 1] = nil -- struct.unpack also returns the position after the last number
  return t
end

-- The state stored at `key` (decode_state, or {} when there is none), for scripts that read one key.
local function read_state(key, width)
  return decode_state(redis.pcall('GET', key), width) or {}
end

-- The lease rule shared by both batch scripts (twin: cache::twin::lease_size): drop the spent
-- lease `release`, expire old ones, and return how many of `want` permits may be leased given the
-- budget left by every instance's outstanding leases (`remaining` caps it further per window).
local function lease_size(leases, release, want, budget, now)
  if release ~= '' then redis.call('ZREM', leases, release) end
  if want <= 0 then return 0 end
  redis.call('ZREMRANGEBYSCORE', leases, '-inf', string.format('%.0f', now))
  local outstanding = 0
  for _, mem in ipairs(redis.call('ZRANGE', leases, 0, -1)) do
    outstanding = outstanding + (tonumber(string.match(mem, ':(%d+)$')) or 0)
  end
  local k = want
  if budget - outstanding < k then k = budget - outstanding end
  return k
end

-- Record a granted lease of `k` permits (member "id:k", score = expiry µs).
local function lease_record(leases, member, k, now, ttl)
  redis.call('ZADD', leases, string.format('%.0f', now + ttl), member .. ':' .. k)
  redis.call('PEXPIRE', leases, ceil(ttl / 1000) + 1 + ttl_pad_ms)
end

