-- Read a batch's customer states and the journal entries of its input records in one command.
-- KEYS: per customer: state key, journal key.  ARGV: per customer: n fields, field ...
-- Returns per customer: state value ("" when absent), then one value per field ("" when absent).
-- (A Lua nil would cut the reply array short, hence "".)
local reply = {}
local a = 1
for c = 1, #KEYS / 2 do
  reply[#reply + 1] = redis.call('GET', KEYS[2 * c - 1]) or ''
  local n = tonumber(ARGV[a])
  if n > 0 then
    local values = redis.call('HMGET', KEYS[2 * c], unpack(ARGV, a + 1, a + n))
    for i = 1, n do reply[#reply + 1] = values[i] or '' end
  end
  a = a + 1 + n
end
return reply
