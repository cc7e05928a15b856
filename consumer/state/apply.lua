-- Atomically replace one customer's state if nobody changed it since we read it (compare-and-set),
-- and in the same step record the journal entries, move its deadline-index members and adjust the
-- pending/held counters. Either all of it happens or none, so the index and counters never drift
-- from the state they describe.
--
-- KEYS: 1 state key, 2 journal key, 3 deadline index (zset), 4 pending counter, 5 held counter
-- ARGV: 1 expected ("-" = key must not exist, else "=" .. old value)
--       2 new value ("" = delete the key)      3 state key expire-at (ms)
--       4 journal expire-at (ms)               5 pending delta     6 held delta
--       7 n journal pairs, then field, value ...
--       then n index removals, then members ...
--       then n index additions, then score, member ...
-- Returns 1 when applied, 0 on conflict (caller re-reads and re-decides).
local current = redis.call('GET', KEYS[1])
local expected = ARGV[1]
if expected == '-' then
  if current then return 0 end
elseif (not current) or ('=' .. current) ~= expected then
  return 0
end

if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[2], 'PXAT', ARGV[3])
end

local i = 7
local n = tonumber(ARGV[i])
for j = 1, n do
  redis.call('HSET', KEYS[2], ARGV[i + 2 * j - 1], ARGV[i + 2 * j])
end
if n > 0 then redis.call('PEXPIREAT', KEYS[2], ARGV[4]) end
i = i + 2 * n + 1

n = tonumber(ARGV[i])
for j = 1, n do redis.call('ZREM', KEYS[3], ARGV[i + j]) end
i = i + n + 1

n = tonumber(ARGV[i])
for j = 1, n do redis.call('ZADD', KEYS[3], ARGV[i + 2 * j - 1], ARGV[i + 2 * j]) end

if ARGV[5] ~= '0' then redis.call('INCRBY', KEYS[4], ARGV[5]) end
if ARGV[6] ~= '0' then redis.call('INCRBY', KEYS[5], ARGV[6]) end
return 1
