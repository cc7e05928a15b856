-- Take input partitions for one instance, at assignment (consumer/state/redis_store.py): each gets a
-- fencing token of its own, the time of this Redis in microseconds, so that no token is ever taken
-- twice, even after the owners hash was lost; apply.lua refuses a write that carries another one.
--
-- KEYS[1] the owners hash ("<topic>:<partition>@<topic id>" -> token)
-- ARGV    the partitions' members
-- Returns the token.
local now = redis.call('TIME')
local token = string.format('%s%06d', now[1], now[2])
for i = 1, #ARGV do
  redis.call('HSET', KEYS[1], ARGV[i], token)
end
return token
