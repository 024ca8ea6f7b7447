/* scripts.h - the Lua scripts that move jobs between keys atomically. */
#ifndef QW_SCRIPTS_H
#define QW_SCRIPTS_H

#include "redis.h"

extern const char *const qw_scripts[QW_SCRIPT_COUNT];
extern const char *const qw_script_names[QW_SCRIPT_COUNT];

#endif
