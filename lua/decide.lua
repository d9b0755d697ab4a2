-- floodwall: one request or a batch of requests (of any identities) of one limiter, each decided
-- and recorded atomically on Redis time, for every algorithm. Twins: core/src/algorithm.rs. Runs
-- after lua/prelude.lua. Batching several callers into one call is how a script call's fixed cost
-- (EVALSHA, TIME, Lua setup) is shared (core/src/store/batch.rs); on a Cluster every key of one
-- call is in one slot, so a call there holds one request.
--
-- KEYS      per request: its state key (sliding window, token bucket), or its log and sequence
--           keys (sliding log)
-- ARGV[1]   now in microseconds, or "" to read Redis TIME (the only source in production)
-- ARGV[2]   "sw" sliding window, "tb" token bucket, "log" sliding log
-- ARGV[3]   MessagePack array of the limits (windows µs then limits; token bucket: emission
--           intervals µs then bursts): core/src/scripts.rs limit_args
-- ARGV[4]   MessagePack array: cost of request k at 2k-1, 1 (consume) or 0 (peek) at 2k
-- returns   {now, then per request: allowed (1/0), m, m numbers}: the state the request read
--           (sliding window, token bucket: the Rust twin computes the answers from it), or the
--           answers themselves (sliding log, whose state is a log: {allowed, limited_by, now,
--           (remaining, reset_after, retry_after) per window})

-- Sliding window: decide one request of `cost` against every window (limits P: n windows in µs,
-- then n limits) and, when `consume` and every window allows, record it. Returns allowed and the
-- state read (the Rust twin computes the answers from it).
local function sw_decide(key, P, n, cost, consume, now)
  local s = read_state(key, 3 * n)
  -- v: the state after this request, written only if every window allows it
  local v, ok = {}, true
  for i = 1, n do
    local w, limit = P[i], P[n + i]
    local cur, prev, curr, el = sw_roll(s[3 * i - 2], s[3 * i - 1], s[3 * i], now, w)
    if not (prev * ((w - el) / w) + curr + cost <= limit) then ok = false end
    v[3 * i - 2] = cur
    v[3 * i - 1] = prev
    v[3 * i] = curr + cost
  end
  if ok and consume then sw_write(key, v, P, now) end
  return ok, s
end

-- Token bucket (GCRA): decide one request of `cost` against every limit (P: n emission intervals
-- in µs, then n bursts) and, when `consume` and every limit allows, record it. Returns allowed and
-- the state read.
local function tb_decide(key, P, n, cost, consume, now)
  local s = read_state(key, n)
  local tat, ok = {}, true
  for i = 1, n do
    local t, burst = P[i], P[n + i]
    local stored = s[i]
    if stored == nil or stored < now then stored = now end
    tat[i] = stored + t * cost
    if not (now >= tat[i] - t * burst) then ok = false end
  end
  if ok and consume then tb_write(key, tat, now) end
  return ok, s
end

-- Sliding log: remove expired entries, count every window, add `cost` members if all allow.
-- Memory is O(largest limit) per identity: the core refuses limits above MAX_LOG_ENTRIES so a
-- single key can never grow into a Redis stall. Returns allowed and the answers.
local function log_decide(log, seq, P, n, cost, consume, now)
  local longest = 0
  for i = 1, n do
    if P[i] > longest then longest = P[i] end
  end
  if consume then
    redis.call('ZREMRANGEBYSCORE', log, '-inf', string.format('%.0f', now - longest))
  end

  local count, ok = {}, {}
  local all_ok = true
  for i = 1, n do
    local w, limit = P[i], P[n + i]
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
    local ttl = ceil(longest / 1000) + ttl_pad_ms
    redis.call('PEXPIRE', log, ttl)
    redis.call('PEXPIRE', seq, ttl)
  end

  local newest = nil
  local top = redis.call('ZRANGE', log, -1, -1, 'WITHSCORES')
  if top[2] ~= nil then newest = tonumber(top[2]) end

  local out = {all_ok and 1 or 0, 0, now}
  local worst = -1
  for i = 1, n do
    local w, limit = P[i], P[n + i]
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
  return all_ok, out
end

local now = now_us(ARGV[1])
local P = mp_unpack(ARGV[3])
local n = #P / 2
local R = mp_unpack(ARGV[4])
local mode = ARGV[2]

local out = {now}
for k = 1, #R / 2 do
  local cost, consume = R[2 * k - 1], R[2 * k] == 1
  local ok, s
  if mode == 'log' then
    ok, s = log_decide(KEYS[2 * k - 1], KEYS[2 * k], P, n, cost, consume, now)
  elseif mode == 'tb' then
    ok, s = tb_decide(KEYS[k], P, n, cost, consume, now)
  else
    ok, s = sw_decide(KEYS[k], P, n, cost, consume, now)
  end
  out[#out + 1] = ok and 1 or 0
  out[#out + 1] = #s
  for i = 1, #s do out[#out + 1] = s[i] end
end
return out
