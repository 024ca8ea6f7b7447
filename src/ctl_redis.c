/* ctl_redis.c - owns qworkerctl's one blocking connection: the address,
 * db and password as the daemon takes them from its configuration file
 * (conf.c), or -a; and what a failure means as an exit status. */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include "conf.h"
#include "ctl.h"

static const char *
qw_ctl_address(const struct qw_ctl *ctl)
{
	if (ctl->address != NULL)
		return ctl->address;
	if (ctl->master[0] != '\0')
		return ctl->master;
	return ctl->conf != NULL ? ctl->conf->redis_address : "127.0.0.1:6379";
}

/* The first line of PATH into *OUT (malloc'd); -1 with errno set when it
 * cannot be read, or is empty (errno 0). */
static int
qw_ctl_read_pass(const char *path, char **out)
{
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	FILE *f;

	if ((f = fopen(path, "r")) == NULL)
		return -1;
	n = getline(&line, &cap, f);
	fclose(f);
	while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
		line[--n] = '\0';
	if (n <= 0) {
		free(line);
		errno = 0;
		return -1;
	}
	*out = line;
	return 0;
}

/* Where the password is when the configuration names none: with -a and no
 * configuration file, $CREDENTIALS_DIRECTORY/redis.pass as the daemon reads
 * it; outside systemd, the credential store its unit loads it from
 * (qworkerd.service: qworkerd.redis.pass; qworkerd@NAME.service, whose
 * configuration is NAME.conf: qworkerd@NAME.redis.pass). A store we may
 * not read is remembered for the error message. */
