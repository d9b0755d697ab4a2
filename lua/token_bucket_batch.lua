-- floodwall: token bucket (GCRA) for a batch of coalesced requests of one identity, plus an
-- optional lease. Each cost is decided in arrival order at one `now`, exactly as single calls of
-- decide.lua one after another at that instant would be (Rust twin: core/src/cache/twin.rs).
-- Then, if every request was admitted and a lease is wanted, up to `want` permits more are taken.
-- Runs after lua/prelude.lua.
--
-- KEYS[1..3] the epoch hashes of the identity's shard, whose field holds the TAT µs of each
--           limit (as decide.lua);  KEYS[4] sorted set of leases
--           outstanding (member "id:size", score = expiry µs)
-- ARGV[1]   now in microseconds, or "" to read Redis TIME
-- ARGV[2]   m, the number of costs;  ARGV[2+j] cost j
-- ARGV[3+m] want;  ARGV[4+m] lease lifetime µs;  ARGV[5+m] budget;  ARGV[6+m] lease member id
-- ARGV[7+m] member of this instance's previous lease, spent or given back, to drop ("" none)
-- ARGV[8+m] MessagePack array: emission interval of limit i µs at i, its burst at n+i
-- ARGV[9+m] the identity's field;  ARGV[10+m] the epoch of the hashes µs (core/src/keys.rs)
-- returns   {granted (permits leased), now, allowed per cost, then the state read: the TAT of
--           each limit (nothing for a new identity)}; cache::twin::apply_batch computes the answers

local now = now_us(ARGV[1])
local m = tonumber(ARGV[2])
local want = tonumber(ARGV[3 + m])
local ttl = tonumber(ARGV[4 + m])
local budget = tonumber(ARGV[5 + m])
local member = ARGV[6 + m]
local release = ARGV[7 + m]
local P = mp_unpack(ARGV[8 + m])
local n = #P / 2
local s, sh = read_state(ARGV[9 + m], n, tonumber(ARGV[10 + m]), now)

local T, B, tat = {}, {}, {}
for i = 1, n do
  T[i], B[i] = P[i], P[n + i]
  local stored = s[i]
  if stored == nil or stored < now then stored = now end
  tat[i] = stored
end

local out = {0, now}
local changed, all_admitted = false, true
for j = 1, m do
  local cost = tonumber(ARGV[2 + j])
  local new_tat = {}
  local all_ok = true
  for i = 1, n do
    new_tat[i] = tat[i] + T[i] * cost
    if not (now >= new_tat[i] - T[i] * B[i]) then all_ok = false end
  end
  if all_ok then
    changed = true
    tat = new_tat
    out[#out + 1] = 1
  else
    all_admitted = false
    out[#out + 1] = 0
  end
end

-- The lease: as sliding_window_batch.lua (a quarter of what the tightest bucket holds, within
-- the budget left by every instance's outstanding leases).
local k = lease_size(KEYS[4], release, all_admitted and want or 0, budget, now)
for i = 1, n do
  local q = floor(floor((now - (tat[i] - T[i] * B[i])) / T[i]) / 4)
  if q < k then k = q end
end
local granted = 0
if k > 0 then
  granted = k
  changed = true
  for i = 1, n do tat[i] = tat[i] + T[i] * k end
  lease_record(KEYS[4], member, k, now, ttl)
end

if changed then write_state(sh, ARGV[9 + m], tat, now) end
out[1] = granted
for i = 1, #s do out[#out + 1] = s[i] end
return out
