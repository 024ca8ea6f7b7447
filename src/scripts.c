/* scripts.c - owns the Lua side of the Redis protocol (qworkerd-jobs(7)).
 * Each script runs atomically, so a job is always in exactly one key: never
 * in two, never in none. Time comes from the Redis server (TIME) so every
 * instance compares due times and leases against one clock. */
#include "config.h"

#include "scripts.h"

/* Every script first checks the types of the keys it needs, and refuses
 * with an error that names the key, before it changes anything: a producer
 * that ran SET on a queue key must not make a job vanish half-way through.
 * A script checks only the keys it needs, so a wrong key stops only what
 * uses it (SPEC 10); settle goes further and writes every result whose
 * keys are right (below).
 * Scripts also write a job to its new place before removing it from the
 * old one. */
#define QW_LUA_CHECK \
    "local function check(k, want)\n" \
    "  local t = redis.call('TYPE', k)['ok']\n" \
    "  if t ~= 'none' and t ~= want then\n" \
    "    return redis.error_reply('WRONGTYPE key ' .. k .. ' holds a ' .. t .. ', not a ' .. want)\n" \
    "  end\n" \
    "end\n"

/* Base64 (RFC 4648, with padding) of any bytes. Lua is slow per byte, so
 * it works on 4096 precomputed pairs of output characters, three input
 * bytes at a time, in chunks that unpack can take. */
#define QW_LUA_BASE64 \
    "local function base64(s)\n" \
    "  local abc = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'\n" \
    "  local floor, byte, sub, concat = math.floor, string.byte, string.sub, table.concat\n" \
    "  local pair, chunks, m = {}, {}, #s - #s % 3\n" \
    "  for v = 0, 4095 do\n" \
    "    local hi, lo = floor(v / 64) + 1, v % 64 + 1\n" \
    "    pair[v] = sub(abc, hi, hi) .. sub(abc, lo, lo)\n" \
    "  end\n" \
    "  for i = 1, m, 3072 do\n" \
    "    local t, nt, bs = {}, 0, { byte(s, i, math.min(i + 3071, m)) }\n" \
    "    for j = 1, #bs, 3 do\n" \
    "      local v = bs[j] * 65536 + bs[j + 1] * 256 + bs[j + 2]\n" \
    "      local hi = floor(v / 4096)\n" \
    "      t[nt + 1], t[nt + 2], nt = pair[hi], pair[v - hi * 4096], nt + 2\n" \
    "    end\n" \
    "    chunks[#chunks + 1] = concat(t)\n" \
    "  end\n" \
    "  if #s > m then\n" \
    "    local a, b = byte(s, m + 1, m + 2)\n" \
    "    local v = a * 65536 + (b or 0) * 256\n" \
    "    local q = pair[floor(v / 4096)] .. pair[v % 4096]\n" \
    "    chunks[#chunks + 1] = sub(q, 1, #s - m + 1) .. (#s - m == 1 and '==' or '=')\n" \
    "  end\n" \
    "  return concat(chunks)\n" \
    "end\n"

/* Ends the unique_for hold of a job that leaves for good (qw_enqueue's
 * "unique" member, see qw_library_code): deletes field ID of the unique
 * hash K only while it still holds TOKEN, this very job's hold. A later
 * enqueue of the same id, once this hold had run out, has a hold of its
 * own that this job must leave alone. A unique hash of the wrong type is
 * left alone too: its holds then only run out. */
#define QW_LUA_RELEASE \
    "local function release(k, id, token)\n" \
    "  if type(id) == 'string' and type(token) == 'string'\n" \
    "      and redis.call('TYPE', k)['ok'] == 'hash' and redis.call('HGET', k, id) == token then\n" \
    "    redis.call('HDEL', k, id)\n" \
    "  end\n" \
    "end\n"

/* Buries an element too large to run: moves it to dead as an envelope with
 * error and failed_at, inside Redis, so its bytes never reach the daemon
 * (qworkerd-jobs(7), "Oversized jobs"), and ends its unique_for hold in
 * the unique hash UKEY. An envelope keeps its text byte for byte, the two
 * members added before its closing brace; anything else is wrapped as a
 * raw job: a JSON string when it is ASCII that escaping keeps short, else
 * base64. Lua is slow per byte, so the cheap tests come first: cjson does
 * the escaping, and only binary elements take the Lua loop. */
#define QW_LUA_BURY \
    QW_LUA_BASE64 \
    QW_LUA_RELEASE \
    "local function bury(e, now, ukey)\n" \
    "  local env = string.find(e, '^%s*{') ~= nil\n" \
    "  local why = (env and 'job of ' or 'payload of ') .. #e .. ' bytes is larger than max_payload'\n" \
    "    .. (env and ' allows (' or ' (') .. ARGV[4] .. ' bytes)'\n" \
    "  local tail = '\"error\":' .. cjson.encode(why) .. ',\"failed_at\":' .. string.format('%d', now) .. '}'\n" \
    "  if env then\n" \
    "    local ok, t = pcall(cjson.decode, e)\n" \
    "    if ok and type(t) == 'table' and t['payload'] ~= nil then\n" \
    "      release(ukey, t['id'], t['unique'])\n" \
    "      t = nil\n" \
    "      local j = #e\n" \
    "      while string.byte(e, j) ~= 125 do j = j - 1 end\n" \
    "      return string.sub(e, 1, j - 1) .. ',' .. tail\n" \
    "    end\n" \
    "  end\n" \
    "  if not string.find(e, '[\\128-\\255]') then\n" \
    "    local s = cjson.encode(e)\n" \
    "    if #s <= #e + #e / 2 + 18 then return '{\"payload\":' .. s .. ',' .. tail end\n" \
    "  end\n" \
    "  return '{\"payload_encoding\":\"base64\",\"payload\":\"' .. base64(e) .. '\",' .. tail\n" \
    "end\n"

