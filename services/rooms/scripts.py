"""The Lua scripts that change rooms: each one bumps the version, publishes the push and the
reply, and records the command's entry id, atomically (see store.py for why one script per
command, and services/common/rooms.py for the keys and frames).

Pushes are PUBLISHed here rather than through `Bus.send` after the script: inside the script, the
order of publication is the order of the versions, even with several replicas at work.
"""

# Entry ids of applied commands are kept this long per room (a redelivery comes sooner).
DONE_WINDOW_MS = 3_600_000

# KEYS: room, members, conns, people, done, index, info.
_COMMON = """
local K_ROOM, K_MEMBERS, K_CONNS, K_PEOPLE, K_DONE, K_INDEX, K_INFO =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]

local function people_json()
  local users = redis.call('ZRANGE', K_PEOPLE, 0, -1)
  local out = {}
  for i, user in ipairs(users) do out[i] = cjson.encode(user) end
  return '[' .. table.concat(out, ',') .. ']'
end

local function seen(entry)
  return entry ~= '' and redis.call('ZSCORE', K_DONE, entry)
end

local function done(entry, now)
  if entry ~= '' then
    redis.call('ZADD', K_DONE, now, entry)
    redis.call('ZREMRANGEBYSCORE', K_DONE, '-inf', now - DONE_WINDOW_MS)
  end
end

-- Index score = when the reaper looks next; a room without members expires when idle.
local function settle(room, now, idle_ms)
  local first = redis.call('ZRANGE', K_MEMBERS, 0, 0, 'WITHSCORES')
  if first[1] then
    redis.call('PERSIST', K_ROOM)
    redis.call('PERSIST', K_DONE)
    redis.call('ZADD', K_INDEX, first[2], room)
  else
    redis.call('PEXPIRE', K_ROOM, idle_ms)
    redis.call('PEXPIRE', K_DONE, idle_ms)
    redis.call('ZADD', K_INDEX, now + idle_ms, room)
  end
end

-- Removes connections; drops a user from people once none of their connections is left.
local function remove(conns)
  local users = {}
  for _, conn in ipairs(conns) do
    redis.call('ZREM', K_MEMBERS, conn)
    local user = redis.call('HGET', K_CONNS, conn)
    redis.call('HDEL', K_CONNS, conn)
    redis.call('HDEL', K_INFO, conn)
    if user then users[user] = true end
  end
  if next(users) == nil then return end
  for _, user in ipairs(redis.call('HVALS', K_CONNS)) do users[user] = nil end
  for user in pairs(users) do redis.call('ZREM', K_PEOPLE, user) end
end

local function bump(now)
  local version = redis.call('HINCRBY', K_ROOM, 'version', 1)
  redis.call('HSET', K_ROOM, 'updated', now)
  return version
end

-- ARGV tail shared by every changing script: push channel, reply channel, req JSON ('' = none)
local function publish(channel, reply_channel, req, room_json, version, body, state)
  local people = people_json()
  if req ~= '' then
    redis.call('PUBLISH', reply_channel, '{"req":' .. req .. ',"result":{"room":' .. room_json
      .. ',"version":' .. version .. ',"state":' .. state .. ',"people":' .. people .. '}}')
  end
  if body ~= '' then
    redis.call('PUBLISH', channel, '\\n{"push":"room","room":' .. room_json .. ',"version":'
      .. version .. body .. ',"people":' .. people .. '}')
  end
  return people
end
""".replace("DONE_WINDOW_MS", str(DONE_WINDOW_MS))

