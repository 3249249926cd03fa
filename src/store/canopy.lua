#!lua name=canopy
--[[
canopy's Redis Functions (DESIGN section 5, docs/protocol.md).

The daemon loads this library at startup when Redis holds none or an older
version (canopy_version), and again if Redis lost it; it never replaces a
newer one, and read-only commands load nothing. Every daemon write that others treat as truth goes through a
function here that first checks the daemon's epoch (fencing token): a daemon
whose epoch moved on writes nothing. Errors start with a code word a client can
match: LOST (the epoch key is gone: Redis lost canopy's data), FENCED (another
daemon holds a newer epoch), CONFLICT (stored generation differs from what the
daemon read), STALE (a child report older than the stored one), ERR (bad input).
]]

-- Raised with every change of any function here (store::LIBRARY_VERSION).
local VERSION = 3
local CONSUMER_GROUP = 'canopy'
-- Lua's stack bounds how many arguments one call can take: write big hashes
-- in chunks.
local CHUNK = 500
local MAX_MESSAGE = 4096

local function check_epoch(key, epoch)
  local current = redis.call('GET', key)
  if not current then
    return redis.error_reply('LOST the epoch key ' .. key .. ' is missing: Redis lost canopy data')
  end
  if current ~= epoch then
    return redis.error_reply('FENCED epoch is ' .. current .. ', this daemon holds ' .. epoch)
  end
  return nil
end

