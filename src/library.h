/* library.h - loading the Redis function library "qworkerd" (qw_enqueue,
 * qw_version; its code is qw_library_code in scripts.c), shared by the
 * daemon (redis.c, at every connect) and qworkerctl (on demand). */
#ifndef QW_LIBRARY_H
#define QW_LIBRARY_H

#include <hiredis/hiredis.h>
#include <stddef.h>

/* FCALL qw_version 0: which version of the library Redis holds. */
extern const char *const qw_library_probe[3];
/* FUNCTION LOAD REPLACE with our library. */
extern const char *const qw_library_load[4];

enum qw_library_verdict {
	QW_LIBRARY_LOAD,	/* none there, an older or the same version: load ours */
	QW_LIBRARY_KEEP,	/* a newer version is there: leave it */
};

/* What to do, from the reply to qw_library_probe (NULL when none came).
 * *THEIRS gets the version Redis holds, 0 when it holds none (an error:
 * no such function, or a Redis before 7.0). */
enum qw_library_verdict qw_library_verdict(const redisReply *reply, long long *theirs);

/* REPLY's error for a log line or a message: what Redis said, without the
 * library's code that an "unknown command" error goes on to quote. */
void qw_library_error(const redisReply *reply, char *why, size_t len);

/* For qworkerctl: loads the library through C unless Redis holds a newer
 * one (blocking). Returns 0 when Redis holds this version or a newer one
 * afterwards, so FCALL qw_enqueue works; -1 otherwise, with the reason (the
 * connection's error or Redis's reply) in WHY. */
int qw_library_load_sync(redisContext *c, char *why, size_t len);

#endif
