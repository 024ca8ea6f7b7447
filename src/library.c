/* library.c - owns when the Redis function library is loaded: ours goes in
 * with FUNCTION LOAD REPLACE unless Redis holds a newer version, so that
 * instances of different versions against one Redis end with the newest
 * library, whatever order they connect in. That holds because a newer
 * library takes every call an older one took (keep it so). Asking and
 * loading are two commands: two instances of different versions that
 * connect in the same instant may leave the older library, until the
 * newer instance connects again. Closing that gap would need a lock around
 * FUNCTION LOAD, which no script can call. */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "library.h"
#include "scripts.h"

const char *const qw_library_probe[3] = { "FCALL", "qw_version", "0" };
const char *const qw_library_load[4] = { "FUNCTION", "LOAD", "REPLACE", qw_library_code };

enum qw_library_verdict
qw_library_verdict(const redisReply *reply, long long *theirs)
{
	*theirs = reply != NULL && reply->type == REDIS_REPLY_INTEGER ? reply->integer : 0;
	return *theirs > QW_LIBRARY_VERSION ? QW_LIBRARY_KEEP : QW_LIBRARY_LOAD;
}

void
qw_library_error(const redisReply *reply, char *why, size_t len)
{
	char *args;

	snprintf(why, len, "%.*s", (int)reply->len, reply->str);
	if ((args = strstr(why, ", with args beginning with")) != NULL)
		*args = '\0';
}

/* Sets WHY from REPLY (an error) or from the connection C. */
static void
qw_library_why(const redisContext *c, const redisReply *reply, char *why, size_t len)
{
	if (reply == NULL)
		snprintf(why, len, "%s", c->errstr[0] ? c->errstr : "no reply");
	else if (reply->type == REDIS_REPLY_ERROR)
		qw_library_error(reply, why, len);
	else
		snprintf(why, len, "unexpected reply of type %d", reply->type);
}

int
qw_library_load_sync(redisContext *c, char *why, size_t len)
{
	/* hiredis takes argv without the second const, and only reads it. */
	redisReply *reply = redisCommandArgv(c, 3, (const char **)qw_library_probe, NULL);
	long long theirs;
	enum qw_library_verdict v;
	int rc = -1;

	if (reply == NULL) {
		qw_library_why(c, NULL, why, len);
		return -1;
	}
	v = qw_library_verdict(reply, &theirs);
	freeReplyObject(reply);
	if (v == QW_LIBRARY_KEEP)
		return 0;
	reply = redisCommandArgv(c, 4, (const char **)qw_library_load, NULL);
	if (reply != NULL && reply->type == REDIS_REPLY_STRING)
		rc = 0;
	else
		qw_library_why(c, reply, why, len);
	if (reply != NULL)
		freeReplyObject(reply);
	return rc;
}