-- HSET key with the field/value pairs args[first .. first + count - 1].
local function hset_pairs(key, args, first, count)
  local i = first
  local last = first + count - 1
  while i <= last do
    local chunk = {}
    local stop = math.min(last, i + 2 * CHUNK - 1)
    for j = i, stop do chunk[#chunk + 1] = args[j] end
    redis.call('HSET', key, unpack(chunk))
    i = stop + 1
  end
end

-- At most `max` bytes of `text`, never cutting a UTF-8 character in two.
local function clip(text, max)
  if #text <= max then return text end
  local stop = max
  while stop > 0 do
    local byte = string.byte(text, stop + 1)
    if byte < 0x80 or byte >= 0xC0 then break end
    stop = stop - 1
  end
  return string.sub(text, 1, stop)
end

-- A generation as canopy stores it: decimal digits within u64 (Lua numbers are
-- doubles, so large values are compared as text). nil for anything else.
local U64_MAX = '18446744073709551615'
local function generation_text(text)
  if type(text) ~= 'string' or not string.match(text, '^%d+$') then return nil end
  text = string.gsub(text, '^0+(%d)', '%1')
  if #text > #U64_MAX or (#text == #U64_MAX and text > U64_MAX) then return nil end
  return text
end

-- Compare two generation texts (canonical digits): -1, 0 or 1.
local function compare_generations(a, b)
  if #a ~= #b then return #a < #b and -1 or 1 end
  if a == b then return 0 end
  return a < b and -1 or 1
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- A daemon-owned key holding another type (written around canopy) would make
-- every write to it fail, for good: Git is the truth, so the key is replaced.
local function reclaim(key, kind)
  local found = redis.call('TYPE', key).ok
  if found ~= kind and found ~= 'none' then redis.call('DEL', key) end
end

-- Publish a signal: the app stream (its consumer group created first), the
-- namespace's events stream, and the pub/sub wake-up.
local function emit(stream, events, maxlen, channel, kind, app, generation, payload)
  reclaim(stream, 'stream')
  reclaim(events, 'stream')
  -- Created at 0 before the first entry, so a child that joins later reads the
  -- app's whole (capped) history. BUSYGROUP (it exists) is expected.
  redis.pcall('XGROUP', 'CREATE', stream, CONSUMER_GROUP, '0', 'MKSTREAM')
  local entry = {'kind', kind, 'app', app, 'generation', generation, 'payload', payload}
  local id = redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', unpack(entry))
  redis.call('XADD', events, 'MAXLEN', '~', maxlen, '*', unpack(entry))
  redis.call('PUBLISH', channel, payload)
  return id
end

--[[
canopy_apply: write one app's desired state and its signal, all or nothing.
KEYS: epoch, desired, files, config, app stream, events stream, apps set,
      status record, held set
ARGV: epoch, expected stored generation (0: none), op (put|prune), app name,
      stream maxlen, channel, payload ('' = no signal), kind, generation,
      hold ('1': keep the signal in desired.held_payload until canopy_signal
      releases it, for an app waiting on its dependencies),
      then three lists, each a count followed by that many strings:
      desired field/value pairs, files path/sha256 pairs, config key/value pairs.
]]
local function apply(keys, args)
  local err = check_epoch(keys[1], args[1])
  if err then return err end
  -- A stored generation that is not a u64, or a desired key that is not a
  -- hash (written around canopy), counts as none: the daemon read it as none,
  -- and this write repairs it.
  reclaim(keys[2], 'hash')
  local stored = generation_text(redis.call('HGET', keys[2], 'generation')) or '0'
  if stored ~= (generation_text(args[2]) or '') then
    return redis.error_reply('CONFLICT stored generation is ' .. stored .. ', expected ' .. args[2])
  end
  local op, app, payload = args[3], args[4], args[7]
  if op ~= 'put' and op ~= 'prune' then
    return redis.error_reply('ERR unknown op ' .. op)
  end
  local n_desired = tonumber(args[11])
  local files_at = 12 + n_desired
  local n_files = tonumber(args[files_at])
  local config_at = files_at + 1 + n_files
  local n_config = tonumber(args[config_at])

  redis.call('DEL', keys[2], keys[3], keys[4])
  reclaim(keys[7], 'set')
  reclaim(keys[8], 'hash')
  reclaim(keys[9], 'set')
  hset_pairs(keys[2], args, 12, n_desired)
  if op == 'put' then
    hset_pairs(keys[3], args, files_at + 1, n_files)
    hset_pairs(keys[4], args, config_at + 1, n_config)
    redis.call('SADD', keys[7], app)
  else
    -- The app's status history ends with it: if it comes back, it starts afresh.
    redis.call('SREM', keys[7], app)
    redis.call('DEL', keys[8])
  end
  -- A new desired state replaces whatever signal an older one was holding.
  redis.call('SREM', keys[9], app)

  if payload == '' then return 'OK' end
  if args[10] == '1' then
    redis.call('HSET', keys[2], 'held_payload', payload, 'held_kind', args[8])
    redis.call('SADD', keys[9], app)
    return 'HELD'
  end
  return emit(keys[5], keys[6], args[5], args[6], args[8], app, args[9], payload)
end

--[[
canopy_signal: publish a signal for an app's current desired state: on request
(manual sync) or releasing one held for dependencies. Sets `signalled_at` and
ends any hold.
KEYS: epoch, desired, app stream, events stream, held set
ARGV: epoch, desired generation the payload was built from, stream maxlen,
      channel, payload, kind, at (Unix ms), app name
]]
local function signal(keys, args)
  local err = check_epoch(keys[1], args[1])
  if err then return err end
  reclaim(keys[5], 'set')
  if redis.call('TYPE', keys[2]).ok ~= 'hash' then
    return redis.error_reply('NOAPP the app has no desired state')
  end
  local stored = redis.call('HGET', keys[2], 'generation')
  if not stored or not redis.call('HGET', keys[2], 'digest') then
    return redis.error_reply('NOAPP the app has no desired state')
  end
  if stored ~= args[2] then
    return redis.error_reply('CONFLICT stored generation is ' .. stored .. ', expected ' .. args[2])
  end
  local id = emit(keys[3], keys[4], args[3], args[4], args[6], args[8], args[2], args[5])
  redis.call('HSET', keys[2], 'signalled_at', args[7])
  redis.call('HDEL', keys[2], 'held_payload', 'held_kind')
  redis.call('SREM', keys[5], args[8])
  return id
end

--[[
canopy_hset: a fenced HSET of a daemon-owned hash (meta).
KEYS: epoch, hash   ARGV: epoch, field, value, ...
]]
local function fenced_hset(keys, args)
  local err = check_epoch(keys[1], args[1])
  if err then return err end
  reclaim(keys[2], 'hash')
  hset_pairs(keys[2], args, 2, #args - 1)
  return 'OK'
end

--[[
canopy_status: write an app's status record and, when the status change is a
drift transition, its drift signal, together.
KEYS: epoch, status record, app stream, events stream
ARGV: epoch, stream maxlen, channel, app name, drift key ('' = no signal),
      payload, generation, then the record's field/value pairs.
The signal goes out only when the drift key differs from the record's stored
`drift_key`, which it then replaces. The key holds no time, so an evaluation
repeated, retried after a lost reply, or made by another daemon on the same
state publishes nothing new.
]]
local function status(keys, args)
  if #args < 7 or (#args - 7) % 2 ~= 0 then
    return redis.error_reply('ERR canopy_status takes 7 arguments then field/value pairs')
  end
  local err = check_epoch(keys[1], args[1])
  if err then return err end
  reclaim(keys[2], 'hash')
  local drift_key = args[5]
  local publish = drift_key ~= '' and redis.call('HGET', keys[2], 'drift_key') ~= drift_key
  hset_pairs(keys[2], args, 8, #args - 7)
  if not publish then return redis.status_reply('OK') end
  redis.call('HSET', keys[2], 'drift_key', drift_key)
  return emit(keys[3], keys[4], args[2], args[3], 'drift', args[4], args[7], args[6])
end

--[[
canopy_claim: take the next epoch. It never goes below `min`, so a daemon that
saw Redis lose its data keeps its epochs growing.
KEYS: epoch   ARGV: min
]]
local function claim(keys, args)
  local current = tonumber(redis.call('GET', keys[1]) or '0') or 0
  local min = tonumber(args[1]) or 0
  local next_epoch = math.max(current, min) + 1
  redis.call('SET', keys[1], next_epoch)
  return next_epoch
end

--[[
canopy_report: a child reports what it runs (DESIGN section 5).
KEYS: observed [, desired]   ARGV: generation, digest, revision, status, message, reporter
The observed key must end in ':observed'; the app's desired key is the same
key ending in ':desired' (given as a second key, or derived: both share the
app's hash tag, so the same slot). Refused, changing nothing:
- a generation that is not a u64 (ERR), or above the app's desired generation
  (ERR: no signal ever carried it; a daemon could not use it);
- a generation lower than the stored report's (STALE).
A stored report whose generation is not a u64 (written around this function)
counts as none, so a child can always repair its own key.
`at` is Redis's clock (Unix ms), so reporters' clocks do not matter.
]]
local function report(keys, args)
  if #args ~= 6 then
    return redis.error_reply('ERR canopy_report takes 6 arguments: generation digest revision status message reporter')
  end
  local observed = keys[1]
  if #keys < 1 or #keys > 2 or not string.match(observed, ':observed$') then
    return redis.error_reply('ERR canopy_report takes the app key ending in :observed (and optionally its :desired key)')
  end
  local desired = string.gsub(observed, ':observed$', ':desired')
  if keys[2] and keys[2] ~= desired then
    return redis.error_reply('ERR the second key must be the app key ending in :desired')
  end
  local generation = generation_text(args[1])
  if not generation then
    return redis.error_reply('ERR generation must be a non-negative integer within u64, got ' .. string.sub(args[1], 1, 40))
  end
  if not string.match(args[2], '^sha256:' .. string.rep('[0-9a-f]', 64) .. '$') then
    return redis.error_reply('ERR digest must be sha256:<64 lowercase hex>')
  end
  local status = args[4]
  if status ~= 'synced' and status ~= 'failed' and status ~= 'progressing' then
    return redis.error_reply('ERR status must be synced, failed or progressing')
  end
  local wanted = generation_text(redis.call('HGET', desired, 'generation')) or '0'
  if compare_generations(generation, wanted) > 0 then
    return redis.error_reply('ERR generation ' .. generation .. ' is above the desired generation ' .. wanted)
  end
  local stored = generation_text(redis.call('HGET', observed, 'generation')) or '0'
  if compare_generations(generation, stored) < 0 then
    return redis.error_reply('STALE generation ' .. generation .. ' is lower than the stored ' .. stored)
  end
  redis.call('HSET', observed,
    'generation', generation, 'digest', args[2], 'revision', clip(args[3], 256),
    'status', status, 'message', clip(args[5], MAX_MESSAGE),
    'reporter', clip(args[6], 256), 'at', now_ms())
  return redis.status_reply('OK')
end

redis.register_function('canopy_apply', apply)
redis.register_function('canopy_signal', signal)
redis.register_function('canopy_hset', fenced_hset)
redis.register_function('canopy_status', status)
redis.register_function('canopy_claim', claim)
redis.register_function('canopy_report', report)
redis.register_function{
  function_name = 'canopy_version',
  callback = function() return VERSION end,
  flags = {'no-writes'},
}
