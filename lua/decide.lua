-- floodwall: one request or a batch of requests (of any identities) of one limiter, each decided
-- and recorded atomically on Redis time, for every algorithm. Twins: core/src/algorithm.rs. Runs
-- after lua/prelude.lua. Batching several callers into one call is how a script call's fixed cost
-- (EVALSHA, TIME, Lua setup) is shared (core/src/store/batch.rs); on a Cluster every key of one
-- call is in one slot, so a call there holds one request.
--
-- KEYS      per request: its state key (sliding window, token bucket), or its log key and the
--           key of its entry counter, made only on a clash of entry names (sliding log: log_add)
-- ARGV[1]   now in microseconds, or "" to read Redis TIME (the only source in production)
-- ARGV[2]   a MessagePack stream of three values (one argument and one unpack: every argument
--           costs Redis a string and every unpack a C call, per call):
--           - "sw" sliding window, "tb" token bucket, "log" sliding log
--           - an array of the limits (windows µs then limits; token bucket: emission intervals µs
--             then bursts): core/src/scripts.rs limit_args
--           - an array of three numbers per request k: its cost at 3k-2, 1 (consume) or 0 (peek)
--             at 3k-1, and at 3k the number of the last earlier request of this call with the
--             same key (0: none)
-- returns   {now, one string}: per request in order, a head byte 2c + a (a: allowed 1/0, c: the
--           count of numbers that follow it), then c numbers packed as lua/prelude.lua stores a
--           state (little-endian doubles): the state the request read as stored (none for a new
--           identity: sliding window, token bucket; the Rust twin computes the answers from it),
--           or the answers themselves (sliding log, whose state is a log: allowed, limited_by,
--           now, then remaining, reset_after, retry_after per window). One string, not two
--           values per request: Redis converts a script's reply value by value, and the client
--           parses it so; a string is one memcpy on each side.

-- The numbers of a stored state, read in place (struct.unpack from a position: no table made).
local unpack_numbers = struct.unpack

