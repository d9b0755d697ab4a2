-- floodwall prelude, prepended to every script by core/src/scripts.rs: Redis time, the packed
-- state of one identity and the lease bookkeeping, so all scripts share one layout.
--
-- The scripts decide and record (atomically) and return the state they read; the answers shown
-- to callers (remaining, reset, retry, which limit) are computed from that state by the Rust twin
-- in core/src/algorithm.rs, off Redis's single thread. Lua keeps only the maths that decides.
--
-- State: all windows (or buckets) of one identity live in ONE string of packed numbers, a field
-- of its shard's hash, so a check of any number of limits costs one read and one write inside
-- Redis whatever the number of limits, and a batch of identities no more (docs/ARCHITECTURE.md).

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

-- Sliding window and token bucket keep each identity's state as a field of a hash shared by a
-- shard of identities (core/src/keys.rs): one HMGET and one HSET serve a whole batch, where a key
-- per identity costs a write command per admission. A shard has three hashes; in epoch e (Redis
-- time / E, where E, keys::epoch_us, is at least how long a state stays relevant after its last
-- write) states are written to hash e mod 3, and those not found there are read from e-1's. The
-- first write of an epoch gives its hash an expiry and UNLINKs hash e+1 mod 3 (epoch e-2's, of no
-- use now): freed in the background, where expiring a big hash would free it on Redis's thread.
-- Field "#" (never an identity tag) marks a hash with 2e + 1, or 2e if e-1's hash was empty when
-- it was made (then misses need no second read); a hash of another epoch (Redis time gone back,
-- an expiry not yet run) reads as empty.
local MARK = '#'

-- The shard whose three hashes are KEYS[at .. at+2], at `now`, for epochs of `E` µs.
local function shard_open(at, E, now)
  local e = floor(now / E)
  return {cur = KEYS[at + e % 3], prev = KEYS[at + (e + 2) % 3], stale = KEYS[at + (e + 1) % 3], e = e, E = E}
end

-- The states stored for `fields` (strings, or false when absent) in shard `sh`.
local function shard_read(sh, fields)
  local got = redis.pcall('HMGET', sh.cur, MARK, unpack(fields))
  -- a key of another type there (not ours, or an old layout): replaced by the first write
  if got.err then got = {true} end
  local mark = tonumber(got[1])
  if mark ~= nil and floor(mark / 2) == sh.e then
    sh.live, sh.had_prev = true, mark % 2 == 1
  else
    -- no hash for this epoch yet (or one of another epoch, which the first write replaces)
    sh.live, sh.wipe = false, got[1] ~= false
  end
  local out, missed, names = {}, {}, {}
  for j = 1, #fields do
    local v = sh.live and got[j + 1]
    out[j] = v or false
    if not v then
      missed[#missed + 1] = j
      names[#names + 1] = fields[j]
    end
  end
  if #missed > 0 and sh.had_prev ~= false then
    local old = redis.pcall('HMGET', sh.prev, MARK, unpack(names))
    local pm = not old.err and tonumber(old[1])
    local valid = (pm and floor(pm / 2) == sh.e - 1) or false
    if not sh.live then sh.had_prev = valid end
    if valid then
      for i = 1, #missed do out[missed[i]] = old[i + 1] end
    end
  end
  return out
end

-- Whether Redis took a write called by redis.pcall (`r`, its reply): false when it refused it for
-- maxmemory (noeviction: "OOM ..."); any other error is raised as redis.call would.
local function written(r)
  if type(r) == 'table' and r.err then
    if string.sub(r.err, 1, 3) == 'OOM' then return false end
    error(r)
  end
  return true
end

-- Store `fv` (field, state, field, state, ...) in shard `sh`, read by shard_read first. Returns
-- false, having stored nothing, when Redis is at maxmemory and refuses writes (noeviction).
-- Redis 7.0 checks maxmemory only at a script's first write command (it cannot stop a script
-- midway), so nothing may be written before the first HSET, not even an UNLINK: that would let
-- every later write past maxmemory. Once refused, hash e-2 (of no use now) is still UNLINKed:
-- that is how memory comes back when the epoch ends.
local function shard_write(sh, fv, now)
  if #fv == 0 then return true end
  if sh.live then
    return written(redis.pcall('HSET', sh.cur, unpack(fv)))
  end
  -- formatted as integers: a number argument would go through a float printf (%.14g)
  local mark = format_int(2 * sh.e + (sh.had_prev == false and 0 or 1))
  if sh.wipe then
    -- another epoch's hash (or a key of another type) sits here: ask Redis for a write before
    -- UNLINKing it. Only OOM means no: any other error (WRONGTYPE) came after Redis's check.
    local probe = redis.pcall('HSET', sh.cur, MARK, mark)
    if type(probe) == 'table' and probe.err and string.sub(probe.err, 1, 3) == 'OOM' then
      redis.call('UNLINK', sh.stale)
      return false
    end
    redis.call('UNLINK', sh.cur)
  end
  if not written(redis.pcall('HSET', sh.cur, MARK, mark, unpack(fv))) then
    redis.call('UNLINK', sh.stale)
    return false
  end
  -- read through epoch e+1; UNLINKed by the first write of e+2, or expired at its end
  redis.call('PEXPIRE', sh.cur, format_int(ceil(((sh.e + 3) * sh.E - now) / 1000) + ttl_pad_ms))
  redis.call('UNLINK', sh.stale)
  sh.live, sh.wipe, sh.had_prev = true, false, sh.had_prev ~= false
  return true
end

-- Nothing to write in shard `sh` after Redis refused a write: only free hash e-2 if this epoch's
-- hash is not made yet (its first write UNLINKs it otherwise).
local function shard_free(sh)
  if not sh.live then redis.call('UNLINK', sh.stale) end
end
