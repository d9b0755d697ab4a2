-- floodwall: two-counter sliding window, several windows of one identity in one atomic call.
-- Twin of core/src/algorithm.rs (sliding_window), which computes the answers from the state this
-- script returns. Runs after lua/prelude.lua (now_us, read_state, write_state, sw_roll).
--
-- KEYS[1]   string: {i, p, c} per window (window number, previous count, current count)
-- ARGV[1]   now in microseconds, or "" to read Redis TIME (the only source in production)
-- ARGV[2]   cost
-- ARGV[3]   "c" consume, "p" peek (no write)
-- ARGV[4]   MessagePack array: window i length in µs at i, window i limit at n+i
-- returns   {allowed, now_us, then the state read: i, p, c per window (nothing for a new identity)}

local now = now_us(ARGV[1])
local cost = tonumber(ARGV[2])
local P = mp_unpack(ARGV[4])
local n = #P / 2
local s = read_state(KEYS[1], 3 * n)

-- v: the state after this request, written only if every window allows it
local v, expiry, all_ok = {}, 0, true
for i = 1, n do
  local w, limit = P[i], P[n + i]
  local cur, prev, curr, el = sw_roll(s[3 * i - 2], s[3 * i - 1], s[3 * i], now, w)
  if not (prev * ((w - el) / w) + curr + cost <= limit) then all_ok = false end
  v[3 * i - 2], v[3 * i - 1], v[3 * i] = cur, prev, curr + cost
  -- the key lives until the last window's next one ends (after that no count in it matters)
  local e = (cur + 2) * w
  if e > expiry then expiry = e end
end

if all_ok and ARGV[3] == 'c' then write_state(KEYS[1], v, expiry - now) end
return {all_ok and 1 or 0, now, unpack(s)}
