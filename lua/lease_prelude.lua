-- floodwall lease prelude, prepended after lua/prelude.lua to the scripts of the local cache
-- layer (core/src/scripts.rs): reading one identity's state, and the lease bookkeeping. Kept out of
-- decide.lua's prelude because every function defined is a closure made again on every call.

-- The `width` numbers in `raw`, a state as stored (lua/prelude.lua format). nil when there is
-- none (`raw` not a string) or it holds another shape: such state starts afresh. (decide.lua
-- does the same inline.)
local function decode_state(raw, width)
  if type(raw) ~= 'string' or #raw ~= 8 * width then return nil end
  local t = {struct.unpack(format(width), raw)}
  t[width + 1] = nil -- struct.unpack also returns the position after the last number
  return t
end

-- The state of the one identity `field` of a script, in the shard whose hashes are KEYS[1..3]
-- (lua/prelude.lua shard_open; epochs of `E` µs): decode_state, or {} when there is none; and
-- the shard, to write it back with write_state.
local function read_state(field, width, E, now)
  local sh = shard_open(1, E, now)
  return decode_state(shard_read(sh, {field})[1], width) or {}, sh
end

-- Store the numbers `v` as the state of `field` in shard `sh` (from read_state). At maxmemory
-- (noeviction) the call fails as a whole: the caller's fallback decides.
local function write_state(sh, field, v, now)
  if not shard_write(sh, {field, encode_state(v)}, now) then
    error({err = 'OOM command not allowed when used memory > \'maxmemory\'.'})
  end
end

-- Sliding window: move the stored (window number, previous, current) to the window holding `now`
-- (twin: SwState::roll). Returns window number, previous count, current count, µs elapsed in it.
local function sw_roll(si, sp, sc, now, w)
  local cur = floor(now / w)
  sp, sc = sp or 0, sc or 0
  if si == nil then
    sp, sc = 0, 0
  elseif cur == si + 1 then
    sp, sc = sc, 0
  elseif cur > si + 1 then
    sp, sc = 0, 0
  elseif cur < si then
    -- Redis time went backwards (failover to a node with an earlier clock): keep the newer state
    cur = si
  end
  local el = now - cur * w
  if el < 0 then el = 0 end
  return cur, sp, sc, el
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