static void
qw_ctl_find_password(struct qw_ctl *ctl)
{
	static const char *const stores[] = { "/etc/credstore", "/run/credstore" };
	const char *dir = getenv("CREDENTIALS_DIRECTORY"), *base;
	char path[4096], unit[512];
	size_t blen;

	if (ctl->conf != NULL && (ctl->conf->password != NULL || ctl->conf->password_file != NULL))
		return;
	if (dir != NULL) {
		if (ctl->conf == NULL && snprintf(path, sizeof(path), "%s/redis.pass", dir) <
		    (int)sizeof(path))
			qw_ctl_read_pass(path, &ctl->password);
		return;
	}
	base = strrchr(ctl->conf_path, '/');
	base = base ? base + 1 : ctl->conf_path;
	blen = strlen(base);
	if (blen > 5 && strcmp(base + blen - 5, ".conf") == 0)
		blen -= 5;
	if (blen == 8 && strncmp(base, "qworkerd", 8) == 0)
		snprintf(unit, sizeof(unit), "qworkerd");
	else
		snprintf(unit, sizeof(unit), "qworkerd@%.*s", (int)blen, base);
	for (size_t i = 0; i < sizeof(stores) / sizeof(stores[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s.redis.pass", stores[i], unit);
		if (qw_ctl_read_pass(path, &ctl->password) == 0)
			return;
		if (errno == EACCES && ctl->cred_hint[0] == '\0')
			snprintf(ctl->cred_hint, sizeof(ctl->cred_hint), " (the password in %s is "
			    "readable only by its owner: run qworkerctl as root)", path);
	}
}

static redisContext *
qw_ctl_open(const char *addr, struct timeval tv)
{
	char host[256];
	const char *colon;
	size_t hlen;

	if (strncmp(addr, "unix:", 5) == 0)
		return redisConnectUnixWithTimeout(addr + 5, tv);
	colon = strrchr(addr, ':');
	if (colon == NULL)
		return NULL;
	hlen = (size_t)(colon - addr);
	if (hlen >= 2 && addr[0] == '[' && addr[hlen - 1] == ']') {
		addr++;
		hlen -= 2;
	}
	if (hlen >= sizeof(host))
		return NULL;
	memcpy(host, addr, hlen);
	host[hlen] = '\0';
	return redisConnectWithTimeout(host, atoi(colon + 1), tv);
}

/* AUTH, SELECT and a PING that proves both worked. */
static int
qw_ctl_hello(struct qw_ctl *ctl, const char *password, unsigned db)
{
	redisReply *r;

	if (password != NULL) {
		r = redisCommand(ctl->c, "AUTH %s", password);
		if (r == NULL || r->type == REDIS_REPLY_ERROR)
			goto fail;
		freeReplyObject(r);
	}
	if (db != 0) {
		r = redisCommand(ctl->c, "SELECT %u", db);
		if (r == NULL || r->type == REDIS_REPLY_ERROR)
			goto fail;
		freeReplyObject(r);
	}
	r = redisCommand(ctl->c, "PING");
	if (r == NULL || r->type == REDIS_REPLY_ERROR)
		goto fail;
	freeReplyObject(r);
	return 0;
fail:
	ctl->fail = qw_ctl_fail(ctl, r, NULL);
	if (r != NULL)
		freeReplyObject(r);
	return ctl->fail;
}

/* Asks sentinel ADDR which master NAME is; writes "host:port" into
 * ctl->master, or why not into WHY. */
static int
qw_ctl_ask_sentinel(struct qw_ctl *ctl, const char *addr, struct timeval tv, char *why,
    size_t len)
{
	const struct qw_conf *c = ctl->conf;
	redisContext *s = qw_ctl_open(addr, tv);
	redisReply *r = NULL;
	int rc = -1;

	if (s == NULL || s->err) {
		snprintf(why, len, "%s: %s", addr, s ? s->errstr : "not an address");
		goto out;
	}
	redisSetTimeout(s, tv);
	if (c->sentinel_password != NULL) {
		r = redisCommand(s, "AUTH %s", c->sentinel_password);
		if (r == NULL || r->type == REDIS_REPLY_ERROR) {
			snprintf(why, len, "%s: AUTH: %s", addr, r ? r->str : s->errstr);
			goto out;
		}
		freeReplyObject(r);
	}
	r = redisCommand(s, "SENTINEL get-master-addr-by-name %s", c->master_name);
	if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
		snprintf(why, len, "%s: %s", addr, r == NULL ? s->errstr :
		    r->type == REDIS_REPLY_ERROR ? r->str : "it knows no such master");
		goto out;
	}
	snprintf(ctl->master, sizeof(ctl->master), strchr(r->element[0]->str, ':') ?
	    "[%s]:%s" : "%s:%s", r->element[0]->str, r->element[1]->str);
	rc = 0;
out:
	if (r != NULL)
		freeReplyObject(r);
	if (s != NULL)
		redisFree(s);
	return rc;
}

/* With [redis] sentinels: the master's address, from the first sentinel
 * that names it (as qworkerd finds it, SPEC 15). */
static int
qw_ctl_find_master(struct qw_ctl *ctl, struct timeval tv)
{
	char why[512] = "no sentinel answered";

	if (ctl->address != NULL || ctl->conf == NULL || ctl->conf->nsentinels == 0)
		return 0;
	for (size_t i = 0; i < ctl->conf->nsentinels; i++)
		if (qw_ctl_ask_sentinel(ctl, ctl->conf->sentinels[i], tv, why, sizeof(why)) == 0)
			return 0;
	char *e = qw_ctl_escape(why, strlen(why));
	qw_ctl_err("redis master %s (via Sentinel): no sentinel named its address; the last "
	    "said %s", ctl->conf->master_name, e ? e : "?");
	free(e);
	return QW_CTL_UNAVAILABLE;
}

int
qw_ctl_connect(struct qw_ctl *ctl)
{
	struct timeval tv = { (time_t)(ctl->timeout_ms / 1000),
		(suseconds_t)(ctl->timeout_ms % 1000 * 1000) };
	const char *addr, *pw;
	int rc;

	if ((rc = qw_ctl_find_master(ctl, tv)) != 0)
		return rc;
	addr = qw_ctl_address(ctl);
	qw_ctl_find_password(ctl);
	pw = ctl->conf != NULL && ctl->conf->password != NULL ? ctl->conf->password : ctl->password;
	ctl->c = qw_ctl_open(addr, tv);
	if (ctl->c == NULL) {
		qw_ctl_err("redis %s: not an address (host:port or unix:/path)", addr);
		return QW_CTL_USAGE;
	}
	if (ctl->c->err) {
		qw_ctl_err("redis %s: cannot connect: %s", addr, ctl->c->errstr);
		return QW_CTL_UNAVAILABLE;
	}
	redisSetTimeout(ctl->c, tv);
	return qw_ctl_hello(ctl, pw, ctl->conf != NULL ? ctl->conf->db : 0);
}

void
qw_ctl_disconnect(struct qw_ctl *ctl)
{
	if (ctl->c != NULL)
		redisFree(ctl->c);
	ctl->c = NULL;
	if (ctl->password != NULL)
		explicit_bzero(ctl->password, strlen(ctl->password));
	free(ctl->password);
	ctl->password = NULL;
}

/* Which exit status an error reply stands for, by its first word. */
static int
qw_ctl_error_status(const char *err)
{
	static const char *const temp[] = { "LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN",
		"READONLY", "CLUSTERDOWN", "OOM" };
	static const char *const refused[] = { "NOAUTH", "WRONGPASS", "NOPERM" };

	for (size_t i = 0; i < sizeof(temp) / sizeof(temp[0]); i++)
		if (strncmp(err, temp[i], strlen(temp[i])) == 0)
			return QW_CTL_TEMPFAIL;
	for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++)
		if (strncmp(err, refused[i], strlen(refused[i])) == 0)
			return QW_CTL_UNAVAILABLE;
	return QW_CTL_DATAERR;
}