/* KEYS: pending, claim, active, dead, stats, unique, paused, breaker, rate,
 * leases. ARGV: n (at most 1000), first
 * sequence number, field prefix, max_payload, the longest element that can
 * still be an envelope within max_payload (JSON escapes make one longer
 * than its payload), dead_max. Takes up to n jobs, those a blocking pop of
 * an earlier qworkerd left in the claim list first, oldest (tail) first,
 * and files each in the active hash under its sequence number; only then
 * trims them off their lists. An element too large to run is buried on the
 * way (at most 100 per call, so Redis's work stays bounded); a count of
 * them, when there are any, follows the jobs in the reply. Dead and stats
 * are checked only then: when either has the wrong type, the element stays
 * where it is with everything behind it, the jobs in front of it are taken,
 * and a call that can take none returns the error. A broken dead key so
 * stops only a queue whose next job must be buried, and reorders nothing.
 * While the paused key exists (of any type) it takes nothing and returns
 * the status PAUSED: a fetch never takes a job of a paused queue.
 *
 * Flow control (SPEC 14, qworkerd(8) "FLOW CONTROL"), when ARGV 7 to 12
 * turn it on (KEYS breaker, rate, leases; ARGV breaker_failures, cooldown
 * ms, rate N, rate period ms, global_concurrency, the active hashes' key
 * prefix, the wait after a global_concurrency refusal): the reply ends with
 * the status "flow STATE FROM WAIT" (flow.h) and may hold fewer jobs than
 * asked, or none:
 * - breaker open and its cooldown not over: none, WAIT the rest of it; over:
 *   it moves to half-open (FROM says so) and this call may take the one
 *   trial job, whose field (and active hash) the breaker hash keeps. While
 *   the trial's field is still in that active hash, no other call takes a
 *   job; once it is gone without a result (recovered, given back) the next
 *   call takes a new trial.
 * - global_concurrency: the jobs in every instance's active hash (those of
 *   the leases) count as running, so a dead instance's share counts until
 *   its jobs are recovered.
 * - rate: the string key counts the jobs taken in the current window; the
 *   first take after a window ended starts the next one (PEXPIRE period).
 * Refusals that only read come first, so a refused call changes nothing. */
static const char qw_lua_fetch[] =
    QW_LUA_CHECK
    QW_LUA_BURY
    "if redis.call('EXISTS', KEYS[7]) == 1 then return {ok = 'PAUSED'} end\n"
    "local err = check(KEYS[1], 'list') or check(KEYS[2], 'list') or check(KEYS[3], 'hash')\n"
    "if err then return err end\n"
    "local n = tonumber(ARGV[1])\n"
    "local bf, rn, gc = tonumber(ARGV[7]), tonumber(ARGV[9]), tonumber(ARGV[11])\n"
    "local flow, bstate, bfrom, trial, wait = bf > 0 or rn > 0 or gc > 0, '-', '-', false, 0\n"
    "local function said(w) return {{ok = 'flow ' .. bstate .. ' ' .. bfrom .. ' ' .. w}} end\n"
    "local b\n"
    "if bf > 0 then\n"
    "  err = check(KEYS[8], 'hash')\n"
    "  if err then return err end\n"
    "  b = redis.call('HMGET', KEYS[8], 'state', 'until', 'trial', 'trial_key')\n"
    "  bstate = b[1] or 'closed'\n"
    "  if bstate == 'open' then\n"
    "    local t = redis.call('TIME')\n"
    "    local left = (tonumber(b[2]) or 0) - (t[1] * 1000 + math.floor(t[2] / 1000))\n"
    "    if left > 0 then return said(left) end\n"
    "  elseif bstate == 'half-open' and b[3] and b[4] and redis.call('TYPE', b[4])['ok'] == 'hash'\n"
    "      and redis.call('HEXISTS', b[4], b[3]) == 1 then\n"
    "    return said(ARGV[13])\n"
    "  end\n"
    "end\n"
    "if gc > 0 then\n"
    "  err = check(KEYS[10], 'zset')\n"
    "  if err then return err end\n"
    "  local busy = 0\n"
    "  for _, i in ipairs(redis.call('ZRANGE', KEYS[10], 0, -1)) do\n"
    "    local k = ARGV[12] .. i\n"
    "    if redis.call('TYPE', k)['ok'] == 'hash' then busy = busy + redis.call('HLEN', k) end\n"
    "  end\n"
    "  if busy >= gc then return said(ARGV[13]) end\n"
    "  if gc - busy < n then n, wait = gc - busy, tonumber(ARGV[13]) end\n"
    "end\n"
    "if rn > 0 then\n"
    "  err = check(KEYS[9], 'string')\n"
    "  if err then return err end\n"
    "  local used = tonumber(redis.call('GET', KEYS[9]) or '0') or rn\n"
    "  local left = redis.call('PTTL', KEYS[9])\n"
    "  if left == -1 then redis.call('DEL', KEYS[9]); used = 0 end\n"
    "  if used >= rn then return said(math.max(left, 1)) end\n"
    "  if rn - used <= n then n, wait = rn - used, math.max(wait, left > 0 and left or tonumber(ARGV[10])) end\n"
    "end\n"
    "if bf > 0 and bstate ~= 'closed' then\n"
    "  if bstate == 'open' then\n"
    "    bstate, bfrom = 'half-open', 'open'\n"
    "    redis.call('HSET', KEYS[8], 'state', 'half-open')\n"
    "  end\n"
    "  redis.call('HDEL', KEYS[8], 'trial', 'trial_key')\n"
    "  n, trial, wait = 1, true, math.max(wait, tonumber(ARGV[13]))\n"
    "end\n"
    "local seq = tonumber(ARGV[2])\n"
    "local maxp, maxj = tonumber(ARGV[4]), tonumber(ARGV[5])\n"
    "local out, big, nc, np = {}, {}, 0, 0\n"
    "local checked, why = false, nil\n"
    "local function take(e)\n"
    "  if #e > maxp and (#e > maxj or not string.find(e, '^%s*{')) then\n"
    "    if not checked then\n"
    "      checked = true\n"
    "      why = check(KEYS[4], 'list') or check(KEYS[5], 'hash')\n"
    "    end\n"
    "    if why then return false end\n"
    "    big[#big + 1] = e\n"
    "  else\n"
    "    out[#out + 1] = e\n"
    "  end\n"
    "  return true\n"
    "end\n"
    "local c = redis.call('LRANGE', KEYS[2], -n, -1)\n"
    "for i = #c, 1, -1 do\n"
    "  if not take(c[i]) then break end\n"
    "  nc = nc + 1\n"
    "end\n"
    "while not why and #out < n and #big < 100 do\n"
    "  local want = n - #out\n"
    "  local p = redis.call('LRANGE', KEYS[1], -(np + want), -(np + 1))\n"
    "  for i = #p, 1, -1 do\n"
    "    if not take(p[i]) then break end\n"
    "    np = np + 1\n"
    "  end\n"
    "  if #p < want then break end\n"
    "end\n"
    "if why and #out == 0 then return why end\n"
    "for i = 1, #out, 500 do\n"
    "  local args = {}\n"
    "  for j = i, math.min(i + 499, #out) do\n"
    "    args[#args + 1] = ARGV[3] .. string.format('%d', seq + j - 1)\n"
    "    args[#args + 1] = out[j]\n"
    "  end\n"
    "  redis.call('HSET', KEYS[3], unpack(args))\n"
    "end\n"
    "if #big > 0 then\n"
    "  local t = redis.call('TIME')\n"
    "  local now = t[1] * 1000 + math.floor(t[2] / 1000)\n"
    "  for i = 1, #big do\n"
    "    redis.call('LPUSH', KEYS[4], bury(big[i], now, KEYS[6]))\n"
    "    big[i] = false\n"
    "  end\n"
    "  local cap = tonumber(ARGV[6])\n"
    "  if cap > 0 then redis.call('LTRIM', KEYS[4], 0, cap - 1) end\n"
    "  redis.call('HINCRBY', KEYS[5], 'dead', #big)\n"
    "end\n"
    "if nc > 0 then redis.call('LTRIM', KEYS[2], 0, -(nc + 1)) end\n"
    "if np > 0 then redis.call('LTRIM', KEYS[1], 0, -(np + 1)) end\n"
    "local took = #out\n"
    "if took > 0 and rn > 0 then\n"
    "  redis.call('INCRBY', KEYS[9], took)\n"
    "  if redis.call('PTTL', KEYS[9]) < 0 then redis.call('PEXPIRE', KEYS[9], ARGV[10]) end\n"
    "end\n"
    "if took > 0 and trial then\n"
    "  redis.call('HSET', KEYS[8], 'trial', ARGV[3] .. string.format('%d', seq), 'trial_key', KEYS[3])\n"
    "end\n"
    "if #big > 0 then out[#out + 1] = #big end\n"
    "if flow then out[#out + 1] = said(wait)[1] end\n"
    "return out\n";

