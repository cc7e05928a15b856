-- Atomically replace customers' states if nobody changed them since we read them (compare-and-set),
-- and in the same step journal the decisions of the customers that applied, append their wake
-- entries and adjust the pending/held counters. A customer's state, journal entries, wake entry
-- and counter deltas are applied together or not at all, so the counters never drift from the
-- states, every stored state has an entry for its wake time, and a replay finds the decisions
-- behind every state.
--
-- One call carries a whole batch, and the work shared by its customers is done once: one MGET and
-- one MSET per 2,000 customers, one HSET per input partition, one RPUSH (and ZADD) per wake second,
-- one INCRBY per counter (per-customer commands cost most of the time Redis spent on a batch;
-- docs/performance.md).
--
-- Guards come first, and nothing is written unless every one holds (consumer/state/recovery.py):
--   progress  the input partitions' progress (the offset after the last batch whose decisions are
--             here) must be at least what the writer knows was committed or has seen: a Redis that
--             went back in time (a failover to a stale replica, a lost AOF tail, a flush, an old
--             backup) is refused with STATE_LOST before a single decision is written on it;
--   owner     each partition the batch comes from must still be this writer's (its fencing token,
--             taken when the partitions were assigned): a zombie whose partitions moved is refused
--             with FENCED.
-- Then the batch's partitions' progress is raised (never lowered) in the same step as its decisions.
--
-- KEYS: 1 wake zset, 2 pending counter, 3 held counter, 4 progress hash, 5 owners hash, 6 .. 5+P
--       journal hash of each input partition, 6+P .. 5+P+W wake list of each wake second, then the
--       state key of each customer.
-- ARGV: 1 n customers, 2 P, 3 W, 4 journal time to live (ms), 5 G guards; then per guard: member,
--       least progress (-1: none), new progress (-1: none), token ("": none); then the P journal
--       fields to write, one per partition's hash, the W wake seconds; then per customer:
--         expected value ("" = the key must not exist), new value ("" = delete), pending delta,
--         held delta, wake list number (0 = none), cid, n journal fragments,
--         (partition number, fragment) ...
-- States have no TTL: the expiry sweeper deletes them when nothing is left (consumer/processing/sweeper.py).
-- Returns one integer per customer: 1 applied, 0 conflict (the caller re-reads and re-decides).
local customers, partitions, seconds = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local guards = tonumber(ARGV[5])
local raised = {}
-- All progress first: a Redis that lost state is reported as such, whatever else it lost with it.
for i = 0, guards - 1 do
  local g = 6 + 4 * i
  local member, least, new = ARGV[g], tonumber(ARGV[g + 1]), tonumber(ARGV[g + 2])
  local have = tonumber(redis.call('HGET', KEYS[4], member) or '-1')
  if least >= 0 and have < least then
    return redis.error_reply('STATE_LOST ' .. member .. ' ' .. have .. ' ' .. least)
  end
  if new > have then raised[#raised + 1] = {member, new} end
end
for i = 0, guards - 1 do
  local g = 6 + 4 * i
  local member, token = ARGV[g], ARGV[g + 3]
  if token ~= '' then
    local owner = redis.call('HGET', KEYS[5], member)
    if not owner then  -- taken, and the record of it gone: Redis lost state
      return redis.error_reply('STATE_LOST ' .. member .. ' owner')
    elseif owner ~= token then
      return redis.error_reply('FENCED ' .. member)
    end
  end
end
local fields = 5 + 4 * guards  -- ARGV[fields + p]: partition p's journal field
local fragments, wakes = {}, {}
for p = 1, partitions do fragments[p] = {} end
for w = 1, seconds do wakes[w] = {} end
local pending, held = 0, 0
local results = {}
local a = fields + partitions + seconds + 1
-- Lua's unpack is bounded by the C stack (8000 slots in Redis): multi-key commands go in chunks.
local CHUNK = 4000

-- Every state is read up front and the new ones written at the end, a few multi-key commands in
-- all: a command called from Lua costs ~3 us beyond its own work (argument objects, lookup,
-- statistics, AOF propagation), a third of the script's time as a GET and a SET per customer.
-- ``latest`` keeps the compare-and-set sequential should a customer appear twice in one call (the
-- run loop writes one state per customer; the store's contract allows more).
local first_state = 5 + partitions + seconds
local currents = {}
for s = 1, customers, CHUNK do
  local got = redis.call('MGET', unpack(KEYS, first_state + s, first_state + math.min(s + CHUNK - 1, customers)))
  for i = 1, #got do currents[s + i - 1] = got[i] end
end
local latest, written = {}, {}

for c = 1, customers do
  local n_journal = tonumber(ARGV[a + 6])
  local key = KEYS[first_state + c]
  local current = latest[key]
  if current == nil then current = currents[c] or '' end
  if current == ARGV[a] then
    if latest[key] == nil then written[#written + 1] = key end
    latest[key] = ARGV[a + 1]
    pending = pending + tonumber(ARGV[a + 2])
    held = held + tonumber(ARGV[a + 3])
    local wake = tonumber(ARGV[a + 4])
    if wake > 0 then
      local cids = wakes[wake]
      cids[#cids + 1] = ARGV[a + 5]
    end
    for f = 1, n_journal do
      local parts = fragments[tonumber(ARGV[a + 5 + 2 * f])]
      parts[#parts + 1] = ARGV[a + 6 + 2 * f]
    end
    results[c] = 1
  else
    results[c] = 0
  end
  a = a + 7 + 2 * n_journal
end

local sets, dels = {}, {}
for _, key in ipairs(written) do
  local value = latest[key]
  if value == '' then
    dels[#dels + 1] = key
  else
    sets[#sets + 1] = key
    sets[#sets + 1] = value
  end
end
for s = 1, #sets, CHUNK do  -- CHUNK is even: a chunk never splits a key from its value
  redis.call('MSET', unpack(sets, s, math.min(s + CHUNK - 1, #sets)))
end
for s = 1, #dels, CHUNK do
  redis.call('DEL', unpack(dels, s, math.min(s + CHUNK - 1, #dels)))
end

for p = 1, partitions do
  if #fragments[p] > 0 then
    redis.call('HSET', KEYS[5 + p], ARGV[fields + p], table.concat(fragments[p]))
    redis.call('PEXPIRE', KEYS[5 + p], ARGV[4])
  end
end
for w = 1, seconds do
  local cids = wakes[w]
  if #cids > 0 then
    local key = KEYS[5 + partitions + w]
    if redis.call('EXISTS', key) == 0 then
      -- A new list starts with its header "<list id>:<entries removed>" (wake_ack.lua); the id
      -- (Redis's clock, in microseconds) tells it from a list of the same name emptied earlier.
      local now = redis.call('TIME')
      redis.call('RPUSH', key, string.format('%s%06d:0', now[1], now[2]))
    end
    for s = 1, #cids, CHUNK do
      redis.call('RPUSH', key, unpack(cids, s, math.min(s + CHUNK - 1, #cids)))
    end
    local second = ARGV[fields + partitions + w]
    redis.call('ZADD', KEYS[1], second, second)
  end
end
if pending ~= 0 then redis.call('INCRBY', KEYS[2], pending) end
if held ~= 0 then redis.call('INCRBY', KEYS[3], held) end
for _, pair in ipairs(raised) do redis.call('HSET', KEYS[4], pair[1], pair[2]) end
return results
