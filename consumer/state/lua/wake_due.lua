-- The expiry sweeper's read (consumer/state/redis_store.py, consumer/processing/sweeper.py): the
-- watermark, the shared clock, then the heads of the wake lists of every second up to the
-- watermark, oldest first, at most ARGV[1] entries in all; then, while room is left, members of the
-- index of releases before 0.2.0 that are due (a zset "<due ms>:<cid>"). Nothing is removed here:
-- entries go only once handled (wake_ack.lua).
--
-- The watermark is the lowest mark of the input partitions named in ARGV (watermark.lua keeps one
-- per partition: how far, in arrival time, its records have been processed and committed). A
-- partition without a mark holds it back entirely: nothing is read then. Deadlines are arrival
-- times, so a deadline is reported only once every partition has been processed past it (contract
-- rule 8): a consumer outage or a lagging partition never expires a lead verified in time.
--
-- Each wake list starts with a header "<list id>:<entries removed so far>" (apply.lua writes it
-- when it creates the list, wake_ack.lua keeps it up to date), so an ack names entries by their
-- position since the list was created, never by value.
--
-- KEYS[1] wake zset (second -> second), KEYS[2] the old deadline index, KEYS[3] the marks (hash)
-- ARGV[1] limit, ARGV[2] the wake lists' name prefix ("<prefix>:wake:"), ARGV[3..] the partitions
-- Returns a flat array: watermark ms (-1: unknown), the clock's ms, then
--                       second, header, {cid, ...}, second, header, {cid, ...}, ...
--                       ["legacy", "", {member, ...}]
local left = tonumber(ARGV[1])
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local watermark = -1
if #ARGV >= 3 then
  local marks = redis.call('HMGET', KEYS[3], unpack(ARGV, 3, #ARGV))
  for i = 1, #marks do
    local mark = tonumber(marks[i])
    if not mark then
      watermark = -1
      break
    end
    if watermark < 0 or mark < watermark then watermark = mark end
  end
end
local out = {watermark, now_ms}
if watermark < 0 then return out end
-- Every second listed has at least one entry, so reading at most `left` of them is enough.
local seconds = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', math.floor(watermark / 1000), 'LIMIT', 0, left)
for _, second in ipairs(seconds) do
  if left <= 0 then break end
  local key = ARGV[2] .. second
  local items = redis.call('LRANGE', key, 0, left)
  if #items <= 1 then
    -- Only if someone deleted or cut the list by hand: the scripts keep list and member together.
    redis.call('DEL', key)
    redis.call('ZREM', KEYS[1], second)
  else
    local header = table.remove(items, 1)
    out[#out + 1] = second
    out[#out + 1] = header
    out[#out + 1] = items
    left = left - #items
  end
end
if left > 0 then
  local members = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', watermark, 'LIMIT', 0, left)
  if #members > 0 then
    out[#out + 1] = 'legacy'
    out[#out + 1] = ''
    out[#out + 1] = members
  end
end
return out
