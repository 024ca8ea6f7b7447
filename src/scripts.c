/* scripts.c - owns the Lua side of the Redis protocol (qworkerd-jobs(7)).
 * Each script runs atomically, so a job is always in exactly one key: never
 * in two, never in none. Time comes from the Redis server (TIME) so every
 * instance compares due times and leases against one clock. */
#include "config.h"

#include "scripts.h"

/* KEYS: pending, claim, active. ARGV: n, first sequence number, field prefix.
 * Takes up to n jobs, those a blocking pop left in the claim list first,
 * and files each in the active hash under its sequence number. */
static const char qw_lua_fetch[] =
    "local n = tonumber(ARGV[1])\n"
    "local seq = tonumber(ARGV[2])\n"
    "local out = {}\n"
    "while #out < n do\n"
    "  local e = redis.call('RPOP', KEYS[2])\n"
    "  if not e then break end\n"
    "  out[#out + 1] = e\n"
    "end\n"
    "if #out < n then\n"
    "  local more = redis.call('RPOP', KEYS[1], n - #out)\n"
    "  if more then for i = 1, #more do out[#out + 1] = more[i] end end\n"
    "end\n"
    "if #out > 0 then\n"
    "  local args = {}\n"
    "  for i = 1, #out do\n"
    "    args[2 * i - 1] = ARGV[3] .. string.format('%d', seq + i - 1)\n"
    "    args[2 * i] = out[i]\n"
    "  end\n"
    "  redis.call('HSET', KEYS[3], unpack(args))\n"
    "end\n"
    "return out\n";

/* KEYS: active, pending, scheduled, dead, stats, leases. ARGV: dead_max,
 * guard, the number of succeeded jobs K, their K fields, then per other job
 * five values: field, where ('p' pending tail, 's' scheduled, 'd' dead),
 * element, delay in ms, counters to bump (space separated). A job whose
 * field is gone (settled already, or recovered by another instance) is
 * skipped, so a batch sent twice changes nothing the second time. GUARD
 * names the dead instance whose jobs these are: when its lease is live
 * again the batch does nothing and returns -1. Succeeded jobs, the bulk of
 * the work, cost one HDEL for the lot. */
static const char qw_lua_settle[] =
    "local t = redis.call('TIME')\n"
    "local now = t[1] * 1000 + math.floor(t[2] / 1000)\n"
    "if ARGV[2] ~= '' then\n"
    "  local s = redis.call('ZSCORE', KEYS[6], ARGV[2])\n"
    "  if s and tonumber(s) > now then return -1 end\n"
    "end\n"
    "local counts, dead, done = {}, 0, 0\n"
    "local k = tonumber(ARGV[3])\n"
    "if k > 0 then\n"
    "  done = redis.call('HDEL', KEYS[1], unpack(ARGV, 4, 3 + k))\n"
    "  if done > 0 then counts['succeeded'] = done end\n"
    "end\n"
    "for i = 4 + k, #ARGV, 5 do\n"
    "  if redis.call('HDEL', KEYS[1], ARGV[i]) == 1 then\n"
    "    local w = ARGV[i + 1]\n"
    "    if w == 'p' then redis.call('RPUSH', KEYS[2], ARGV[i + 2])\n"
    "    elseif w == 's' then\n"
    "      redis.call('ZADD', KEYS[3], now + tonumber(ARGV[i + 3]), ARGV[i + 2])\n"
    "    elseif w == 'd' then\n"
    "      redis.call('LPUSH', KEYS[4], ARGV[i + 2])\n"
    "      dead = dead + 1\n"
    "    end\n"
    "    for c in string.gmatch(ARGV[i + 4], '%S+') do counts[c] = (counts[c] or 0) + 1 end\n"
    "    done = done + 1\n"
    "  end\n"
    "end\n"
    "local cap = tonumber(ARGV[1])\n"
    "if dead > 0 and cap > 0 then redis.call('LTRIM', KEYS[4], 0, cap - 1) end\n"
    "for c, v in pairs(counts) do redis.call('HINCRBY', KEYS[5], c, v) end\n"
    "return done\n";

/* KEYS: scheduled, pending. ARGV: limit. Moves due jobs, earliest first, so
 * the earliest is nearest the tail that workers take from. */
