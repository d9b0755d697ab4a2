-- floodwall: sliding window or token bucket for one request or a batch of requests (of any
-- identities), each decided and recorded atomically on Redis time. Twins: sliding_window and
-- token_bucket in core/src/algorithm.rs, which compute the answers from the state returned here.
-- Runs after lua/prelude.lua (sw_decide, tb_decide). Batching several callers into one call is
-- how a Redis script call is amortised (core/src/store/redis.rs); on a Cluster every key of one
-- call is in one slot, so a call there holds one request.
--
-- KEYS[k]   the state key of request k
-- ARGV[1]   now in microseconds, or "" to read Redis TIME (the only source in production)
-- ARGV[2]   "sw" sliding window, "tb" token bucket
-- ARGV[3]   MessagePack array of the limits (sliding window: windows µs then limits; token
--           bucket: emission intervals µs then bursts): core/src/scripts.rs limit_args
-- ARGV[4]   MessagePack array: cost of request k at 2k-1, 1 (consume) or 0 (peek) at 2k
-- returns   {now, then per request: allowed (1/0), m, the m numbers of state it read}

local now = now_us(ARGV[1])
local P = mp_unpack(ARGV[3])
local n = #P / 2
local R = mp_unpack(ARGV[4])
local decide = sw_decide
if ARGV[2] == 'tb' then decide = tb_decide end

local out = {now}
for k = 1, #KEYS do
  local ok, s = decide(KEYS[k], P, n, R[2 * k - 1], R[2 * k] == 1, now)
  out[#out + 1] = ok and 1 or 0
  out[#out + 1] = #s
  for i = 1, #s do out[#out + 1] = s[i] end
end
return out