/* Like QW_LUA_CHECK, but says what is wrong instead of refusing: nil when
 * key K is absent or a WANT. */
#define QW_LUA_WRONG \
    "local function wrong(k, want)\n" \
    "  local t = redis.call('TYPE', k)['ok']\n" \
    "  if t ~= 'none' and t ~= want then return k .. ' holds a ' .. t .. ', not a ' .. want end\n" \
    "end\n"

/* KEYS: active, pending, scheduled, dead, stats, leases, unique, cancel,
 * breaker. ARGV: dead_max, guard, the breaker ("N COOLDOWN-MS", '' when
 * off), its events, the number N of owed counts, N pairs (counter, count),
 * the number U of holds to end, U triples (field, id, token), the number of
 * succeeded jobs K, their K fields, then per other job five values: field,
 * where ('p' pending tail, 's' scheduled, 'd' dead, '' nowhere), element,
 * delay in ms, counters to bump (space separated). A job whose field is
 * gone (settled already, or recovered by another instance) is skipped, so
 * a batch sent twice changes nothing the second time. GUARD names the dead
 * instance whose jobs these are: when its lease is live again the batch
 * does nothing and returns -1. Succeeded jobs, the bulk of the work, cost
 * one HDEL for the lot. A job that leaves the active hash leaves the cancel
 * hash too, in the same step: an operator's request to cancel it has been
 * carried out, or came too late (the cancel hash costs one TYPE when it
 * does not exist, and is left alone when it holds another type).
 *
 * A job that was to go back on pending or into scheduled (a retry, a
 * shutdown's requeue, a recovery) and has a request is not moved: it stays
 * in the active hash and comes back in the reply with the reason, and the
 * daemon sends it again as dead, cancelled (qw_cancel_settled), which
 * deletes the request. So a request that came in the half second before
 * the instance read it is not lost, the job does not run again, and the
 * daemon alone writes envelopes. A job that succeeded or goes to dead
 * anyway keeps its result. This costs one HMGET for the batch's jobs that
 * go back, and nothing for the succeeded ones.
 *
 * A job that leaves for good (done or dead) with a unique_for hold comes
 * with a triple: its hold ends in the same step that removes it, and only
 * when it does (release, above). Such a job goes with the five values
 * even when it succeeded, so that the script knows it was there. Plain
 * jobs pay nothing for this: U is 0 and no job is looked up.
 *
 * A key of the wrong type breaks only what needs it (SPEC 10): the active
 * hash, which every result needs, fails the call with an error naming it;
 * a job whose pending, scheduled or dead key is wrong stays in the active
 * hash untouched (never in two keys, never in none), and counts that stats
 * cannot take are handed back. Returns {written, wrong keys (bits: 1
 * pending, 2 scheduled, 4 dead, 8 stats), why, {fields held}, {counter,
 * count, ...} owed, breaker move ("FROM TO" or ''), {field, reason, ...}
 * of the jobs to cancel}.
 *
 * The circuit breaker (flow.h): EVENTS lists the results of this batch that
 * count for it, in the order they came, as "+FIELD" (success) or "-FIELD"
 * (a failed run that counts). Only the results this call writes count (a
 * batch sent twice counts once): while closed, a success resets the count
 * of failures in a row and N of them open it for COOLDOWN-MS; half-open,
 * the trial job's result closes or opens it; results of jobs that started
 * before it opened are ignored. A breaker closed with no failure in a row
 * has no hash: most results of a healthy queue write nothing. */
