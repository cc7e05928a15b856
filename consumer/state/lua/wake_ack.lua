-- Remove wake entries the expiry sweeper has handled (consumer/processing/sweeper.py). Entries leave a list
-- only from its head, by position: the header "<list id>:<removed>" (wake_due.lua) says how many
-- entries were removed since the list was created. A sweeper that read `count` entries after a
-- header "<id>:<start>" removes those of them still there, and nothing else: when two sweepers
-- read the same head, the second ack removes only what the first left of the common part, and an
-- ack that comes after the list was emptied and created again (another id) removes nothing. So no
-- entry is ever removed unread, whatever was appended meanwhile. A list left empty takes its
-- second out of the wake zset in the same step (the write script adds both together).
--
-- KEYS[1] wake zset, KEYS[2] the old deadline index, KEYS[3..] the wake lists
-- ARGV[1] n old-index members, the members; then per wake list: second, header as read, count
local n = tonumber(ARGV[1])
if n > 0 then
  redis.call('ZREM', KEYS[2], unpack(ARGV, 2, 1 + n))
end
local function parse(header)
  local id, removed = string.match(header, '^(.*):(%d+)$')
  return id, tonumber(removed)
end
local i = 2 + n
for k = 3, #KEYS do
  local second, read_id, start = ARGV[i], parse(ARGV[i + 1])
  local count = tonumber(ARGV[i + 2])
  i = i + 3
  local header = redis.call('LINDEX', KEYS[k], 0)
  if header then
    local id, removed = parse(header)
    local done = start + count
    if id == read_id and removed < done then
      redis.call('LTRIM', KEYS[k], done - removed + 1, -1)  -- the header goes too
      if redis.call('EXISTS', KEYS[k]) == 1 then
        redis.call('LPUSH', KEYS[k], id .. ':' .. done)
      else
        redis.call('ZREM', KEYS[1], second)
      end
    end
  end
end
return 1
