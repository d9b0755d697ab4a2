-- floodwall: two-counter sliding window, several windows of one identity in one atomic call.
-- Twin of core/src/algorithm.rs (sliding_window); the two must give the same answers.
--
-- KEYS[i]   hash {i = window index, p = previous count, c = current count} for window i
-- ARGV[1]   now in microseconds, or "" to read Redis TIME (the only source in production)
-- ARGV[2]   cost
-- ARGV[3]   "c" consume, "p" peek (no write)
-- ARGV[3+i] window i length in microseconds;  ARGV[3+n+i] window i limit
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

local idx, prev, curr, est, ok, rolled = {}, {}, {}, {}, {}, {}
local all_ok = true
for i = 1, n do
  local w = tonumber(ARGV[3 + i])
  local limit = tonumber(ARGV[3 + n + i])
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
    -- Redis time went backwards (failover to a node with an earlier clock): keep the newer state.
    cur = si
  end
  local el = now - cur * w
  if el < 0 then el = 0 end
  idx[i], prev[i], curr[i] = cur, sp, sc
  -- The expiry, (window + 2) * w, is fixed for a window number: set it only when that changes.
  rolled[i] = si ~= cur
  est[i] = sp * ((w - el) / w) + sc
  ok[i] = est[i] + cost <= limit
  if not ok[i] then all_ok = false end
end

local consumed = 0
if consume and all_ok then consumed = cost end

local out = {all_ok and 1 or 0, 0, now}
local worst = -1
for i = 1, n do
  local w = tonumber(ARGV[3 + i])
  local limit = tonumber(ARGV[3 + n + i])
  local el = now - idx[i] * w
  if el < 0 then el = 0 end
  local c = curr[i] + consumed
  if consumed > 0 then
    if rolled[i] then
      redis.call('HSET', KEYS[i], 'i', string.format('%.0f', idx[i]), 'p', prev[i], 'c', c)
      redis.call('PEXPIRE', KEYS[i], math.ceil(((idx[i] + 2) * w - now) / 1000))
    else
      redis.call('HINCRBY', KEYS[i], 'c', consumed)
    end
  end
  local remaining = math.floor(limit - est[i] - consumed)
  if remaining < 0 then remaining = 0 end
  local reset = 0
  if c > 0 then
    reset = (w - el) + w
  elseif prev[i] > 0 then
    reset = w - el
  end
  local retry = 0
  if not ok[i] then
    local need = limit - curr[i] - cost
    if need >= 0 then
      retry = (w - (need / prev[i]) * w) - el
    else
      retry = (w - el) + (w - ((limit - cost) / curr[i]) * w)
    end
    retry = math.ceil(retry)
    if retry < 1 then retry = 1 end
    if retry > worst then
      worst = retry
      out[2] = i
    end
  end
  out[#out + 1] = remaining
  out[#out + 1] = reset
  out[#out + 1] = retry
end
return out