static const char qw_lua_settle[] =
    QW_LUA_WRONG
    QW_LUA_RELEASE
    "local w = wrong(KEYS[1], 'hash')\n"
    "if w then return redis.error_reply('WRONGTYPE ' .. w) end\n"
    "local t = redis.call('TIME')\n"
    "local now = t[1] * 1000 + math.floor(t[2] / 1000)\n"
    "if ARGV[2] ~= '' then\n"
    "  w = wrong(KEYS[6], 'zset')\n"
    "  if w then return redis.error_reply('WRONGTYPE ' .. w) end\n"
    "  local s = redis.call('ZSCORE', KEYS[6], ARGV[2])\n"
    "  if s and tonumber(s) > now then return -1 end\n"
    "end\n"
    "local bad, why, mask = {}, {}, 0\n"
    "local wants, bits = {'list', 'zset', 'list', 'hash'}, {1, 2, 4, 8}\n"
    "for i = 1, 4 do\n"
    "  w = wrong(KEYS[i + 1], wants[i])\n"
    "  if w then bad[i + 1] = true; why[#why + 1] = w; mask = mask + bits[i] end\n"
    "end\n"
    "local evs = {}\n"
    "if ARGV[3] ~= '' then\n"
    "  for sign, f in string.gmatch(ARGV[4], '([+-])(%S+)') do\n"
    "    if redis.call('HEXISTS', KEYS[1], f) == 1 then evs[#evs + 1] = {sign, f} end\n"
    "  end\n"
    "end\n"
    "local counts, dead, done, held = {}, 0, 0, {}\n"
    "local cx = redis.call('TYPE', KEYS[8])['ok'] == 'hash'\n"
    "local n = tonumber(ARGV[5])\n"
    "for i = 6, 5 + 2 * n, 2 do counts[ARGV[i]] = (counts[ARGV[i]] or 0) + tonumber(ARGV[i + 1]) end\n"
    "local base = 6 + 2 * n\n"
    "local u, rel = tonumber(ARGV[base]), nil\n"
    "if u > 0 then\n"
    "  rel = {}\n"
    "  for j = base + 1, base + 3 * u, 3 do rel[ARGV[j]] = j end\n"
    "end\n"
    "base = base + 1 + 3 * u\n"
    "local k = tonumber(ARGV[base])\n"
    "if k > 0 then\n"
    "  done = redis.call('HDEL', KEYS[1], unpack(ARGV, base + 1, base + k))\n"
    "  if cx then redis.call('HDEL', KEYS[8], unpack(ARGV, base + 1, base + k)) end\n"
    "  if done > 0 then counts['succeeded'] = (counts['succeeded'] or 0) + done end\n"
    "end\n"
    "local asked, cancels = {}, {}\n"
    "if cx then\n"
    "  local fs = {}\n"
    "  for i = base + 1 + k, #ARGV, 5 do\n"
    "    if ARGV[i + 1] == 'p' or ARGV[i + 1] == 's' then\n"
    "      fs[#fs + 1] = ARGV[i]\n"
    "    end\n"
    "  end\n"
    "  if #fs > 0 then\n"
    "    local v = redis.call('HMGET', KEYS[8], unpack(fs))\n"
    "    for j = 1, #fs do if v[j] then asked[fs[j]] = v[j] end end\n"
    "  end\n"
    "end\n"
    "local dests = {p = 2, s = 3, d = 4}\n"
    "for i = base + 1 + k, #ARGV, 5 do\n"
    "  if redis.call('HEXISTS', KEYS[1], ARGV[i]) == 1 then\n"
    "    local w = ARGV[i + 1]\n"
    "    if asked[ARGV[i]] then\n"
    "      cancels[#cancels + 1] = ARGV[i]\n"
    "      cancels[#cancels + 1] = asked[ARGV[i]]\n"
    "    elseif dests[w] and bad[dests[w]] then held[#held + 1] = ARGV[i]\n"
    "    else\n"
    "      if w == 'p' then redis.call('RPUSH', KEYS[2], ARGV[i + 2])\n"
    "      elseif w == 's' then\n"
    "        redis.call('ZADD', KEYS[3], now + tonumber(ARGV[i + 3]), ARGV[i + 2])\n"
    "      elseif w == 'd' then\n"
    "        redis.call('LPUSH', KEYS[4], ARGV[i + 2])\n"
    "        dead = dead + 1\n"
    "      end\n"
    "      redis.call('HDEL', KEYS[1], ARGV[i])\n"
    "      if cx then redis.call('HDEL', KEYS[8], ARGV[i]) end\n"
    "      local j = rel and rel[ARGV[i]]\n"
    "      if j then release(KEYS[7], ARGV[j + 1], ARGV[j + 2]) end\n"
    "      for c in string.gmatch(ARGV[i + 4], '%S+') do counts[c] = (counts[c] or 0) + 1 end\n"
    "      done = done + 1\n"
    "    end\n"
    "  end\n"
    "end\n"
    "local cap = tonumber(ARGV[1])\n"
    "if dead > 0 and cap > 0 then redis.call('LTRIM', KEYS[4], 0, cap - 1) end\n"
    "local owed = {}\n"
    "for c, v in pairs(counts) do\n"
    "  if bad[5] then owed[#owed + 1] = c; owed[#owed + 1] = v\n"
    "  else redis.call('HINCRBY', KEYS[5], c, v) end\n"
    "end\n"
    "local moved = ''\n"
    "if #evs > 0 and not wrong(KEYS[9], 'hash') then\n"
    "  local thr, cool = string.match(ARGV[3], '^(%d+) (%d+)$')\n"
    "  local b = redis.call('HMGET', KEYS[9], 'state', 'failures', 'trial')\n"
    "  local st, fails, trial = b[1] or 'closed', tonumber(b[2]) or 0, b[3]\n"
    "  local from = st\n"
    "  for _, e in ipairs(evs) do\n"
    "    if redis.call('HEXISTS', KEYS[1], e[2]) == 0 then\n"
    "      if st == 'closed' then\n"
    "        fails = e[1] == '+' and 0 or fails + 1\n"
    "        if fails >= tonumber(thr) then st = 'open' end\n"
    "      elseif st == 'half-open' and e[2] == trial then\n"
    "        st = e[1] == '+' and 'closed' or 'open'\n"
    "        if st == 'closed' then fails = 0 end\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "  if st == 'closed' and fails == 0 then\n"
    "    if b[1] or b[2] then redis.call('DEL', KEYS[9]) end\n"
    "  elseif st ~= from or fails ~= (tonumber(b[2]) or 0) then\n"
    "    redis.call('HSET', KEYS[9], 'state', st, 'failures', fails)\n"
    "  end\n"
    "  if st ~= from then\n"
    "    moved = from .. ' ' .. st\n"
    "    redis.call('HDEL', KEYS[9], 'trial', 'trial_key')\n"
    "    if st == 'open' then redis.call('HSET', KEYS[9], 'until', now + tonumber(cool))\n"
    "    else redis.call('HDEL', KEYS[9], 'until') end\n"
    "  end\n"
    "end\n"
    "return {done, mask, table.concat(why, '; '), held, owed, moved, cancels}\n";

/* KEYS: scheduled, pending. ARGV: limit. Moves due jobs, earliest first, so
 * the earliest is nearest the tail that workers take from (pending is
 * needed only when some are due). */
static const char qw_lua_promote[] =
    QW_LUA_CHECK
    "local err = check(KEYS[1], 'zset')\n"
    "if err then return err end\n"
    "local t = redis.call('TIME')\n"
    "local now = t[1] * 1000 + math.floor(t[2] / 1000)\n"
    "local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))\n"
    "if #due > 0 then\n"
    "  err = check(KEYS[2], 'list')\n"
    "  if err then return err end\n"
    "  redis.call('LPUSH', KEYS[2], unpack(due))\n"
    "  redis.call('ZREM', KEYS[1], unpack(due))\n"
    "end\n"
    "return #due\n";

/* KEYS: cron hash, pending. ARGV: cron name, tick (Unix ms), the job's
 * envelope without its closing brace, how far ahead of the Redis clock a
 * tick may be (ms). Enqueues the tick's job only when the tick is later
 * than the one the hash holds for the name, and records it, in one step:
 * every instance calls it at every tick and exactly one job results. A
 * tick further ahead of the Redis clock than allowed is refused, so an
 * instance whose clock runs fast cannot take later ticks from the others.
 * Returns {1 enqueued | 0 done by another | -1 refused, Redis time}. */
