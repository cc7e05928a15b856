-- `leadattr forget` (consumer/tools/forget.py): blank a customer's entries in wake lists, in place.
-- The sweeper acknowledges entries by position (wake_ack.lua), so an entry is overwritten with ""
-- (a cid with no state: the sweeper drops it when its second comes), never removed. Position 0 is
-- the list's header. One call per chunk of lists, so positions cannot move between LPOS and LSET.
-- KEYS: wake lists; ARGV[1]: the cid. Returns the number of entries blanked.
local blanked = 0
for _, key in ipairs(KEYS) do
  local positions = redis.call('LPOS', key, ARGV[1], 'COUNT', 0)
  for _, position in ipairs(positions) do
    if position > 0 then
      redis.call('LSET', key, position, '')
      blanked = blanked + 1
    end
  end
end
return blanked
