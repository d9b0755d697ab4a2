-- floodwall: token bucket as GCRA (one theoretical arrival time per limit), several limits of one
-- identity in one atomic call. Twin of core/src/algorithm.rs (token_bucket), which computes the
-- answers from the state this script returns. Runs after lua/prelude.lua (now_us, read_state, tb_write).
--
-- KEYS[1]   string: the theoretical arrival time (TAT) in microseconds of each limit
-- ARGV[1]   now in microseconds, or "" to read Redis TIME (the only source in production)
-- ARGV[2]   cost
-- ARGV[3]   "c" consume, "p" peek (no write)
-- ARGV[4]   MessagePack array: emission interval of limit i in whole µs at i, its burst at n+i
-- returns   {allowed, now_us, then the state read: the TAT of each limit (nothing for a new identity)}

local now = now_us(ARGV[1])
local cost = tonumber(ARGV[2])
local P = mp_unpack(ARGV[4])
local n = #P / 2
local s = read_state(KEYS[1], n)

local new_tat = {}
local all_ok = true
for i = 1, n do
  local t, burst = P[i], P[n + i]
  local stored = s[i]
  if stored == nil or stored < now then stored = now end
  new_tat[i] = stored + t * cost
  if not (now >= new_tat[i] - t * burst) then all_ok = false end
end

if all_ok and ARGV[3] == 'c' then tb_write(KEYS[1], new_tat, now) end
return {all_ok and 1 or 0, now, unpack(s)}
