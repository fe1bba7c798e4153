-- HyperInfer quota: release the budget hold of a reservation whose deadline passed.
--
-- Pending ('p', never settled: its node crashed or lost Redis) becomes 'x'; settled
-- but never posted ('s', the usage event did not reach the quota service in time)
-- becomes 'r'. The record itself stays until its own ttl so a late settle still
-- finds it. Run by the quota service for members of the pending index whose score
-- (deadline, us) is in the past.
--
-- KEYS: 1 reservation, 2 team pending index
-- ARGV: 1 request id
-- Reply: the state found ('' when the record is gone)

local f = redis.call('HMGET', KEYS[1], 'st', 'c', 'kb', 'tb')
local state = f[1]
redis.call('ZREM', KEYS[2], ARGV[1])
if not state then return '' end
if state == 'p' or state == 's' then
  local c = string.format('%d', -tonumber(f[2]))
  for _, key in ipairs({f[3], f[4]}) do
    if key and key ~= '' and redis.call('EXISTS', key) == 1 then
      redis.call('HINCRBY', key, 'held', c)
    end
  end
  redis.call('HSET', KEYS[1], 'st', state == 'p' and 'x' or 'r')
end
return state