static const char qw_lua_promote[] =
    "local t = redis.call('TIME')\n"
    "local now = t[1] * 1000 + math.floor(t[2] / 1000)\n"
    "local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))\n"
    "if #due > 0 then\n"
    "  redis.call('ZREM', KEYS[1], unpack(due))\n"
    "  redis.call('LPUSH', KEYS[2], unpack(due))\n"
    "end\n"
    "return #due\n";

/* KEYS: claim, pending. Gives never-started jobs back to the tail of
 * pending, oldest nearest the tail, so they run next. */
static const char qw_lua_unclaim[] =
    "local items = redis.call('LRANGE', KEYS[1], 0, 999)\n"
    "if #items > 0 then\n"
    "  redis.call('RPUSH', KEYS[2], unpack(items))\n"
    "  redis.call('LTRIM', KEYS[1], #items, -1)\n"
    "end\n"
    "return #items\n";

/* KEYS: leases, holders. ARGV: instance, lease ms, holder info.
 * Renews our lease and lists (up to 10) instances whose lease has expired. */
static const char qw_lua_lease[] =
    "local t = redis.call('TIME')\n"
    "local now = t[1] * 1000 + math.floor(t[2] / 1000)\n"
    "redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])\n"
    "redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])\n"
    "return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. now, 'LIMIT', 0, 10)\n";

/* KEYS: leases, holders. ARGV: instance. Who holds the instance's lease:
 * {ms left (<= 0: expired, -1 no lease), holder info or ''}. */
static const char qw_lua_check[] =
    "local t = redis.call('TIME')\n"
    "local now = t[1] * 1000 + math.floor(t[2] / 1000)\n"
    "local s = redis.call('ZSCORE', KEYS[1], ARGV[1])\n"
    "local h = redis.call('HGET', KEYS[2], ARGV[1])\n"
    "if not s then return {-1, h or ''} end\n"
    "local left = tonumber(s) - now\n"
    "if left < 0 then left = 0 end\n"
    "return {left, h or ''}\n";

/* KEYS: leases, holders, active, claim of an instance. ARGV: instance,
 * 'expired' or 'ours'. Drops the instance's lease once it holds no job;
 * with 'expired' only while the lease is still expired. Returns 1 when
 * dropped (or already gone), 0 while jobs remain, -1 when alive again. */
static const char qw_lua_forget[] =
    "local t = redis.call('TIME')\n"
    "local now = t[1] * 1000 + math.floor(t[2] / 1000)\n"
    "local s = redis.call('ZSCORE', KEYS[1], ARGV[1])\n"
    "if not s then return 1 end\n"
    "if ARGV[2] == 'expired' and tonumber(s) > now then return -1 end\n"
    "if redis.call('HLEN', KEYS[3]) > 0 or redis.call('LLEN', KEYS[4]) > 0 then return 0 end\n"
    "redis.call('ZREM', KEYS[1], ARGV[1])\n"
    "redis.call('HDEL', KEYS[2], ARGV[1])\n"
    "return 1\n";

const char *const qw_scripts[QW_SCRIPT_COUNT] = {
	[QW_SCRIPT_FETCH] = qw_lua_fetch,
	[QW_SCRIPT_SETTLE] = qw_lua_settle,
	[QW_SCRIPT_PROMOTE] = qw_lua_promote,
	[QW_SCRIPT_UNCLAIM] = qw_lua_unclaim,
	[QW_SCRIPT_LEASE] = qw_lua_lease,
	[QW_SCRIPT_CHECK] = qw_lua_check,
	[QW_SCRIPT_FORGET] = qw_lua_forget,
};

const char *const qw_script_names[QW_SCRIPT_COUNT] = {
	[QW_SCRIPT_FETCH] = "fetch",
	[QW_SCRIPT_SETTLE] = "settle",
	[QW_SCRIPT_PROMOTE] = "promote",
	[QW_SCRIPT_UNCLAIM] = "unclaim",
	[QW_SCRIPT_LEASE] = "lease",
	[QW_SCRIPT_CHECK] = "check",
	[QW_SCRIPT_FORGET] = "forget",
};
