-- The committed-offset floor, then the journal clean-up it covers, as one atomic step
-- (consumer/state/store.py): a refused ZADD (out of memory under noeviction, wrong type) raises
-- before any HDEL runs, so a journal entry is never deleted unless the floor covers its offset.
--
-- KEYS[1]          the floor: zset "<topic>:<partition>@<topic id>" -> committed offset
-- KEYS[2..]        journal hashes to clean
-- ARGV[1]          number of floor entries n, then n pairs: offset, member
-- then per journal key: number of fields, the fields
local n = tonumber(ARGV[1])
local i = 2
if n > 0 then
  -- GT: the floor only moves forward, whatever order late notes arrive in.
  redis.call('ZADD', KEYS[1], 'GT', unpack(ARGV, i, i + 2 * n - 1))
  i = i + 2 * n
end
for k = 2, #KEYS do
  local count = tonumber(ARGV[i])
  i = i + 1
  redis.call('HDEL', KEYS[k], unpack(ARGV, i, i + count - 1))
  i = i + count
end
return 1