static const char qw_lua_cron[] =
    QW_LUA_CHECK
    "local err = check(KEYS[1], 'hash') or check(KEYS[2], 'list')\n"
    "if err then return err end\n"
    "local t = redis.call('TIME')\n"
    "local now = t[1] * 1000 + math.floor(t[2] / 1000)\n"
    "local tick = tonumber(ARGV[2])\n"
    "if tick > now + tonumber(ARGV[4]) then return {-1, now} end\n"
    "local last = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '')\n"
    "if last and last >= tick then return {0, now} end\n"
    "redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])\n"
    "redis.call('LPUSH', KEYS[2], ARGV[3] .. ',\"enqueued_at\":' .. string.format('%d', now) .. '}')\n"
    "return {1, now}\n";

/* KEYS: claim, pending. Gives never-started jobs back to the tail of
 * pending, oldest nearest the tail, so they run next (pending is needed
 * only when there are some). */
static const char qw_lua_unclaim[] =
    QW_LUA_CHECK
    "local err = check(KEYS[1], 'list')\n"
    "if err then return err end\n"
    "local items = redis.call('LRANGE', KEYS[1], 0, 999)\n"
    "if #items > 0 then\n"
    "  err = check(KEYS[2], 'list')\n"
    "  if err then return err end\n"
    "  redis.call('RPUSH', KEYS[2], unpack(items))\n"
    "  redis.call('LTRIM', KEYS[1], #items, -1)\n"
    "end\n"
    "return #items\n";

/* The lease scripts run even while Redis is over maxmemory (Redis 7's
 * allow-oom flag): an instance whose renewal Redis refused would lose its
 * lease and be reaped while it runs its jobs. Renewing rewrites a score and
 * a hash value in place, so it takes next to no memory. Redis before 7.0
 * does not know the shebang: redis.c then loads the script without it. */
#define QW_LUA_ALLOW_OOM "#!lua flags=allow-oom\n"

/* KEYS: leases, holders. ARGV: instance, lease ms, our holder info.
 * Renews the instance's lease only while it is ours: held by our holder
 * info and not expired. Then returns {1, up to 10 instances whose lease has
 * expired}. Otherwise we have been fenced and it changes nothing: returns
 * {0, holder info or '', ms left (<= 0 expired, -1 no lease)}. */
static const char qw_lua_lease[] =
    QW_LUA_ALLOW_OOM
    "local t = redis.call('TIME')\n"
    "local now = t[1] * 1000 + math.floor(t[2] / 1000)\n"
    "local s = redis.call('ZSCORE', KEYS[1], ARGV[1])\n"
    "local h = redis.call('HGET', KEYS[2], ARGV[1])\n"
    "if not s or tonumber(s) <= now or h ~= ARGV[3] then\n"
    "  return {0, h or '', s and tonumber(s) - now or -1}\n"
    "end\n"
    "redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])\n"
    "return {1, redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. now, 'LIMIT', 0, 10)}\n";

/* KEYS: leases, holders. ARGV: instance, lease ms, our holder info, the
 * holder info of a process we proved gone (or ''). Takes the instance's
 * lease in one step (compare-and-set) when it is absent, expired, ours
 * already, or held by exactly that gone process: two processes with one
 * instance name can never both take it. Returns {1 taken or 0 not, the
 * holder info found or '', ms left on its lease (-1 no lease)}. */
static const char qw_lua_take[] =
    QW_LUA_ALLOW_OOM
    "local t = redis.call('TIME')\n"
    "local now = t[1] * 1000 + math.floor(t[2] / 1000)\n"
    "local s = redis.call('ZSCORE', KEYS[1], ARGV[1])\n"
    "local h = redis.call('HGET', KEYS[2], ARGV[1]) or ''\n"
    "local left = s and tonumber(s) - now or -1\n"
    "if left > 0 and h ~= ARGV[3] and (ARGV[4] == '' or h ~= ARGV[4]) then\n"
    "  return {0, h, left}\n"
    "end\n"
    "redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])\n"
    "redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])\n"
    "return {1, h, left}\n";

/* KEYS: active, started of an instance. ARGV: our run id, or '' when the
 * instance is another. Reads the instance's in-flight jobs with, for each
 * run of it, the highest sequence number it said it started (see
 * qw_pool_say_started): {HGETALL active, HGETALL started}. Our own run id
 * is entered with 0 first, so that its absence marks a run of an older
 * qworkerd, whose jobs all count as started. */
static const char qw_lua_inflight[] =
    QW_LUA_CHECK
    "local err = check(KEYS[1], 'hash') or check(KEYS[2], 'hash')\n"
    "if err then return err end\n"
    "if ARGV[1] ~= '' then redis.call('HSETNX', KEYS[2], ARGV[1], 0) end\n"
    "return {redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2])}\n";

/* KEYS: leases, holders, active, claim, started of an instance, pending. ARGV:
 * instance, 'expired' or 'ours', our holder info (with 'ours'). Gives the
 * instance's claimed (never started) jobs back to the tail of pending, then
 * drops its lease once it holds no job; with 'expired' only while the lease
 * is still expired, with 'ours' only while we hold it (a process fenced
 * unawares must not drop the lease of the one that took its name over).
 * Pending is needed (and its type checked) only when there are claimed
 * jobs to give back, so a wrong pending does not keep a drained instance's
 * lease. The instance's started marks go with its lease.
 * Returns 1 when dropped (or already gone), 0 while jobs remain, -1 when
 * the instance is alive again, 2 when another process holds it. */
static const char qw_lua_forget[] =
    QW_LUA_CHECK
    "local err = check(KEYS[1], 'zset') or check(KEYS[2], 'hash') or check(KEYS[3], 'hash')\n"
    "  or check(KEYS[4], 'list')\n"
    "if err then return err end\n"
    "local t = redis.call('TIME')\n"
    "local now = t[1] * 1000 + math.floor(t[2] / 1000)\n"
    "local s = redis.call('ZSCORE', KEYS[1], ARGV[1])\n"
    "if s and ARGV[2] == 'expired' and tonumber(s) > now then return -1 end\n"
    "local h = redis.call('HGET', KEYS[2], ARGV[1])\n"
    "if ARGV[2] == 'ours' and h and h ~= ARGV[3] then return 2 end\n"
    "local c = redis.call('LRANGE', KEYS[4], 0, -1)\n"
    "if #c > 0 then\n"
    "  err = check(KEYS[6], 'list')\n"
    "  if err then return err end\n"
    "  for i = 1, #c, 500 do\n"
    "    redis.call('RPUSH', KEYS[6], unpack(c, i, math.min(i + 499, #c)))\n"
    "  end\n"
    "  redis.call('DEL', KEYS[4])\n"
    "end\n"
    "if redis.call('HLEN', KEYS[3]) > 0 or redis.call('LLEN', KEYS[4]) > 0 then\n"
    "  return s and 0 or 1\n"
    "end\n"
    "redis.call('DEL', KEYS[5])\n"
    "if not s then return 1 end\n"
    "redis.call('ZREM', KEYS[1], ARGV[1])\n"
    "redis.call('HDEL', KEYS[2], ARGV[1])\n"
    "return 1\n";

