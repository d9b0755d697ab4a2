-- floodwall: sliding window for a batch of coalesced requests of one identity, plus an optional
-- lease. Each cost is decided in arrival order at one `now`, exactly as if the requests had made
-- single calls of decide.lua one after another at that instant (core/src/cache/twin.rs is
-- the Rust twin). Then, if every request was admitted and a lease is wanted, up to `want` permits
-- more are consumed for the caller to spend locally (core/src/cache/mod.rs, docs/ARCHITECTURE.md).
-- Runs after lua/prelude.lua.
--
-- KEYS[1..3] the epoch hashes of the identity's shard, whose field holds {i, p, c} per window
--           (as decide.lua);  KEYS[4] sorted set of leases
--           outstanding (member "id:size", score = expiry µs)
-- ARGV[1]   now in microseconds, or "" to read Redis TIME
-- ARGV[2]   m, the number of costs;  ARGV[2+j] cost j
-- ARGV[3+m] want: lease permits wanted (0 = none);  ARGV[4+m] lease lifetime µs
-- ARGV[5+m] budget: most permits outstanding in leases of this identity at once (all instances)
-- ARGV[6+m] lease member id;  ARGV[7+m] member of this instance's previous lease, spent or given
--           back, to drop from the set ("" none)
-- ARGV[8+m] MessagePack array: window i length µs at i, window i limit at n+i
-- ARGV[9+m] the identity's field;  ARGV[10+m] the epoch of the hashes µs (core/src/keys.rs)
-- returns   {granted (permits leased), now, allowed per cost, then the state read: i, p, c per
--           window (nothing for a new identity)}; cache::twin::apply_batch computes the answers

local now = now_us(ARGV[1])
local m = tonumber(ARGV[2])
local want = tonumber(ARGV[3 + m])
local ttl = tonumber(ARGV[4 + m])
local budget = tonumber(ARGV[5 + m])
local member = ARGV[6 + m]
local release = ARGV[7 + m]
local P = mp_unpack(ARGV[8 + m])
local n = #P / 2
local s, sh = read_state(ARGV[9 + m], 3 * n, tonumber(ARGV[10 + m]), now)

local W, L, idx, prev, curr, el = {}, {}, {}, {}, {}, {}
for i = 1, n do
  W[i], L[i] = P[i], P[n + i]
  idx[i], prev[i], curr[i], el[i] = sw_roll(s[3 * i - 2], s[3 * i - 1], s[3 * i], now, W[i])
end

local function estimate(i)
  return prev[i] * ((W[i] - el[i]) / W[i]) + curr[i]
end

local out = {0, now}
local total, all_admitted = 0, true
for j = 1, m do
  local cost = tonumber(ARGV[2 + j])
  local all_ok = true
  for i = 1, n do
    if not (estimate(i) + cost <= L[i]) then all_ok = false end
  end
  if all_ok then
    total = total + cost
    for i = 1, n do curr[i] = curr[i] + cost end
    out[#out + 1] = 1
  else
    all_admitted = false
    out[#out + 1] = 0
  end
end

-- The lease: only when every request passed; at most a quarter of what any window has left (so
-- leases shrink as the budget does and vanish near the limit), and never more than the budget
-- minus what leases of all instances still hold.
local k = lease_size(KEYS[4], release, all_admitted and want or 0, budget, now)
for i = 1, n do
  local q = floor((L[i] - estimate(i)) / 4)
  if q < k then k = q end
end
local granted = 0
if k > 0 then
  granted = k
  total = total + k
  for i = 1, n do curr[i] = curr[i] + k end
  lease_record(KEYS[4], member, k, now, ttl)
end

if total > 0 then
  local v = {}
  for i = 1, n do
    v[3 * i - 2] = idx[i]
    v[3 * i - 1] = prev[i]
    v[3 * i] = curr[i]
  end
  write_state(sh, ARGV[9 + m], v, now)
end
out[1] = granted
for i = 1, #s do out[#out + 1] = s[i] end
return out
