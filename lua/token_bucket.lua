-- floodwall: token bucket as GCRA (one theoretical arrival time per key), several limits of one
-- identity in one atomic call. Twin of core/src/algorithm.rs (token_bucket).
--
-- KEYS[i]   string: theoretical arrival time (TAT) in microseconds for limit i
-- ARGV[1]   now in microseconds, or "" to read Redis TIME (the only source in production)
-- ARGV[2]   cost
-- ARGV[3]   "c" consume, "p" peek (no write)
-- ARGV[3+i] emission interval of limit i in whole microseconds;  ARGV[3+n+i] burst of limit i
-- returns   {allowed, limited_by (1-based, 0 = none), now_us, then per window: remaining, reset_after_us, retry_after_us}

local now
if ARGV[1] ~= '' then
  now = tonumber(ARGV[1])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local cost = tonumber(ARGV[2])
local consume = ARGV[3] == 'c'
local n = #KEYS

local tat, new_tat, ok = {}, {}, {}
local all_ok = true
for i = 1, n do
  local t = tonumber(ARGV[3 + i])
  local burst = tonumber(ARGV[3 + n + i])
  local stored = tonumber(redis.call('GET', KEYS[i]))
  if stored == nil or stored < now then stored = now end
  tat[i] = stored
  new_tat[i] = stored + t * cost
  ok[i] = now >= new_tat[i] - t * burst
  if not ok[i] then all_ok = false end
end

local take = consume and all_ok
local out = {all_ok and 1 or 0, 0, now}
local worst = -1
for i = 1, n do
  local t = tonumber(ARGV[3 + i])
  local burst = tonumber(ARGV[3 + n + i])
  local after = tat[i]
  if take then
    after = new_tat[i]
    redis.call('SET', KEYS[i], string.format('%.0f', after), 'PX', math.ceil((after - now) / 1000))
  end
  local remaining = math.floor((now - (after - t * burst)) / t)
  if remaining < 0 then remaining = 0 end
  if remaining > burst then remaining = burst end
  local retry = 0
  if not ok[i] then
    retry = new_tat[i] - t * burst - now
    if retry > worst then
      worst = retry
      out[2] = i
    end
  end
  out[#out + 1] = remaining
  out[#out + 1] = after - now
  out[#out + 1] = retry
end
return out