/* qworkerctl's changes (SPEC 11), each one script so that a job is in
 * exactly one key even while a daemon settles or fetches it at the same
 * moment: a job is moved only when it is still where qworkerctl read it.
 *
 * KEYS: from, to, stats, unique. ARGV: what from is ('head': a list
 * searched from its head, 'tail': from its tail, 'zset'), mode ('tail': to
 * the tail of the list to, as a retry; 'dead': to the head of the dead list
 * to, cut to dead_max; 'none': removed),
 * dead_max, counters to raise per job moved (space separated), then per
 * job four values: the member as read, the member to write, and its
 * unique_for hold (id and token, or two '') that ends with it. Returns per
 * job 1 moved or 0 not there any more (taken, settled or moved meanwhile).
 * A list is searched from the end its jobs were read from, so that moving
 * a whole list costs about one step per job, not one pass over the list. */
const char qw_ctl_lua_move[] =
    QW_LUA_CHECK
    QW_LUA_RELEASE
    "local from, mode = ARGV[1], ARGV[2]\n"
    "local rank = from == 'tail' and -1 or 1\n"
    "local err = check(KEYS[1], from == 'zset' and 'zset' or 'list')\n"
    "  or (mode ~= 'none' and check(KEYS[2], 'list'))\n"
    "  or check(KEYS[3], 'hash')\n"
    "if err then return err end\n"
    "local out, moved, dead = {}, 0, 0\n"
    "for i = 5, #ARGV, 4 do\n"
    "  local old, here = ARGV[i], nil\n"
    "  if from ~= 'zset' then here = redis.call('LPOS', KEYS[1], old, 'RANK', rank)\n"
    "  else here = redis.call('ZSCORE', KEYS[1], old) end\n"
    "  if here then\n"
    "    if mode == 'tail' then redis.call('RPUSH', KEYS[2], ARGV[i + 1])\n"
    "    elseif mode == 'dead' then\n"
    "      redis.call('LPUSH', KEYS[2], ARGV[i + 1])\n"
    "      dead = dead + 1\n"
    "    end\n"
    "    if from ~= 'zset' then redis.call('LREM', KEYS[1], rank, old)\n"
    "    else redis.call('ZREM', KEYS[1], old) end\n"
    "    if ARGV[i + 2] ~= '' then release(KEYS[4], ARGV[i + 2], ARGV[i + 3]) end\n"
    "    moved = moved + 1\n"
    "    out[#out + 1] = 1\n"
    "  else\n"
    "    out[#out + 1] = 0\n"
    "  end\n"
    "end\n"
    "local cap = tonumber(ARGV[3])\n"
    "if dead > 0 and cap > 0 then redis.call('LTRIM', KEYS[2], 0, cap - 1) end\n"
    "if moved > 0 then\n"
    "  for c in string.gmatch(ARGV[4], '%S+') do redis.call('HINCRBY', KEYS[3], c, moved) end\n"
    "end\n"
    "return out\n";

/* KEYS: the active hash of the instance that runs the job, cancel. ARGV:
 * the job's field in it, the reason. Asks for the cancel of a running job
 * (the daemon that runs it reads the cancel hash) while the job is still
 * in flight: returns 1, or 0 when it has been settled meanwhile. */
const char qw_ctl_lua_cancel[] =
    QW_LUA_CHECK
    "local err = check(KEYS[1], 'hash') or check(KEYS[2], 'hash')\n"
    "if err then return err end\n"
    "if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end\n"
    "redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])\n"
    "return 1\n";

/* KEYS: cancel, active (ours), leases. ARGV: the HSCAN cursor where the
 * last sweep stopped, the queue's key prefix (PREFIX:{Q}:, to which the
 * keys of each instance add "active:NAME" and "started:NAME"). Returns
 * {{field, reason, ...} of the requests for jobs in our active hash, how
 * many stale requests it deleted, the cursor for the next call}. It costs
 * one TYPE while the cancel hash does not exist, as it mostly does.
 *
 * Our requests are looked up by our own fields (HMGET), so their cost
 * follows the jobs we hold, not the size of the hash. The sweep then takes
 * one HSCAN page of the hash (about 1000 fields; all of a small hash) and
 * deletes the requests whose field is in no active hash of an instance
 * with a lease, live or expired: the job ended, was recovered (which
 * carries out its request), or never was. An instance's runs are the
 * fields of its started hash (qw_pool_say_started); an instance without
 * one (a qworkerd older than the started marks) has each field looked up
 * in its active hash. An instance whose lease expired keeps its requests
 * until its jobs are recovered, so that the recovery finds them. */
static const char qw_lua_cancels[] =
    QW_LUA_CHECK
    "if redis.call('TYPE', KEYS[1])['ok'] == 'none' then return {{}, 0, '0'} end\n"
    "local err = check(KEYS[1], 'hash') or check(KEYS[2], 'hash') or check(KEYS[3], 'zset')\n"
    "if err then return err end\n"
    "local out, gone = {}, 0\n"
    "local mine = redis.call('HKEYS', KEYS[2])\n"
    "for i = 1, #mine, 1000 do\n"
    "  local j = math.min(i + 999, #mine)\n"
    "  local v = redis.call('HMGET', KEYS[1], unpack(mine, i, j))\n"
    "  for n = i, j do\n"
    "    local why = v[n - i + 1]\n"
    "    if why then out[#out + 1] = mine[n]; out[#out + 1] = why end\n"
    "  end\n"
    "end\n"
    "local page = redis.call('HSCAN', KEYS[1], ARGV[1], 'COUNT', 1000)\n"
    "local runs, blind\n"
    "local function where()\n"
    "  runs, blind = {}, {}\n"
    "  for _, inst in ipairs(redis.call('ZRANGE', KEYS[3], 0, -1)) do\n"
    "    local sk = ARGV[2] .. 'started:' .. inst\n"
    "    if redis.call('TYPE', sk)['ok'] == 'hash' then\n"
    "      for _, run in ipairs(redis.call('HKEYS', sk)) do runs[run] = inst end\n"
    "    else\n"
    "      blind[#blind + 1] = inst\n"
    "    end\n"
    "  end\n"
    "end\n"
    "local function held(inst, f)\n"
    "  local ak = ARGV[2] .. 'active:' .. inst\n"
    "  local t = redis.call('TYPE', ak)['ok']\n"
    "  return t ~= 'none' and (t ~= 'hash' or redis.call('HEXISTS', ak, f) == 1)\n"
    "end\n"
    "local f = page[2]\n"
    "for i = 1, #f, 2 do\n"
    "  if not runs then where() end\n"
    "  local run = string.match(f[i], '^(.*%-)%d+$')\n"
    "  local live = run and runs[run] and held(runs[run], f[i])\n"
    "  for n = 1, #blind do live = live or held(blind[n], f[i]) end\n"
    "  if not live then\n"
    "    redis.call('HDEL', KEYS[1], f[i])\n"
    "    gone = gone + 1\n"
    "  end\n"
    "end\n"
    "return {out, gone, page[1]}\n";

