-- HyperInfer quota: load a team's budget spend from PostgreSQL and mark the team's
-- budgets as loaded in this Redis (the quota service: at start, after a Redis
-- restart, on config changes, periodically). spent/seq move only forward.
--
-- KEYS: 1 team ready marker, 2.. budget hashes
-- ARGV: 1 epoch, then (spent, seq, expire-at ms) per budget hash
-- Reply: number of budget hashes changed

local changed = 0
for i = 2, #KEYS do
  local at = 2 + 3 * (i - 2)
  local current = tonumber(redis.call('HGET', KEYS[i], 'seq') or '-1')
  if tonumber(ARGV[at + 1]) > current then
    redis.call('HSET', KEYS[i], 'spent', ARGV[at], 'seq', ARGV[at + 1])
    redis.call('PEXPIREAT', KEYS[i], ARGV[at + 2])
    changed = changed + 1
  end
end
redis.call('SET', KEYS[1], ARGV[1])
return changed