-- Sliding window: decide one request of `cost` against every window (limits P: n windows in µs,
-- then n limits) from the state `s` as stored (false: a new identity). Fills T with the numbers
-- after the request; returns whether every window allows it, and whether a window number moved
-- (the key's expiry with it: lua/prelude.lua sw_expiry).
local function sw_decide(s, P, n, cost, now, T)
  local ok, moved = true, false
  for i = 1, n do
    local w, limit = P[i], P[n + i]
    local si, sp, sc
    if s then si, sp, sc = unpack_numbers('<ddd', s, 24 * i - 23) end
    -- sw_roll, inline: a Lua function call costs Redis about as much as the roll itself
    local cur, prev, curr = floor(now / w), 0, 0
    if si == nil then
      moved = true
    elseif cur == si then
      prev, curr = sp, sc
    elseif cur < si then
      cur, prev, curr = si, sp, sc
    else
      moved = true
      if cur == si + 1 then prev = sc end
    end
    local el = now - cur * w
    if el < 0 then el = 0 end
    if not (prev * ((w - el) / w) + curr + cost <= limit) then ok = false end
    T[3 * i - 2], T[3 * i - 1], T[3 * i] = cur, prev, curr + cost
  end
  return ok, moved
end

-- Token bucket (GCRA): decide one request of `cost` against every limit (P: n emission intervals
-- in µs, then n bursts) from the state `s` as stored (false: a new identity). Fills T with the
-- numbers after the request and returns whether every limit allows it, and that the expiry moved.
local function tb_decide(s, P, n, cost, now, T)
  local ok = true
  for i = 1, n do
    local t, burst = P[i], P[n + i]
    local stored = s and unpack_numbers('<d', s, 8 * i - 7) or now
    if stored < now then stored = now end
    T[i] = stored + t * cost
    if not (now >= T[i] - t * burst) then ok = false end
  end
  return ok, true -- every write moves the expiry (the latest arrival time)
end

-- Sliding log: add `cost` entries at `now` to `log`, which holds `size` entries after the trim.
-- Members "now:position" are unique while Redis time moves forward: nothing leaves the log at one
-- instant, so positions only grow there, and no counter key need be read and written per call.
-- ZADD NX reports a clash (Redis time gone back across a failover, a test clock set back), and a
-- clashing entry is then named from the counter at `seq`, which exists only for such clashes.
local function log_add(log, seq, at, size, cost)
  local added, batch = 0, {'NX'}
  for j = 1, cost do
    batch[#batch + 1] = at.now
    batch[#batch + 1] = at.now .. ':' .. (size + j)
    if #batch >= 1001 or j == cost then
      added = added + redis.call('ZADD', log, unpack(batch))
      batch = {'NX'}
    end
  end
  while added < cost do
    local id = redis.call('INCR', seq)
    redis.call('PEXPIRE', seq, at.ttl)
    added = added + redis.call('ZADD', log, 'NX', at.now, at.now .. ':c' .. id)
  end
end

-- Sliding log: remove expired entries, count every window, add `cost` members if all allow.
-- Memory is O(largest limit) per identity: the core refuses limits above MAX_LOG_ENTRIES so a
-- single key can never grow into a Redis stall. Returns allowed and the answers. `at` holds the
-- numbers of this call as Redis takes them, formatted once per call (every string.format is a C
-- call and a new string): `now`, the oldest score kept, and per window the exclusive lower bound.
local function log_decide(log, seq, P, n, cost, consume, now, at)
  local longest = at.longest
  if consume then
    redis.call('ZREMRANGEBYSCORE', log, '-inf', at.expired)
  end

  local count, ok = {}, {}
  local all_ok, size = true, 0
  for i = 1, n do
    local w, limit = P[i], P[n + i]
    if consume and w == longest then
      -- what the removal left is exactly the longest window's count
      size = redis.call('ZCARD', log)
      count[i] = size
    else
      count[i] = redis.call('ZCOUNT', log, at.after[i], '+inf')
    end
    ok[i] = count[i] + cost <= limit
    if not ok[i] then all_ok = false end
  end

  local consumed = 0
  local newest = nil
  if consume and all_ok then
    consumed = cost
    log_add(log, seq, at, size, cost)
    redis.call('PEXPIRE', log, at.ttl)
    newest = now
  else
    local top = redis.call('ZRANGE', log, -1, -1, 'WITHSCORES')
    if top[2] ~= nil then newest = tonumber(top[2]) end
  end

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
      local e = redis.call('ZRANGEBYSCORE', log, at.after[i], '+inf', 'WITHSCORES', 'LIMIT', k - 1, 1)
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
local mode, P, R = mp_unpack(ARGV[2])
local n = #P / 2
-- the reply's pieces (see `returns`), joined once at the end
local parts, concat, char = {}, table.concat, string.char
-- head bytes by allowed (0/1): `bare` before no numbers, `full` before `width` numbers
local function heads(width)
  return {[0] = char(0), char(1)}, {[0] = char(2 * width), char(2 * width + 1)}
end

if mode == 'log' then
  local at = {now = string.format('%.0f', now), after = {}, longest = 0}
  for i = 1, n do
    at.after[i] = '(' .. string.format('%.0f', now - P[i])
    if P[i] > at.longest then at.longest = P[i] end
  end
  at.expired = string.format('%.0f', now - at.longest)
  at.ttl = string.format('%d', ceil(at.longest / 1000) + ttl_pad_ms)
  local _, full = heads(3 + 3 * n)
  for k = 1, #R / 3 do
    local ok, answers = log_decide(KEYS[2 * k - 1], KEYS[2 * k], P, n, R[3 * k - 2], R[3 * k - 1] == 1, now, at)
    parts[2 * k - 1] = full[ok and 1 or 0]
    parts[2 * k] = encode_state(answers)
  end
  return {now, concat(parts)}
end

-- Sliding window and token bucket. Every command called from Lua costs Redis about as much as
-- the decision's own maths, so: every key of the call is read by one MGET, the requests are
-- decided in order, and each key changed is written once, after its last request. A request whose
-- key an earlier request of the call (R: `prev`) already holds is decided against the state that
-- one left, exactly as if they had made calls one after another at this instant. Per-request
-- bookkeeping lives in arrays indexed by request (cheap in Lua; tables keyed by string are not).
-- States stay in their stored form (a string) and are read in place: every table made and every
-- bytecode run costs Redis more than the C that unpacks and packs them.
local decide, width = sw_decide, 3 * n
-- the TTL (µs) of a key whose numbers are now `v`, when a request moved its expiry
local ttl_of = function(v) return sw_expiry(v, P) - now end
if mode == 'tb' then
  decide, width = tb_decide, n
  ttl_of = function(v) return tb_ttl(v, now) end
end
local fmt, bytes, pack = format(width), 8 * width, struct.pack
local raw = redis.call('MGET', unpack(KEYS))
-- S: the state (as stored) after request k, false for none; dirty: its key changed in this call;
-- E: the key's new TTL (µs) if its expiry moved in this call; later: a later request has the same key
local S, dirty, E, later = {}, {}, {}, {}
local T = {}
local bare, full = heads(width)
local o = 0
for k = 1, #KEYS do
  local cost, consume, p = R[3 * k - 2], R[3 * k - 1] == 1, R[3 * k]
  local s
  if p > 0 then
    later[p] = true
    s, dirty[k], E[k] = S[p], dirty[p], E[p]
  else
    s = raw[k] -- MGET gives a string, or false for an absent key
    if s and #s ~= bytes then s = false end -- written for other limits: as if absent
  end
  local ok, move = decide(s, P, n, cost, now, T)
  if s then
    parts[o + 1] = full[ok and 1 or 0]
    parts[o + 2] = s
    o = o + 2
  else
    o = o + 1
    parts[o] = bare[ok and 1 or 0]
  end
  if ok and consume then
    if move or E[k] then E[k] = ttl_of(T) end
    s = pack(fmt, unpack(T))
    dirty[k] = true
  end
  S[k] = s
end
for k = 1, #KEYS do
  if dirty[k] and not later[k] then store_state(KEYS[k], S[k], E[k]) end
end
return {now, concat(parts)}
