-- floodwall: token bucket (GCRA) for a batch of coalesced requests of one identity, plus an
-- optional lease. Each cost is decided in arrival order at one `now`, exactly as single calls of
-- token_bucket.lua one after another at that instant would be (Rust twin: core/src/cache/twin.rs).
-- Then, if every request was admitted and a lease is wanted, up to `want` permits more are taken.
--
-- KEYS[i]   string: theoretical arrival time (TAT) µs of limit i;  KEYS[n+1] sorted set of leases
--           outstanding (member "id:size", score = expiry µs)
-- ARGV[1]   now in microseconds, or "" to read Redis TIME
-- ARGV[2]   m, the number of costs;  ARGV[2+j] cost j
-- ARGV[3+m] want;  ARGV[4+m] lease lifetime µs;  ARGV[5+m] budget;  ARGV[6+m] lease member id
-- ARGV[7+m] member of this instance's previous lease, spent or given back, to drop ("" none)
-- ARGV[7+m+i] emission interval of limit i µs;  ARGV[7+m+n+i] burst of limit i
-- returns   per cost j: {allowed, limited_by, now, (remaining, reset_after, retry_after) * n},
--           then granted, then the TAT of each limit after the call

local now
if ARGV[1] ~= '' then
  now = tonumber(ARGV[1])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local m = tonumber(ARGV[2])
local want = tonumber(ARGV[3 + m])
local ttl = tonumber(ARGV[4 + m])
local budget = tonumber(ARGV[5 + m])
local member = ARGV[6 + m]
local release = ARGV[7 + m]
local base = 7 + m
local n = #KEYS - 1

local T, B, tat = {}, {}, {}
for i = 1, n do
  T[i], B[i] = tonumber(ARGV[base + i]), tonumber(ARGV[base + n + i])
  local stored = tonumber(redis.call('GET', KEYS[i]))
  if stored == nil or stored < now then stored = now end
  tat[i] = stored
end

local out = {}
local changed, all_admitted = false, true
for j = 1, m do
  local cost = tonumber(ARGV[2 + j])
  local new_tat, ok = {}, {}
  local all_ok = true
  for i = 1, n do
    new_tat[i] = tat[i] + T[i] * cost
    ok[i] = now >= new_tat[i] - T[i] * B[i]
    if not ok[i] then all_ok = false end
  end
  if not all_ok then all_admitted = false end
  local head = #out + 1
  out[head] = all_ok and 1 or 0
  out[head + 1] = 0
  out[head + 2] = now
  local worst = -1
  for i = 1, n do
    local t, burst = T[i], B[i]
    if all_ok then
      tat[i] = new_tat[i]
      changed = true
    end
    local after = tat[i]
    local remaining = math.floor((now - (after - t * burst)) / t)
    if remaining < 0 then remaining = 0 end
    if remaining > burst then remaining = burst end
    local retry = 0
    if not ok[i] then
      retry = new_tat[i] - t * burst - now
      if retry > worst then
        worst = retry
        out[head + 1] = i
      end
    end
    out[#out + 1] = remaining
    out[#out + 1] = after - now
    out[#out + 1] = retry
  end
end

-- The lease: as sliding_window_batch.lua (a quarter of what the tightest bucket holds, within
-- the budget left by every instance's outstanding leases).
-- a spent lease holds no permits: drop its record now rather than at its expiry
if release ~= '' then redis.call('ZREM', KEYS[n + 1], release) end
local granted = 0
if want > 0 and all_admitted then
  redis.call('ZREMRANGEBYSCORE', KEYS[n + 1], '-inf', string.format('%.0f', now))
  local outstanding = 0
  local held = redis.call('ZRANGE', KEYS[n + 1], 0, -1)
  for _, mem in ipairs(held) do
    outstanding = outstanding + (tonumber(string.match(mem, ':(%d+)$')) or 0)
  end
  local k = want
  if budget - outstanding < k then k = budget - outstanding end
  for i = 1, n do
    local q = math.floor(math.floor((now - (tat[i] - T[i] * B[i])) / T[i]) / 4)
    if q < k then k = q end
  end
  if k > 0 then
    granted = k
    changed = true
    for i = 1, n do tat[i] = tat[i] + T[i] * k end
    redis.call('ZADD', KEYS[n + 1], string.format('%.0f', now + ttl), member .. ':' .. k)
    redis.call('PEXPIRE', KEYS[n + 1], math.ceil(ttl / 1000) + 1)
  end
end

if changed then
  for i = 1, n do
    redis.call('SET', KEYS[i], string.format('%.0f', tat[i]), 'PX', math.ceil((tat[i] - now) / 1000))
  end
end
out[#out + 1] = granted
for i = 1, n do out[#out + 1] = tat[i] end
return out