/* The Redis function library "qworkerd" (Redis 7, SPEC 11): the producers'
 * function qw_enqueue, and qw_version, which says which version of the
 * library Redis holds (library.c loads ours only over an older one).
 *
 * FCALL qw_enqueue 1 PENDING-KEY PAYLOAD [OPTION VALUE]... enqueues PAYLOAD
 * on the queue whose pending key is given, as an envelope (SPEC 3), and
 * returns its id; see qworkerd-jobs(7), "THE qw_enqueue FUNCTION". Every
 * option is checked before anything is written: a bad one is an error that
 * names it and its value, and adds nothing. The other keys of the queue
 * are derived from the pending key, so they share its hash tag (a Redis
 * Cluster slot).
 *
 * Only the library's top level runs at FUNCTION LOAD, where Redis offers
 * no standard library (string, math): it only defines functions. */
#define QW_LUA_STR(x) #x
#define QW_LUA_NUM(x) QW_LUA_STR(x)
const char qw_library_code[] =
    "#!lua name=" QW_LIBRARY_NAME "\n"
    "local VERSION = " QW_LUA_NUM(QW_LIBRARY_VERSION) "\n"
    QW_LUA_CHECK
    QW_LUA_BASE64
    "local MAX_MS = 315360000000\n"
    "local function fail(why)\n"
    "  return redis.error_reply('ERR qw_enqueue: ' .. why)\n"
    "end\n"
    /* An option's value, in an error: quoted, cut at 64 bytes, control and
     * non-ASCII bytes as \xNN, so the error reads well whatever was sent. */
    "local function shown(v)\n"
    "  local s = string.gsub(string.sub(v, 1, 64), \"[%c'\\\\\\128-\\255]\", function(c)\n"
    "    return string.format('\\\\x%02x', string.byte(c))\n"
    "  end)\n"
    "  return \"'\" .. s .. (#v > 64 and \"'...\" or \"'\")\n"
    "end\n"
    /* Whether S is UTF-8 as jansson takes it (no overlong forms, no
     * surrogates, nothing past U+10FFFF). Anything that is not goes in
     * base64: cjson copies such bytes as they are, and the daemon would
     * then not read the envelope as JSON at all. */
    "local function utf8_ok(s)\n"
    "  local i = 1\n"
    "  while true do\n"
    "    i = string.find(s, '[\\128-\\255]', i)\n"
    "    if not i then return true end\n"
    "    local c, c2 = string.byte(s, i, i + 1)\n"
    "    local n, lo, hi = 0, 128, 191\n"
    "    if c >= 194 and c <= 223 then n = 2\n"
    "    elseif c >= 224 and c <= 239 then n = 3\n"
    "    elseif c >= 240 and c <= 244 then n = 4\n"
    "    else return false end\n"
    "    if c == 224 then lo = 160 elseif c == 237 then hi = 159\n"
    "    elseif c == 240 then lo = 144 elseif c == 244 then hi = 143 end\n"
    "    if not c2 or c2 < lo or c2 > hi then return false end\n"
    "    for j = i + 2, i + n - 1 do\n"
    "      local cj = string.byte(s, j)\n"
    "      if not cj or cj < 128 or cj > 191 then return false end\n"
    "    end\n"
    "    i = i + n\n"
    "  end\n"
    "end\n"
    /* A payload goes in base64 when it is not UTF-8, holds a NUL byte, or
     * has so many control bytes that JSON escapes (six bytes each) would
     * make it more than half as long again, as qworkerd does (job.c). */
    "local function binary(s)\n"
    "  if string.find(s, '%z') or not utf8_ok(s) then return true end\n"
    "  local _, nc = string.gsub(s, '%c', '')\n"
    "  return nc * 5 > #s / 2 + 16\n"
    "end\n"
    /* Each option: what reads its value (nil when it is bad) and what the
     * value must be, for the error. Timeouts and ranges as SPEC 3; delays
     * and holds up to ten years. */
    "local function whole(lo, hi)\n"
    "  return function(v)\n"
    "    local n = string.match(v, '^%d+$') and #v <= 15 and tonumber(v)\n"
    "    if n and n >= lo and n <= hi then return n end\n"
    "  end\n"
    "end\n"
    "local options = {\n"
    "  id = { function(v)\n"
    "    if #v >= 1 and #v <= 200 and not string.find(v, '%c') and utf8_ok(v) then return v end\n"
    "  end, 'a string of 1 to 200 bytes of UTF-8 without control characters' },\n"
    "  delay = { whole(0, MAX_MS), 'an integer of milliseconds from 0 to ' .. MAX_MS },\n"
    "  timeout = { function(v)\n"
    "    local n = (string.match(v, '^%d+$') or string.match(v, '^%d+%.%d+$')) and #v <= 32 and tonumber(v)\n"
    "    if n and n > 0 and n <= 31536000 then return n end\n"
    "  end, 'a number of seconds > 0 and <= 31536000' },\n"
    "  max_attempts = { whole(1, 1000000), 'an integer from 1 to 1000000' },\n"
    "  unique_for = { whole(1, MAX_MS), 'an integer of milliseconds from 1 to ' .. MAX_MS },\n"
    "}\n"
    /* The options after the payload, in any order and any case; nil and the
     * error when one is bad. */
    "local function parse(args)\n"
    "  local o = {}\n"
    "  for i = 2, #args, 2 do\n"
    "    local name = string.lower(args[i])\n"
    "    local opt = options[name]\n"
    "    if not opt then\n"
    "      return nil, fail('unknown option ' .. shown(args[i]) ..\n"
    "        ' (options: id, delay, timeout, max_attempts, unique_for)')\n"
    "    end\n"
    "    if args[i + 1] == nil then return nil, fail('option ' .. name .. ' needs a value') end\n"
    "    if o[name] ~= nil then return nil, fail('option ' .. name .. ' given twice') end\n"
    "    o[name] = opt[1](args[i + 1])\n"
    "    if o[name] == nil then\n"
    "      return nil, fail('option ' .. name .. ' ' .. shown(args[i + 1]) .. ' must be ' .. opt[2])\n"
    "    end\n"
    "  end\n"
    "  if o.unique_for and not o.id then return nil, fail('option unique_for needs option id') end\n"
    "  return o\n"
    "end\n"
    /* Redis 7.0 has no expiry per hash field: a hold whose time passed
     * counts as absent, and each enqueue with unique_for deletes the ones
     * of a few fields picked at random, so that the hash stays as small as
     * the holds that live. */
    "local function sweep(ukey, id, now)\n"
    "  local f = redis.call('HRANDFIELD', ukey, 3, 'WITHVALUES')\n"
    "  for i = 1, #f, 2 do\n"
    "    if f[i] ~= id and (tonumber(string.match(f[i + 1], '^%d+')) or 0) <= now then\n"
    "      redis.call('HDEL', ukey, f[i])\n"
    "    end\n"
    "  end\n"
    "end\n"
    /* The envelope, members in a fixed order. "unique" is the job's hold,
     * the value it has in the unique hash (its end, a colon, and a number
     * unique in the queue), by which the daemon ends it (release, above);
     * "seq" keeps two delayed jobs with one id apart in the sorted set. */
    "local function envelope(payload, id, o, now, n)\n"
    "  local e\n"
    "  if binary(payload) then\n"
    "    e = { '{\"payload_encoding\":\"base64\",\"payload\":\"', base64(payload), '\"' }\n"
    "  else\n"
    "    e = { '{\"payload\":', cjson.encode(payload) }\n"
    "  end\n"
    "  e[#e + 1] = ',\"id\":' .. cjson.encode(id) .. ',\"enqueued_at\":' .. string.format('%d', now)\n"
    "  if o.timeout then e[#e + 1] = ',\"timeout\":' .. cjson.encode(o.timeout) end\n"
    "  if o.max_attempts then e[#e + 1] = ',\"max_attempts\":' .. string.format('%d', o.max_attempts) end\n"
    "  if o.unique_for then e[#e + 1] = string.format(',\"unique\":\"%d:%d\"', now + o.unique_for, n) end\n"
    "  if o.id and o.delay then e[#e + 1] = string.format(',\"seq\":%d', n) end\n"
    "  e[#e + 1] = '}'\n"
    "  return table.concat(e)\n"
    "end\n"
    /* The seq counter gives generated ids (with the server time, so a
     * deleted counter repeats none), holds their token, and delayed jobs
     * with a given id their seq. */
    "local function enqueue(keys, args)\n"
    "  if #keys ~= 1 then return fail('takes 1 key, the pending key of a queue, not ' .. #keys) end\n"
    "  local base, q = string.match(keys[1], '^(.*:{([^{}]*)}):pending$')\n"
    "  if not base or #q > 64 or not string.match(q, '^[%w_.%-]+$') then\n"
    "    return fail(shown(keys[1]) .. ' is not the pending key of a queue (PREFIX:{QUEUE}:pending,' ..\n"
    "      ' QUEUE 1 to 64 of A-Z a-z 0-9 _ . -)')\n"
    "  end\n"
    "  if args[1] == nil then return fail('no payload') end\n"
    "  local o, why = parse(args)\n"
    "  if not o then return why end\n"
    "  if o.delay == 0 then o.delay = nil end\n"
    "  local ukey, skey = base .. ':unique', base .. ':seq'\n"
    "  local dest = o.delay and base .. ':scheduled' or keys[1]\n"
    "  local counted = not o.id or o.unique_for or o.delay\n"
    "  local err = check(dest, o.delay and 'zset' or 'list') or\n"
    "    (o.unique_for and check(ukey, 'hash')) or (counted and check(skey, 'string'))\n"
    "  if err then return err end\n"
    "  local t = redis.call('TIME')\n"
    "  local now = t[1] * 1000 + math.floor(t[2] / 1000)\n"
    "  if o.unique_for then\n"
    "    local held = redis.call('HGET', ukey, o.id)\n"
    "    if held and (tonumber(string.match(held, '^%d+')) or 0) > now then\n"
    "      sweep(ukey, o.id, now)\n"
    "      return o.id\n"
    "    end\n"
    "  end\n"
    "  local n = counted and redis.call('INCR', skey)\n"
    "  local id = o.id or string.format('%d-%d', now, n)\n"
    "  local e = envelope(args[1], id, o, now, n)\n"
    "  if o.delay then redis.call('ZADD', dest, now + o.delay, e)\n"
    "  else redis.call('LPUSH', dest, e) end\n"
    "  if o.unique_for then\n"
    "    sweep(ukey, o.id, now)\n"
    "    redis.call('HSET', ukey, o.id, string.format('%d:%d', now + o.unique_for, n))\n"
    "  end\n"
    "  return id\n"
    "end\n"
    "redis.register_function('qw_enqueue', enqueue)\n"
    "redis.register_function{function_name = 'qw_version', callback = function() return VERSION end,\n"
    "  flags = { 'no-writes' }}\n";

