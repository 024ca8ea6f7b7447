/* scripts.h - the Lua scripts that move jobs between keys atomically, and
 * the Redis function library for producers. */
#ifndef QW_SCRIPTS_H
#define QW_SCRIPTS_H

#include "redis.h"

extern const char *const qw_scripts[QW_SCRIPT_COUNT];
extern const char *const qw_script_names[QW_SCRIPT_COUNT];

/* The function library (Redis 7.0 or later) that holds qw_enqueue and
 * qw_version, as FUNCTION LOAD takes it. QW_LIBRARY_VERSION goes up with
 * every change to it: library.c never replaces a newer one with ours. */
#define QW_LIBRARY_NAME "qworkerd"
#define QW_LIBRARY_VERSION 1
extern const char qw_library_code[];

/* qworkerctl's scripts (the comments in scripts.c say what each takes). */
extern const char qw_ctl_lua_move[];
extern const char qw_ctl_lua_cancel[];

#endif
