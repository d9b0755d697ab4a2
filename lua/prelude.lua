-- floodwall prelude, prepended to every script by core/src/scripts.rs: Redis time, the packed
-- state of one identity and the lease bookkeeping, so all scripts share one layout.
--
-- The scripts decide and record (atomically) and return the state they read; the answers shown
-- to callers (remaining, reset, retry, which limit) are computed from that state by the Rust twin
-- in core/src/algorithm.rs, off Redis's single thread. Lua keeps only the maths that decides.
--
-- State: all windows (or buckets) of one identity live in ONE string, a MessagePack array of
-- numbers, so a check of any number of limits costs one GET and one SET inside Redis whatever the
-- number of limits (docs/ARCHITECTURE.md).

-- Globals are looked up by name on every use; the hot ones are bound once here.
local floor, ceil, mp_pack, mp_unpack = math.floor, math.ceil, cmsgpack.pack, cmsgpack.unpack

-- TTLs run on Redis's real clock. Under a test clock (tests only) time is moved by hand, far
-- faster or slower than real time, so key lifetimes get this much slack lest a key vanish while
-- the manual timeline still needs it. State past its time reads as if absent anyway (windows roll,
-- a TAT in the past counts as now, the log drops old entries), so the slack changes no answer.
local ttl_pad_ms = 0

-- now in µs: `arg` when a test clock sets it, else Redis TIME (the only source in production)
local function now_us(arg)
  if arg ~= '' then
    ttl_pad_ms = 60000
    return tonumber(arg)
  end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

-- The state of one identity as stored: its numbers as little-endian doubles (exact for integers
-- below 2^53; µs since 1970 are below 2^51), packed and unpacked by the `struct` library in C,
-- with no table walked and one string made, which costs Redis a fraction of MessagePack here and
-- far less than decimal text. `format(width)`: the struct format of `width` numbers.
local formats = {}
local function format(width)
  local f = formats[width]
  if f == nil then
    f = '<' .. string.rep('d', width)
    formats[width] = f
  end
  return f
end

-- An integral number as a command argument, without the float formatting Redis applies to Lua numbers.
local format_int = function(n) return string.format('%d', n) end

-- The numbers `v` as stored (the format above).
local function encode_state(v)
  return struct.pack(format(#v), unpack(v))
end

-- Store `bytes` (a state as encode_state makes it) at `key` with a TTL of `ttl_us` (rounded up to
-- ms), or keeping the TTL the key has when `ttl_us` is nil: then `key` must hold a state of the
-- same width, which SETRANGE overwrites in place. That costs Redis markedly less than a SET with
-- PX (no TTL to format, parse, drop and add again; an integer reply, not a status table), hence
-- nil wherever the expiry is unchanged.
local function store_state(key, bytes, ttl_us)
  if ttl_us == nil then
    -- offset '0' as a string: Redis formats a Lua number argument with %.14g, a float printf
    redis.call('SETRANGE', key, '0', bytes)
  else
    local ms = ceil(ttl_us / 1000)
    if ms < 1 then ms = 1 end
    -- formatted as an integer: a number argument would go through a float printf (%.14g)
    redis.call('SET', key, bytes, 'PX', format_int(ms + ttl_pad_ms))
  end
end

-- Store the numbers `v` at `key` (store_state).
local function write_state(key, v, ttl_us)
  store_state(key, encode_state(v), ttl_us)
end

-- Sliding window: move the stored (window number, previous, current) to the window holding `now`
-- (twin: SwState::roll). Returns window number, previous count, current count, µs elapsed in it.
local function sw_roll(si, sp, sc, now, w)
  local cur = floor(now / w)
  sp, sc = sp or 0, sc or 0
  if si == nil then
    sp, sc = 0, 0
  elseif cur == si + 1 then
    sp, sc = sc, 0
  elseif cur > si + 1 then
    sp, sc = 0, 0
  elseif cur < si then
    -- Redis time went backwards (failover to a node with an earlier clock): keep the newer state
    cur = si
  end
  local el = now - cur * w
  if el < 0 then el = 0 end
  return cur, sp, sc, el
end

-- Sliding window: when a key holding the windows `v` ({i, p, c} per window; W: window lengths µs)
-- may expire: once the last window's next one ends (after that no count in it matters). It
-- depends on the window numbers only, so it moves when a window rolls, not on every request.
local function sw_expiry(v, W)
  local expiry = 0
  for i = 1, #v / 3 do
    local e = (v[3 * i - 2] + 2) * W[i]
    if e > expiry then expiry = e end
  end
  return expiry
end

-- Sliding window: store `v` at `key`. `keep`: the key holds a state of the same shape whose
-- expiry this one shares (no window number moved), so it keeps its TTL, which the write that last
-- moved it set to this same expiry; otherwise the TTL is set from `v`.
local function sw_write(key, v, W, now, keep)
  if keep then
    write_state(key, v, nil)
  else
    write_state(key, v, sw_expiry(v, W) - now)
  end
end

-- Token bucket: how long a key holding the theoretical arrival times `tat` lives: until the
-- latest one passes.
local function tb_ttl(tat, now)
  local last = now
  for i = 1, #tat do
    if tat[i] > last then last = tat[i] end
  end
  return last - now
end

-- Token bucket: store every theoretical arrival time.
local function tb_write(key, tat, now)
  write_state(key, tat, tb_ttl(tat, now))
end
