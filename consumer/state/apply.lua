-- Atomically replace customers' states if nobody changed them since we read them (compare-and-set),
-- and in the same step journal the decisions of the customers that applied, move their
-- deadline-index members and adjust the pending/held counters. A customer's state, journal
-- entries, index members and counter deltas are applied together or not at all, so the index and
-- the counters never drift from the states, and a replay finds the decisions behind every state.
--
-- One call carries a whole batch, and the work shared by its customers is done once: one HSET per
-- input partition, one ZREM, one ZADD, one INCRBY per counter (per-customer commands cost most of
-- the time Redis spent on a batch; docs/performance.md).
--
-- KEYS: 1 deadline index (zset), 2 pending counter, 3 held counter, 4 .. 3+P journal hash of each
--       input partition, then the state key of each customer.
-- ARGV: 1 n customers, 2 P, 3 journal expire-at (ms), 4 .. 3+P the journal field to write in each
--       partition's hash; then per customer:
--         expected value ("" = the key must not exist), new value ("" = delete), state expire-at
--         (ms), pending delta, held delta, n journal fragments, (partition number, fragment) ...,
--         n index removals, member ..., n index additions, (score, member) ...
-- Returns one integer per customer: 1 applied, 0 conflict (the caller re-reads and re-decides).
local customers, partitions = tonumber(ARGV[1]), tonumber(ARGV[2])
local fragments, removals, additions = {}, {}, {}
for p = 1, partitions do fragments[p] = {} end
local pending, held = 0, 0
local results = {}
local a = 4 + partitions

for c = 1, customers do
  local key = KEYS[3 + partitions + c]
  local current = redis.call('GET', key) or ''
  local n_journal = tonumber(ARGV[a + 5])
  local j = a + 6 + 2 * n_journal
  local n_remove = tonumber(ARGV[j])
  local k = j + 1 + n_remove
  local n_add = tonumber(ARGV[k])
  if current == ARGV[a] then
    if ARGV[a + 1] == '' then
      redis.call('DEL', key)
    else
      redis.call('SET', key, ARGV[a + 1], 'PXAT', ARGV[a + 2])
    end
    pending = pending + tonumber(ARGV[a + 3])
    held = held + tonumber(ARGV[a + 4])
    for f = 1, n_journal do
      local parts = fragments[tonumber(ARGV[a + 4 + 2 * f])]
      parts[#parts + 1] = ARGV[a + 5 + 2 * f]
    end
    for r = 1, n_remove do removals[#removals + 1] = ARGV[j + r] end
    for d = 1, 2 * n_add do additions[#additions + 1] = ARGV[k + d] end
    results[c] = 1
  else
    results[c] = 0
  end
  a = k + 1 + 2 * n_add
end

for p = 1, partitions do
  if #fragments[p] > 0 then
    redis.call('HSET', KEYS[3 + p], ARGV[3 + p], table.concat(fragments[p]))
    redis.call('PEXPIREAT', KEYS[3 + p], ARGV[3])
  end
end
-- Lua's unpack is bounded by the C stack (8000 slots in Redis): send members in chunks.
local CHUNK = 4000
for s = 1, #removals, CHUNK do
  redis.call('ZREM', KEYS[1], unpack(removals, s, math.min(s + CHUNK - 1, #removals)))
end
for s = 1, #additions, CHUNK do
  redis.call('ZADD', KEYS[1], unpack(additions, s, math.min(s + CHUNK - 1, #additions)))
end
if pending ~= 0 then redis.call('INCRBY', KEYS[2], pending) end
if held ~= 0 then redis.call('INCRBY', KEYS[3], held) end
return results