int
qw_ctl_fail(struct qw_ctl *ctl, const redisReply *reply, const char *what)
{
	int timed_out = reply == NULL && ctl->c->err == REDIS_ERR_IO && errno == EAGAIN;
	/* What failed and Redis's error may quote any bytes: escaped. */
	char *ew = what ? qw_ctl_escape(what, strlen(what)) : NULL, *why = NULL;
	int st;

	if (reply == NULL) {
		st = timed_out ? QW_CTL_TEMPFAIL :
		    QW_CTL_UNAVAILABLE;
		why = strdup(st == QW_CTL_TEMPFAIL ? "no reply in time (see --timeout)" :
		    ctl->c->errstr[0] ? ctl->c->errstr : "no reply");
	} else if (reply->type != REDIS_REPLY_ERROR) {
		st = QW_CTL_DATAERR;
		if (asprintf(&why, "unexpected reply of type %d", reply->type) < 0)
			why = NULL;
	} else {
		st = qw_ctl_error_status(reply->str);
		why = qw_ctl_escape(reply->str, reply->len);
	}
	qw_ctl_err("redis %s: %s%s%s%s", qw_ctl_address(ctl), ew ? ew : "", ew ? ": " : "",
	    why ? why : "?", st == QW_CTL_UNAVAILABLE && reply ? ctl->cred_hint : "");
	free(ew);
	free(why);
	return st;
}

redisReply *
qw_ctl_cmd(struct qw_ctl *ctl, const char *fmt, ...)
{
	char what[512];
	redisReply *r;
	va_list ap, copy;

	va_start(ap, fmt);
	va_copy(copy, ap);
	r = redisvCommand(ctl->c, fmt, ap);
	va_end(ap);
	if (r == NULL || r->type == REDIS_REPLY_ERROR) {
		/* The command in the message names the key that failed it
		 * (WRONGTYPE says only that some key has the wrong type). */
		int saved = errno;
		vsnprintf(what, sizeof(what), fmt, copy);
		errno = saved;
		ctl->fail = qw_ctl_fail(ctl, r, what);
		va_end(copy);
		if (r != NULL)
			freeReplyObject(r);
		return NULL;
	}
	va_end(copy);
	return r;
}

redisReply *
qw_ctl_cmdv_raw(struct qw_ctl *ctl, int argc, const char **argv, const size_t *lens)
{
	return redisCommandArgv(ctl->c, argc, argv, lens);
}

int64_t
qw_ctl_now(struct qw_ctl *ctl)
{
	redisReply *r = qw_ctl_cmd(ctl, "TIME");
	int64_t now = -1;

	if (r == NULL)
		return -1;
	if (r->type == REDIS_REPLY_ARRAY && r->elements == 2)
		now = strtoll(r->element[0]->str, NULL, 10) * 1000 +
		    strtoll(r->element[1]->str, NULL, 10) / 1000;
	freeReplyObject(r);
	return now;
}

const char *
qw_ctl_key(struct qw_ctl *ctl, char *buf, size_t len, const char *queue, enum qw_key which,
    const char *instance)
{
	if (qw_keys_instance(buf, len, ctl->prefix, queue, which, instance) < 0)
		snprintf(buf, len, "?");
	return buf;
}
