-- GCRA (the generic cell rate algorithm, as governor counts it) for one key, atomically.
-- KEYS[1]: the key. ARGV[1]: emission interval T in microseconds (period / limit, at least 1).
-- ARGV[2]: limit, the burst (calls allowed at once after a quiet period).
-- Stores the theoretical arrival time (TAT, microseconds on Redis's clock) with an expiry of the
-- time until the quota is whole again, so idle keys vanish.
-- Returns {allowed (0/1), remaining, retry_after_us, reset_after_us}.

-- Redis 3.2-4.x replicate the script, not its effects, unless told: TIME is not deterministic.
-- From 5 on effects replication is the default (7 deprecates the call, it still answers).
if redis.replicate_commands then
  redis.replicate_commands()
end

local key = KEYS[1]
local interval = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
-- `limit` calls at once: the first at TAT = now, the last at TAT = now + (limit - 1) * T.
local tolerance = (limit - 1) * interval

-- Redis's clock, not the replicas': replicas with skewed clocks still agree.
-- Microseconds since the epoch (~1.8e15) are exact in Lua's doubles (2^53 ~ 9e15).
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])

local tat = tonumber(redis.call('GET', key))
if tat == nil or tat < now then
  tat = now
end

if tat - now > tolerance then
  -- Refused, nothing stored: one call is allowed again once TAT - now == tolerance.
  return {0, 0, tat - now - tolerance, tat - now}
end

local new_tat = tat + interval
local reset_after = new_tat - now
-- Expire when the quota is whole again (TAT <= now): a missing key means a full burst.
redis.call('SET', key, string.format('%d', new_tat), 'PX', math.ceil(reset_after / 1000))
-- Further calls k = 1, 2... allowed now while new_tat + (k - 1) * T - now <= tolerance.
local remaining = math.floor((tolerance - reset_after) / interval) + 1
if remaining < 0 then
  remaining = 0
end
return {1, remaining, 0, reset_after}
