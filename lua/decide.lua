-- floodwall: one request or a batch of requests (of any identities) of one limiter, each decided
-- and recorded atomically on Redis time, for every algorithm. Twins: core/src/algorithm.rs. Runs
-- after lua/prelude.lua. Batching several callers into one call is how a script call's fixed cost
-- (EVALSHA, TIME, Lua setup) is shared (core/src/store/batch.rs); on a Cluster every key of one
-- call is in one slot, so a call there holds one request.
--
-- KEYS      sliding window, token bucket: the three epoch hashes of each shard the requests are
--           in (lua/prelude.lua shard_open); sliding log, per request: its log key and the key of
--           its entry counter, made only on a clash of entry names (log_add)
-- ARGV[1]   now in microseconds, or "" to read Redis TIME (the only source in production)
-- ARGV[2]   a MessagePack stream of five values (one argument and one unpack: every argument
--           costs Redis a string and every unpack a C call, per call):
--           - "sw" sliding window, "tb" token bucket, "log" sliding log
--           - an array of the limits (windows µs then limits; token bucket: emission intervals µs
--             then bursts): core/src/scripts.rs limit_args
--           - the epoch of the hashes in µs (core/src/keys.rs epoch_us; 0 for the log)
--           - an array of four numbers per request k: its cost at 4k-3, 1 (consume) or 0 (peek)
--             at 4k-2, at 4k-1 the number of the last earlier request of this call of the same
--             identity (0: none), and at 4k its shard (the hashes KEYS[3g-2 .. 3g]; log: unused)
--           - an array of the requests' hash fields, their identity tags (empty for the log)
-- returns   {now, one string}: per request in order, a head byte 2c + a (a: allowed 1/0, c: the
--           count of numbers that follow it), then c numbers packed as lua/prelude.lua stores a
--           state (little-endian doubles): the state the request read as stored (none for a new
--           identity: sliding window, token bucket; the Rust twin computes the answers from it),
--           or the answers themselves (sliding log, whose state is a log: allowed, limited_by,
--           now, then remaining, reset_after, retry_after per window). One string, not two
--           values per request: Redis converts a script's reply value by value, and the client
--           parses it so; a string is one memcpy on each side. A third value, 1, when Redis was
--           at maxmemory (noeviction) and nothing was recorded: the decisions were made on the
--           state read, and the caller's fallback takes over those that were allowed.

-- The numbers of a stored state, read in place (struct.unpack from a position: no table made).
local unpack_numbers = struct.unpack

-- Sliding window: decide one request of `cost` against every window (limits P: n windows in µs,
-- then n limits) from the state `s` as stored (false: a new identity). Fills T with the numbers
-- after the request; returns whether every window allows it.
local function sw_decide(s, P, n, cost, now, T)
  local ok = true
  for i = 1, n do
    local w, limit = P[i], P[n + i]
    local si, sp, sc
    if s then si, sp, sc = unpack_numbers('<ddd', s, 24 * i - 23) end
    -- sw_roll, inline: a Lua function call costs Redis about as much as the roll itself
    local cur, prev, curr = floor(now / w), 0, 0
    if si == nil then
      -- a new identity: nothing counted
    elseif cur == si then
      prev, curr = sp, sc
    elseif cur < si then
      -- Redis time went backwards (failover to a node with an earlier clock): keep the newer state
      cur, prev, curr = si, sp, sc
    elseif cur == si + 1 then
      prev = sc
    end
    local el = now - cur * w
    if el < 0 then el = 0 end
    if not (prev * ((w - el) / w) + curr + cost <= limit) then ok = false end
    T[3 * i - 2], T[3 * i - 1], T[3 * i] = cur, prev, curr + cost
  end
  return ok
end

-- Token bucket (GCRA): decide one request of `cost` against every limit (P: n emission intervals
-- in µs, then n bursts) from the state `s` as stored (false: a new identity). Fills T with the
-- numbers after the request and returns whether every limit allows it.
local function tb_decide(s, P, n, cost, now, T)
  local ok = true
  for i = 1, n do
    local t, burst = P[i], P[n + i]
    local stored = s and unpack_numbers('<d', s, 8 * i - 7) or now
    if stored < now then stored = now end
    T[i] = stored + t * cost
    if not (now >= T[i] - t * burst) then ok = false end
  end
  return ok
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
local mode, P, E, R, F = mp_unpack(ARGV[2])
local n = #P / 2
-- the reply's pieces (see `returns`), joined once at the end
local parts, concat, char = {}, table.concat, string.char
-- head bytes by allowed (0/1): `bare` before no numbers, `full` before `width` numbers
local function heads(width)
  return {[0] = char(0), char(1)}, {[0] = char(2 * width), char(2 * width + 1)}
