/* keys.c - owns the names of a queue's keys: the daemon's scripts, the
 * daemon itself and qworkerctl all find a queue's keys through here, so a
 * key is spelled once. */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "conf.h"
#include "keys.h"

static const char *const qw_keys_words[QW_KEY_COUNT] = {
	[QW_KEY_PENDING] = "pending",
	[QW_KEY_CLAIM] = "claim",
	[QW_KEY_ACTIVE] = "active",
	[QW_KEY_SCHEDULED] = "scheduled",
	[QW_KEY_DEAD] = "dead",
	[QW_KEY_STATS] = "stats",
	[QW_KEY_LEASES] = "leases",
	[QW_KEY_HOLDERS] = "holders",
	[QW_KEY_STARTED] = "started",
	[QW_KEY_UNIQUE] = "unique",
	[QW_KEY_SEQ] = "seq",
	[QW_KEY_PAUSED] = "paused",
	[QW_KEY_CANCEL] = "cancel",
	[QW_KEY_BREAKER] = "breaker",
	[QW_KEY_RATE] = "rate",
};

const char *
qw_keys_word(enum qw_key which)
{
	return (unsigned)which < QW_KEY_COUNT ? qw_keys_words[which] : NULL;
}

bool
qw_keys_per_instance(enum qw_key which)
{
	return which == QW_KEY_CLAIM || which == QW_KEY_ACTIVE || which == QW_KEY_STARTED;
}

int
qw_keys_instance(char *buf, size_t len, const char *prefix, const char *queue,
    enum qw_key which, const char *instance)
{
	const char *w = qw_keys_word(which);
	int n;

	if (w == NULL)
		return -1;
	n = instance != NULL ? snprintf(buf, len, "%s:{%s}:%s:%s", prefix, queue, w, instance) :
	    snprintf(buf, len, "%s:{%s}:%s", prefix, queue, w);
	return n < 0 || (size_t)n >= len ? -1 : n;
}

int
qw_keys_name(char *buf, size_t len, const char *prefix, const char *queue, enum qw_key which)
{
	return qw_keys_instance(buf, len, prefix, queue, which, NULL);
}

/* Which kind WORD (LEN bytes) names, or QW_KEY_COUNT. */
static enum qw_key
qw_keys_kind(const char *word, size_t len)
{
	for (int k = 0; k < QW_KEY_COUNT; k++)
		if (strlen(qw_keys_words[k]) == len && memcmp(qw_keys_words[k], word, len) == 0)
			return (enum qw_key)k;
	return QW_KEY_COUNT;
}

int
qw_keys_split(const char *key, const char *prefix, char *queue, size_t qlen,
    enum qw_key *which, const char **instance)
{
	size_t plen = strlen(prefix), n;
	const char *q, *end, *word, *colon;

	if (strncmp(key, prefix, plen) != 0 || strncmp(key + plen, ":{", 2) != 0)
		return -1;
	q = key + plen + 2;
	if ((end = strchr(q, '}')) == NULL || end[1] != ':')
		return -1;
	n = (size_t)(end - q);
	if (n >= qlen)
		return -1;
	memcpy(queue, q, n);
	queue[n] = '\0';
	if (!qw_conf_valid_queue_name(queue))
		return -1;
	word = end + 2;
	colon = strchr(word, ':');
	*which = qw_keys_kind(word, colon ? (size_t)(colon - word) : strlen(word));
	if (*which == QW_KEY_COUNT || (colon != NULL) != qw_keys_per_instance(*which))
		return -1;
	*instance = colon ? colon + 1 : NULL;
	return 0;
}
