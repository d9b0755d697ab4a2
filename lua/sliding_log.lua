-- floodwall: exact sliding log in one sorted set per identity (score = arrival time in µs), every
-- window of the identity checked against it in one atomic call. Twin of core/src/algorithm.rs
-- (sliding_log). Memory is O(largest limit) per identity: the core refuses limits above
-- MAX_LOG_ENTRIES so a single key can never grow into a Redis stall. Runs after lua/prelude.lua.
--
-- KEYS[1]   sorted set of arrivals;  KEYS[2] string: sequence for unique members
-- ARGV[1]   now in microseconds, or "" to read Redis TIME (the only source in production)
-- ARGV[2]   cost
-- ARGV[3]   "c" consume, "p" peek (no write)
-- ARGV[4]   n, the number of windows
-- ARGV[4+i] window i length in microseconds;  ARGV[4+n+i] window i limit
-- returns   {allowed, limited_by (1-based, 0 = none), now_us, then per window: remaining, reset_after_us, retry_after_us}

local now = now_us(ARGV[1])
local cost = tonumber(ARGV[2])
local consume = ARGV[3] == 'c'
local n = tonumber(ARGV[4])
local log, seq = KEYS[1], KEYS[2]

local longest = 0
for i = 1, n do
  local w = tonumber(ARGV[4 + i])
  if w > longest then longest = w end
end
if consume then
  redis.call('ZREMRANGEBYSCORE', log, '-inf', string.format('%.0f', now - longest))
end

local count, ok = {}, {}
local all_ok = true
for i = 1, n do
  local w = tonumber(ARGV[4 + i])
  local limit = tonumber(ARGV[4 + n + i])
  count[i] = redis.call('ZCOUNT', log, '(' .. string.format('%.0f', now - w), '+inf')
  ok[i] = count[i] + cost <= limit
  if not ok[i] then all_ok = false end
end

local consumed = 0
if consume and all_ok then
  consumed = cost
  local last = redis.call('INCRBY', seq, cost)
  local score = string.format('%.0f', now)
  local batch = {}
  for j = last - cost + 1, last do
    batch[#batch + 1] = score
    batch[#batch + 1] = string.format('%.0f', j)
    if #batch >= 1000 then
      redis.call('ZADD', log, unpack(batch))
      batch = {}
    end
  end
  if #batch > 0 then redis.call('ZADD', log, unpack(batch)) end
  local ttl = math.ceil(longest / 1000)
  redis.call('PEXPIRE', log, ttl)
  redis.call('PEXPIRE', seq, ttl)
end

local newest = nil
local top = redis.call('ZRANGE', log, -1, -1, 'WITHSCORES')
if top[2] ~= nil then newest = tonumber(top[2]) end

local out = {all_ok and 1 or 0, 0, now}
local worst = -1
for i = 1, n do
  local w = tonumber(ARGV[4 + i])
  local limit = tonumber(ARGV[4 + n + i])
  local c = count[i] + consumed
  local remaining = limit - c
  if remaining < 0 then remaining = 0 end
  local reset = 0
  if c > 0 and newest ~= nil then reset = newest + w - now end
  local retry = 0
  if not ok[i] then
    -- the k-th oldest arrival inside the window must leave it before `cost` more fit
    local k = count[i] + cost - limit
    local e = redis.call('ZRANGEBYSCORE', log, '(' .. string.format('%.0f', now - w), '+inf', 'WITHSCORES', 'LIMIT', k - 1, 1)
    retry = tonumber(e[2]) + w - now
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
