-- The expiry sweeper's read (consumer/state/store.py, consumer/processing/sweeper.py): the heads of the wake
-- lists of every second up to now, oldest first, at most ARGV[2] entries in all; then, while room
-- is left, members of the index of releases before 0.2.0 that are due (a zset "<due ms>:<cid>").
-- Nothing is removed here: entries go only once handled (wake_ack.lua).
--
-- Each wake list starts with a header "<list id>:<entries removed so far>" (apply.lua writes it
-- when it creates the list, wake_ack.lua keeps it up to date), so an ack names entries by their
-- position since the list was created, never by value.
--
-- KEYS[1] wake zset (second -> second), KEYS[2] the old deadline index
-- ARGV[1] now (ms), ARGV[2] limit, ARGV[3] the wake lists' name prefix ("<prefix>:wake:")
-- Returns a flat array: second, header, {cid, ...}, second, header, {cid, ...}, ...
--                       ["legacy", "", {member, ...}]
local now_ms = tonumber(ARGV[1])
local left = tonumber(ARGV[2])
local out = {}
-- Every second listed has at least one entry, so reading at most `left` of them is enough.
local seconds = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', math.floor(now_ms / 1000), 'LIMIT', 0, left)
for _, second in ipairs(seconds) do
  if left <= 0 then break end
  local key = ARGV[3] .. second
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
  local members = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now_ms, 'LIMIT', 0, left)
  if #members > 0 then
    out[#out + 1] = 'legacy'
    out[#out + 1] = ''
    out[#out + 1] = members
  end
end
return out
