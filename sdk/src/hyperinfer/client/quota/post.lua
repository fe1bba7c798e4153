-- HyperInfer quota: post settled spend from PostgreSQL and release the holds of the
-- requests it covers, for one team, atomically (the quota service, once per batch).
--
-- Each budget hash takes spent/seq only when seq is newer than the one it holds,
-- so concurrent service replicas and replays never move spent backwards. Each
-- request's reservation record releases its hold (if still held) and is deleted.
--
-- KEYS: 1 team pending index, 2..m+1 budget hashes, m+2.. reservation records
-- ARGV: 1 m, then (spent, seq, expire-at ms) per budget hash, then one request id
--       per reservation record
-- Reply: number of holds released

local m = tonumber(ARGV[1])
for i = 1, m do
  local key = KEYS[1 + i]
  local at = 2 + 3 * (i - 1)
  local current = tonumber(redis.call('HGET', key, 'seq') or '-1')
  if tonumber(ARGV[at + 1]) > current then
    redis.call('HSET', key, 'spent', ARGV[at], 'seq', ARGV[at + 1])
    redis.call('PEXPIREAT', key, ARGV[at + 2])
  end
end
local released = 0
for j = m + 2, #KEYS do
  local id = ARGV[2 + 3 * m + (j - m - 2)]
  local f = redis.call('HMGET', KEYS[j], 'st', 'c', 'kb', 'tb')
  if f[1] == 'p' or f[1] == 's' then
    local c = string.format('%d', -tonumber(f[2]))
    for _, key in ipairs({f[3], f[4]}) do
      if key and key ~= '' and redis.call('EXISTS', key) == 1 then
        redis.call('HINCRBY', key, 'held', c)
      end
    end
    released = released + 1
  end
  if f[1] then redis.call('DEL', KEYS[j]) end
  redis.call('ZREM', KEYS[1], id)
end
return released
