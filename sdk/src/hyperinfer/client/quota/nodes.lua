-- HyperInfer quota: heartbeat of one data-plane node; returns the live node count.
--
-- Each node scores itself with the time its liveness ends (server time, ms), so
-- nodes with different heartbeat intervals agree on who is alive.
--
-- KEYS: 1 the nodes sorted set (score: liveness deadline, ms)
-- ARGV: 1 node id, 2 this node's liveness window (ms), 3 1 to leave instead of beating

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[3] == '1' then
  redis.call('ZREM', KEYS[1], ARGV[1])
else
  redis.call('ZADD', KEYS[1], string.format('%d', now + tonumber(ARGV[2])), ARGV[1])
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. string.format('%d', now))
return redis.call('ZCARD', KEYS[1])
