-- HyperInfer quota: settle one reservation with what the request really used.
--
-- Pending ('p'): move each TPM bucket by (actual - reserved) tokens and each budget
-- hold by (actual - reserved) cost. Swept ('x', the hold was released because the
-- reservation outlived its ttl): hold the actual cost again. The record then waits
-- ('s') in the pending index until the quota service posts the usage event (which
-- moves the held cost into spent) or the post deadline passes. Anything else
-- (unknown, already settled): nothing changes.
--
-- KEYS: 1 reservation, 2 team pending index
-- ARGV: 1 request id, 2 actual tokens, 3 actual cost micros, 4 post deadline (us),
--       5 (tests only) now in us
-- Reply: {settled (0/1), refunded tokens, refunded cost micros}

local f = redis.call('HMGET', KEYS[1], 'st', 'tk', 'c', 'kt', 'kn', 'kp', 'tt', 'tn', 'tp',
  'kb', 'tb')
local state = f[1]
if state ~= 'p' and state ~= 'x' then return {0, 0, 0} end

local now
if ARGV[5] and ARGV[5] ~= '' then
  now = tonumber(ARGV[5])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end

local MAX_LEVEL = 4000000000000000

local function divmod(a, b)
  local q = math.floor(a / b)
  local m = a - q * b
  if m < 0 then q = q - 1; m = m + b elseif m >= b then q = q + 1; m = m - b end
  return q, m
end

local function fmt(x) return string.format('%d', x) end

local function move_tat(key, rate, per, d)
  if not key or key == '' or d == 0 then return end
  local N, P = tonumber(rate), tonumber(per)
  if N <= 0 then return end
  local v = redis.call('GET', key)
  if not v and d < 0 then return end
  local a, r = now, 0
  if v then
    local s = string.find(v, ':', 1, true)
    a, r = tonumber(string.sub(v, 1, s - 1)), tonumber(string.sub(v, s + 1))
    if a < now then a, r = now, 0 end
  end
  local level = (a - now) * N + r + d * P
  if level < 0 then level = 0 end
  if level > MAX_LEVEL then level = MAX_LEVEL end
  local q, m = divmod(level, N)
  local ms = math.floor((q + 999) / 1000) + 1000
  redis.call('SET', key, fmt(now + q) .. ':' .. fmt(m), 'PX', fmt(ms))
end

local function hold(key, d)
  if key and key ~= '' and d ~= 0 and redis.call('EXISTS', key) == 1 then
    redis.call('HINCRBY', key, 'held', fmt(d))
  end
end

local tokens, cost = tonumber(ARGV[2]), tonumber(ARGV[3])
local dtok, dcost = 0, cost
if state == 'p' then
  dtok = tokens - tonumber(f[2])
  dcost = cost - tonumber(f[3])
  move_tat(f[4], f[5], f[6], dtok)
  move_tat(f[7], f[8], f[9], dtok)
end
hold(f[10], dcost)
hold(f[11], dcost)
redis.call('HSET', KEYS[1], 'st', 's', 'c', fmt(cost))
redis.call('ZADD', KEYS[2], fmt(now + tonumber(ARGV[4])), ARGV[1])
if state == 'x' then return {1, 0, 0} end
return {1, -dtok, -dcost}
