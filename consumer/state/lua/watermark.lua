-- The input partitions' marks (consumer/processing/timers.py): how far, in arrival time (the Kafka
-- timestamp of the records), each partition has been processed and committed. The expiry sweeper
-- reports a deadline only once every partition's mark has passed it (wake_due.lua).
--
-- A partition that is caught up and idle (its owner consumed it to the end) does not hold the
-- watermark back: its mark advances with the shared clock, the clock of this Redis, less ARGV[1]
-- milliseconds (the records still on their way: produced, not fetched yet). A partition that is
-- behind is marked with the newest arrival time committed from it. Marks only move forward, so an
-- instance that takes a partition over never sets it back, and a stale owner's late mark is a no-op.
--
-- KEYS[1] the marks (hash "<topic>:<partition>@<topic id>" -> ms)
-- ARGV[1] idle lag (ms), then per partition: member, newest committed arrival ms (-1: none), 1 if
--         caught up else 0
-- Returns the clock's ms.
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local idle = now_ms - tonumber(ARGV[1])
for i = 2, #ARGV, 3 do
  local mark = tonumber(ARGV[i + 1])
  if ARGV[i + 2] == '1' and idle > mark then mark = idle end
  if mark >= 0 then
    local current = tonumber(redis.call('HGET', KEYS[1], ARGV[i]))
    if not current or mark > current then redis.call('HSET', KEYS[1], ARGV[i], mark) end
  end
end
return now_ms