# ARGV: now, room, room JSON, conn, user, ttl ms, initial state JSON, entry, push channel,
# reply channel, req JSON, idle ms, max rooms, info JSON ('' = none), reset ('1': the initial
# state also replaces the state of a room without members). Returns {status, version}.
JOIN_LUA = (
    _COMMON
    + """
local now, room, room_json = tonumber(ARGV[1]), ARGV[2], ARGV[3]
if seen(ARGV[8]) then return {'dup', 0} end
local created = redis.call('EXISTS', K_ROOM) == 0
if created then
  if redis.call('ZCARD', K_INDEX) >= tonumber(ARGV[13])
      and not redis.call('ZSCORE', K_INDEX, room) then
    return {'limit', redis.call('ZCARD', K_INDEX)}
  end
  redis.call('HSET', K_ROOM, 'state', ARGV[7], 'version', 0, 'created', now)
end
local reset = not created and ARGV[15] == '1' and redis.call('ZCARD', K_MEMBERS) == 0
if reset then redis.call('HSET', K_ROOM, 'state', ARGV[7]) end
local added = redis.call('ZADD', K_MEMBERS, now + tonumber(ARGV[6]), ARGV[4]) == 1
local version = tonumber(redis.call('HGET', K_ROOM, 'version'))
local body = ''
if added or created or reset then
  version = bump(now)
  if added then
    redis.call('HSET', K_CONNS, ARGV[4], ARGV[5])
    if ARGV[14] ~= '' then redis.call('HSET', K_INFO, ARGV[4], ARGV[14]) end
    redis.call('ZADD', K_PEOPLE, 'NX', version, ARGV[5])
  end
  body = (created or reset) and (',"state":' .. ARGV[7]) or ',"patch":{}'
end
done(ARGV[8], now)
settle(room, now, tonumber(ARGV[12]))
publish(ARGV[9], ARGV[10], ARGV[11], room_json, version, body, redis.call('HGET', K_ROOM, 'state'))
return {'ok', version}
"""
)

# ARGV: now, room, room JSON, conn, entry, push channel, reply channel, req JSON, idle ms.
LEAVE_LUA = (
    _COMMON
    + """
local now, room, room_json = tonumber(ARGV[1]), ARGV[2], ARGV[3]
if seen(ARGV[5]) then return {'dup', 0} end
if redis.call('EXISTS', K_ROOM) == 0 then return {'missing', 0} end
local version = tonumber(redis.call('HGET', K_ROOM, 'version'))
local body = ''
if redis.call('ZSCORE', K_MEMBERS, ARGV[4]) then
  remove({ARGV[4]})
  version = bump(now)
  body = ',"patch":{}'
end
done(ARGV[5], now)
settle(room, now, tonumber(ARGV[9]))
publish(ARGV[6], ARGV[7], ARGV[8], room_json, version, body, redis.call('HGET', K_ROOM, 'state'))
return {'ok', version}
"""
)

# A run of updates of one room, merged in Python against a version read or remembered (see
# store.py). KEYS: the room's 7, then the command stream. ARGV: now, room, room JSON, idle ms,
# push channel, version the merge started from and the room's creation time (a room deleted or
# expired and made again counts its versions from 0 again), the stream's group, then 7 per
# command:
#   kind ('u' changes the state, 's' changes nothing, 'e' is refused, 'd' was applied before:
#   only acked), entry, conn (the merge took it for a member: checked; '' = no check), reply
#   channel, req JSON ('' = no reply), then for 'u' the new state JSON and the patch JSON, for
#   'e' the error JSON and ''.
# Nothing is written unless it is still the same room at that version, each checked conn is a
# member and no entry (but a 'd') was applied already; else returns {'retry', 0}: merge again
# from a read.
# Otherwise every entry is acked here, with the change: returns {'ok', final version}.
UPDATES_LUA = (
    _COMMON
    + """
local now, room, room_json = tonumber(ARGV[1]), ARGV[2], ARGV[3]
local current = redis.call('HMGET', K_ROOM, 'version', 'created')
if current[1] ~= ARGV[6] or (current[2] or '') ~= ARGV[7] then return {'retry', 0} end
for i = 9, #ARGV, 7 do
  if ARGV[i] ~= 'd' then
    local conn = ARGV[i + 2]
    if conn ~= '' and not redis.call('ZSCORE', K_MEMBERS, conn) then return {'retry', 0} end
    if seen(ARGV[i + 1]) then return {'retry', 0} end
  end
end
local push = ARGV[5]
local version = tonumber(ARGV[6])
local state = redis.call('HGET', K_ROOM, 'state')
local people = people_json()  -- updates do not change who is in the room
local applied = false
local acks = {}
for i = 9, #ARGV, 7 do
  local kind, entry, reply, req = ARGV[i], ARGV[i + 1], ARGV[i + 3], ARGV[i + 4]
  acks[#acks + 1] = entry
  if kind == 'e' then
    if req ~= '' then
      redis.call('PUBLISH', reply, '{"req":' .. req .. ',"error":' .. ARGV[i + 5] .. '}')
    end
  elseif kind ~= 'd' then
    if kind == 'u' then
      state = ARGV[i + 5]
      version = version + 1
    end
    if req ~= '' then
      redis.call('PUBLISH', reply, '{"req":' .. req .. ',"result":{"room":' .. room_json
        .. ',"version":' .. version .. ',"state":' .. state .. ',"people":' .. people .. '}}')
    end
    if kind == 'u' then
      redis.call('PUBLISH', push, '\\n{"push":"room","room":' .. room_json .. ',"version":'
        .. version .. ',"patch":' .. ARGV[i + 6] .. ',"people":' .. people .. '}')
    end
    redis.call('ZADD', K_DONE, now, entry)
    applied = true
  end
end
if version ~= tonumber(ARGV[6]) then
  redis.call('HSET', K_ROOM, 'state', state, 'version', version, 'updated', now)
end
if applied then
  redis.call('ZREMRANGEBYSCORE', K_DONE, '-inf', now - DONE_WINDOW_MS)
  settle(room, now, tonumber(ARGV[4]))
end
for j = 1, #acks, 1000 do
  redis.call('XACK', KEYS[8], ARGV[8], unpack(acks, j, math.min(j + 999, #acks)))
end
return {'ok', version}
""".replace("DONE_WINDOW_MS", str(DONE_WINDOW_MS))
)