const char *const qw_scripts[QW_SCRIPT_COUNT] = {
	[QW_SCRIPT_FETCH] = qw_lua_fetch,
	[QW_SCRIPT_SETTLE] = qw_lua_settle,
	[QW_SCRIPT_PROMOTE] = qw_lua_promote,
	[QW_SCRIPT_UNCLAIM] = qw_lua_unclaim,
	[QW_SCRIPT_LEASE] = qw_lua_lease,
	[QW_SCRIPT_TAKE] = qw_lua_take,
	[QW_SCRIPT_FORGET] = qw_lua_forget,
	[QW_SCRIPT_INFLIGHT] = qw_lua_inflight,
	[QW_SCRIPT_CRON] = qw_lua_cron,
	[QW_SCRIPT_CANCELS] = qw_lua_cancels,
};

const char *const qw_script_names[QW_SCRIPT_COUNT] = {
	[QW_SCRIPT_FETCH] = "fetch",
	[QW_SCRIPT_SETTLE] = "settle",
	[QW_SCRIPT_PROMOTE] = "promote",
	[QW_SCRIPT_UNCLAIM] = "unclaim",
	[QW_SCRIPT_LEASE] = "lease",
	[QW_SCRIPT_TAKE] = "take",
	[QW_SCRIPT_FORGET] = "forget",
	[QW_SCRIPT_INFLIGHT] = "inflight",
	[QW_SCRIPT_CRON] = "cron",
	[QW_SCRIPT_CANCELS] = "cancels",
};
