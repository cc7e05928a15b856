-- Atomically replace customers' states if nobody changed them since we read them (compare-and-set),
-- and in the same step record journal entries, move deadline-index members and adjust the
-- pending/held counters. Per customer, either all of it happens or none, so the index and the
-- counters never drift from the states they describe. One call carries a whole batch: one command
-- per batch instead of one per customer is what keeps the Python client's overhead small.
--
-- KEYS: 1 deadline index (zset), 2 pending counter, 3 held counter,
--       then per customer: state key, journal key; then journal keys to clean (committed entries).
-- ARGV: 1 n customers, 2 n journal keys to clean, then per customer:
--         expected ("-" = key must not exist, else "=" .. old value), new value ("" = delete),
--         state expire-at (ms), journal expire-at (ms), pending delta, held delta,
--         n journal pairs, field, value ...,  n index removals, member ...,
--         n index additions, score, member ...
--       then per journal key to clean: n fields, field ...
-- Returns one integer per customer: 1 applied, 0 conflict (the caller re-reads and re-decides).
local customers = tonumber(ARGV[1])
local cleanups = tonumber(ARGV[2])
local results = {}
local a = 3

for c = 1, customers do
  local state_key, journal_key = KEYS[2 + 2 * c], KEYS[3 + 2 * c]
  local current = redis.call('GET', state_key)
  local expected = ARGV[a]
  local ok = true
  if expected == '-' then
    ok = not current
  else
    ok = current and ('=' .. current) == expected
  end
  local n_journal = tonumber(ARGV[a + 6])
  local j = a + 7 + 2 * n_journal
  local n_remove = tonumber(ARGV[j])
  local k = j + 1 + n_remove
  local n_add = tonumber(ARGV[k])
  local next_a = k + 1 + 2 * n_add
  if ok then
    if ARGV[a + 1] == '' then
      redis.call('DEL', state_key)
    else
      redis.call('SET', state_key, ARGV[a + 1], 'PXAT', ARGV[a + 2])
    end
    for p = 1, n_journal do
      redis.call('HSET', journal_key, ARGV[a + 5 + 2 * p], ARGV[a + 6 + 2 * p])
    end
    if n_journal > 0 then redis.call('PEXPIREAT', journal_key, ARGV[a + 3]) end
    for r = 1, n_remove do redis.call('ZREM', KEYS[1], ARGV[j + r]) end
    for d = 1, n_add do redis.call('ZADD', KEYS[1], ARGV[k - 1 + 2 * d], ARGV[k + 2 * d]) end
    if ARGV[a + 4] ~= '0' then redis.call('INCRBY', KEYS[2], ARGV[a + 4]) end
    if ARGV[a + 5] ~= '0' then redis.call('INCRBY', KEYS[3], ARGV[a + 5]) end
    results[c] = 1
  else
    results[c] = 0
  end
  a = next_a
end

for q = 1, cleanups do
  local n = tonumber(ARGV[a])
  redis.call('HDEL', KEYS[3 + 2 * customers + q], unpack(ARGV, a + 1, a + n))
  a = a + 1 + n
end
return results