# ARGV: now, room, room JSON, push channel, idle ms. Returns members removed, -1: room gone.
REAP_LUA = (
    _COMMON
    + """
local now, room = tonumber(ARGV[1]), ARGV[2]
if redis.call('EXISTS', K_ROOM) == 0 then
  redis.call('DEL', K_MEMBERS, K_CONNS, K_PEOPLE, K_DONE, K_INFO)
  redis.call('ZREM', K_INDEX, room)
  return -1
end
local expired = redis.call('ZRANGEBYSCORE', K_MEMBERS, '-inf', now)
if #expired > 0 then
  remove(expired)
  local version = bump(now)
  publish(ARGV[4], '', '', ARGV[3], version, ',"patch":{}', '')
  settle(room, now, tonumber(ARGV[5]))
  return #expired
end
-- Nothing changed: look again later, without extending an idle room's life (the reaper's
-- clock and Redis's may differ a little; re-arming the expiry here could keep it forever).
local first = redis.call('ZRANGE', K_MEMBERS, 0, 0, 'WITHSCORES')
if first[1] then
  redis.call('ZADD', K_INDEX, first[2], room)
else
  local ttl = redis.call('PTTL', K_ROOM)
  if ttl < 0 then
    ttl = tonumber(ARGV[5])
    redis.call('PEXPIRE', K_ROOM, ttl)
  end
  redis.call('ZADD', K_INDEX, now + math.max(ttl, 100), room)
end
return 0
"""
)

# ARGV: room, room JSON, push channel, control channel. Returns the final version, or -1 when
# there is no room. The gateways' `room.deleted` control message goes out right after the push,
# in the same script: a gateway has forgotten the membership before a member, told by the push,
# can join the room again.
DELETE_LUA = (
    _COMMON
    + """
if redis.call('EXISTS', K_ROOM) == 0 then return -1 end
local version = redis.call('HINCRBY', K_ROOM, 'version', 1)
redis.call('PUBLISH', ARGV[3], '\\n{"push":"room","room":' .. ARGV[2] .. ',"version":' .. version
  .. ',"state":null,"people":[],"deleted":true}')
redis.call('PUBLISH', ARGV[4], '{"op":"room.deleted","room":' .. ARGV[2] .. '}')
redis.call('DEL', K_ROOM, K_MEMBERS, K_CONNS, K_PEOPLE, K_DONE, K_INFO)
redis.call('ZREM', K_INDEX, ARGV[1])
return version
"""
)
