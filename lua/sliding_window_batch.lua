-- floodwall: sliding window for a batch of coalesced requests of one identity, plus an optional
-- lease. Each cost is decided in arrival order at one `now`, exactly as if the requests had made
-- single calls of sliding_window.lua one after another at that instant (core/src/cache/twin.rs is
-- the Rust twin). Then, if every request was admitted and a lease is wanted, up to `want` permits
-- more are consumed for the caller to spend locally (core/src/cache/mod.rs, docs/ARCHITECTURE.md).
--
-- KEYS[i]   hash {i, p, c} of window i (as sliding_window.lua);  KEYS[n+1] sorted set of leases
--           outstanding (member "id:size", score = expiry µs)
-- ARGV[1]   now in microseconds, or "" to read Redis TIME
-- ARGV[2]   m, the number of costs;  ARGV[2+j] cost j
-- ARGV[3+m] want: lease permits wanted (0 = none);  ARGV[4+m] lease lifetime µs
-- ARGV[5+m] budget: most permits outstanding in leases of this identity at once (all instances)
-- ARGV[6+m] lease member id;  ARGV[7+m] member of this instance's previous lease, spent or given
--           back, to drop from the set ("" none)
-- ARGV[7+m+i] window i length µs;  ARGV[7+m+n+i] window i limit
-- returns   per cost j: {allowed, limited_by, now, (remaining, reset_after, retry_after) * n},
--           then granted (permits leased), then the window number of each window

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

local W, L, idx, prev, curr, el, rolled = {}, {}, {}, {}, {}, {}, {}
for i = 1, n do
  local w = tonumber(ARGV[base + i])
  W[i], L[i] = w, tonumber(ARGV[base + n + i])
  local cur = math.floor(now / w)
  local s = redis.call('HMGET', KEYS[i], 'i', 'p', 'c')
  local si, sp, sc = tonumber(s[1]), tonumber(s[2]) or 0, tonumber(s[3]) or 0
  if si == nil then
    sp, sc = 0, 0
  elseif cur == si + 1 then
    sp, sc = sc, 0
  elseif cur > si + 1 then
    sp, sc = 0, 0
  elseif cur < si then
    cur = si
  end
  local e = now - cur * w
  if e < 0 then e = 0 end
  idx[i], prev[i], curr[i], el[i], rolled[i] = cur, sp, sc, e, si ~= cur
end

local function estimate(i)
  return prev[i] * ((W[i] - el[i]) / W[i]) + curr[i]
end

local out = {}
local total, all_admitted = 0, true
for j = 1, m do
  local cost = tonumber(ARGV[2 + j])
  local est, ok = {}, {}
  local all_ok = true
  for i = 1, n do
    est[i] = estimate(i)
    ok[i] = est[i] + cost <= L[i]
    if not ok[i] then all_ok = false end
  end
  local consumed = 0
  if all_ok then consumed = cost else all_admitted = false end
  total = total + consumed
  local head = #out + 1
  out[head] = all_ok and 1 or 0
  out[head + 1] = 0
  out[head + 2] = now
  local worst = -1
  for i = 1, n do
    local w, limit = W[i], L[i]
    local c = curr[i] + consumed
    local remaining = math.floor(limit - est[i] - consumed)
    if remaining < 0 then remaining = 0 end
    local reset = 0
    if c > 0 then
      reset = (w - el[i]) + w
    elseif prev[i] > 0 then
      reset = w - el[i]
    end
    local retry = 0
    if not ok[i] then
      local need = limit - curr[i] - cost
      if need >= 0 then
        retry = (w - (need / prev[i]) * w) - el[i]
      else
        retry = (w - el[i]) + (w - ((limit - cost) / curr[i]) * w)
      end
      retry = math.ceil(retry)
      if retry < 1 then retry = 1 end
      if retry > worst then
        worst = retry
        out[head + 1] = i
      end
    end
    out[#out + 1] = remaining
    out[#out + 1] = reset
    out[#out + 1] = retry
  end
  for i = 1, n do curr[i] = curr[i] + consumed end
end

-- The lease: only when every request passed; at most a quarter of what any window has left (so
-- leases shrink as the budget does and vanish near the limit), and never more than the budget
-- minus what leases of all instances still hold.
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
    local q = math.floor((L[i] - estimate(i)) / 4)
    if q < k then k = q end
  end
  if k > 0 then
    granted = k
    total = total + k
    for i = 1, n do curr[i] = curr[i] + k end
    redis.call('ZADD', KEYS[n + 1], string.format('%.0f', now + ttl), member .. ':' .. k)
    redis.call('PEXPIRE', KEYS[n + 1], math.ceil(ttl / 1000) + 1)
  end
end

if total > 0 then
  for i = 1, n do
    if rolled[i] then
      redis.call('HSET', KEYS[i], 'i', string.format('%.0f', idx[i]), 'p', prev[i], 'c', curr[i])
      redis.call('PEXPIRE', KEYS[i], math.ceil(((idx[i] + 2) * W[i] - now) / 1000))
    else
      redis.call('HINCRBY', KEYS[i], 'c', total)
    end
  end
end
out[#out + 1] = granted
for i = 1, n do out[#out + 1] = idx[i] end
return out
