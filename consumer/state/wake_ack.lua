-- Remove wake entries the expiry sweeper has handled (consumer/expiry.py). Entries leave a list
-- only from its head, and only if the head is still exactly what the sweeper read: when two
-- sweepers read the same head, the first to finish removes it and the other's ack is a no-op,
-- so neither removes entries it never read. A list left empty takes its second out of the wake
-- zset in the same step (the write script adds both together, so they never disagree).
--
-- KEYS[1] wake zset, KEYS[2] the old deadline index, KEYS[3..] the wake lists
-- ARGV[1] n old-index members, the members; then per wake list: second, count, the count cids
local n = tonumber(ARGV[1])
if n > 0 then
  redis.call('ZREM', KEYS[2], unpack(ARGV, 2, 1 + n))
end
local i = 2 + n
for k = 3, #KEYS do
  local second, count = ARGV[i], tonumber(ARGV[i + 1])
  local head = redis.call('LRANGE', KEYS[k], 0, count - 1)
  local same = #head == count
  for j = 1, count do
    if not same then break end
    same = head[j] == ARGV[i + 1 + j]
  end
  if same then
    redis.call('LTRIM', KEYS[k], count, -1)
    if redis.call('EXISTS', KEYS[k]) == 0 then redis.call('ZREM', KEYS[1], second) end
  end
  i = i + 2 + count
end
return 1