end

if mode == 'log' then
  -- Redis 7.0 checks maxmemory only at a script's first write, and the log's first write is a
  -- trim, which would let its ZADDs past maxmemory: so first ask for a write that changes nothing
  -- (ZADD XX of a member never stored). Refused: every request is decided without writing, and
  -- the reply says nothing was recorded.
  local recorded = true
  for k = 1, #R / 4 do
    if R[4 * k - 2] == 1 then
      recorded = written(redis.pcall('ZADD', KEYS[2 * k - 1], 'XX', '0', '#'))
      break
    end
  end
  local at = {now = string.format('%.0f', now), after = {}, longest = 0}
  for i = 1, n do
    at.after[i] = '(' .. string.format('%.0f', now - P[i])
    if P[i] > at.longest then at.longest = P[i] end
  end
  at.expired = string.format('%.0f', now - at.longest)
  at.ttl = string.format('%d', ceil(at.longest / 1000) + ttl_pad_ms)
  local _, full = heads(3 + 3 * n)
  for k = 1, #R / 4 do
    local consume = recorded and R[4 * k - 2] == 1
    local ok, answers = log_decide(KEYS[2 * k - 1], KEYS[2 * k], P, n, R[4 * k - 3], consume, now, at)
    parts[2 * k - 1] = full[ok and 1 or 0]
    parts[2 * k] = encode_state(answers)
  end
  if not recorded then return {now, concat(parts), 1} end
  return {now, concat(parts)}
end

-- Sliding window and token bucket. Every command called from Lua costs Redis about as much as
-- the decision's own maths, so: each shard's fields of the call are read by one HMGET, the
-- requests are decided in order, and each state changed is written once, after its identity's
-- last request, by one HSET per shard. A request whose identity an earlier request of the call
-- (R: `prev`) already decided is decided against the state that one left, exactly as if they had
-- made calls one after another at this instant. Per-request bookkeeping lives in arrays indexed
-- by request (cheap in Lua; tables keyed by string are not). States stay in their stored form (a
-- string) and are read in place: every table made and every bytecode run costs Redis more than
-- the C that unpacks and packs them.
local decide, width = sw_decide, 3 * n
if mode == 'tb' then decide, width = tb_decide, n end
local fmt, bytes, pack = format(width), 8 * width, struct.pack
local m = #F
-- per shard g: its hashes, the fields it reads (names[g]), and where request k's is (at[k])
local shards, names, at = {}, {}, {}
for g = 1, #KEYS / 3 do
  shards[g] = shard_open(3 * g - 2, E, now)
  names[g] = {}
end
for k = 1, m do
  if R[4 * k - 1] == 0 then
    local list = names[R[4 * k]]
    list[#list + 1] = F[k]
    at[k] = #list
  end
end
local raw = {}
for g = 1, #shards do
  if #names[g] > 0 then raw[g] = shard_read(shards[g], names[g]) end
end
-- S: the state (as stored) after request k, false for none; dirty: its identity's state changed
-- in this call; later: a later request has the same identity
local S, dirty, later = {}, {}, {}
local T = {}
local bare, full = heads(width)
local o = 0
for k = 1, m do
  local cost, consume, p = R[4 * k - 3], R[4 * k - 2] == 1, R[4 * k - 1]
  local s
  if p > 0 then
    later[p] = true
    s, dirty[k] = S[p], dirty[p]
  else
    s = raw[R[4 * k]][at[k]]
    if s and #s ~= bytes then s = false end -- another shape: as if absent
  end
  local ok = decide(s, P, n, cost, now, T)
  if s then
    parts[o + 1] = full[ok and 1 or 0]
    parts[o + 2] = s
    o = o + 2
  else
    o = o + 1
    parts[o] = bare[ok and 1 or 0]
  end
  if ok and consume then
    s = pack(fmt, unpack(T))
    dirty[k] = true
  end
  S[k] = s
end
local writes = {}
for g = 1, #shards do writes[g] = {} end
for k = 1, m do
  if dirty[k] and not later[k] then
    local w = writes[R[4 * k]]
    w[#w + 1] = F[k]
    w[#w + 1] = S[k]
  end
end
-- At maxmemory under noeviction Redis refuses the first write (prelude.lua shard_write), and so
-- every write of the call: nothing is recorded, and the reply says so (a third value) so that the
-- caller hands the requests it allowed to its local fallback, seeded with the states read here.
local recorded = true
for g = 1, #shards do
  if recorded then
    recorded = shard_write(shards[g], writes[g], now)
  else
    shard_free(shards[g])
  end
end
if not recorded then return {now, concat(parts), 1} end
return {now, concat(parts)}
