/* ctl.c - qworkerctl(1): owns the command line (SPEC 11). Options before
 * the command are global; after it, the command's own and the global ones
 * may come in any order among its words. Every command talks to Redis
 * directly, so it works while no daemon runs. */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf.h"
#include "ctl.h"

#ifndef QW_DEFAULT_CONF
#define QW_DEFAULT_CONF "/etc/qworkerd/qworkerd.conf"
#endif

enum qw_ctl_cmd { C_STATUS, C_LS, C_SHOW, C_ENQUEUE, C_RETRY, C_DELETE, C_PAUSE, C_RESUME,
	C_CANCEL, C_INSTANCES, C_COUNT };

static const struct {
	const char *name;
	int (*fn)(struct qw_ctl *);
	int min, max;		/* words after the command; max -1: any */
	const char *usage;
} qw_ctl_cmds[C_COUNT] = {
	[C_STATUS] = { "status", qw_ctl_status, 0, 0, "status" },
	[C_LS] = { "ls", qw_ctl_ls, 2, 2, "ls QUEUE pending|scheduled|running|dead [-n N]" },
	[C_SHOW] = { "show", qw_ctl_show, 2, 2, "show QUEUE ID" },
	[C_ENQUEUE] = { "enqueue", qw_ctl_enqueue, 1, 2, "enqueue QUEUE [--id ID] [--delay DUR] "
	    "[--timeout DUR] [--max-attempts N] [--unique-for DUR] [PAYLOAD|-]" },
	[C_RETRY] = { "retry", qw_ctl_retry, 1, -1, "retry QUEUE ID...|--all" },
	[C_DELETE] = { "delete", qw_ctl_delete, 2, -1,
	    "delete QUEUE pending|scheduled|dead ID...|--all --yes" },
	[C_PAUSE] = { "pause", qw_ctl_pause, 1, 1, "pause QUEUE" },
	[C_RESUME] = { "resume", qw_ctl_resume, 1, 1, "resume QUEUE" },
	[C_CANCEL] = { "cancel", qw_ctl_cancel, 2, 2, "cancel QUEUE ID [--reason TEXT]" },
	[C_INSTANCES] = { "instances", qw_ctl_instances, 0, 0, "instances" },
};

enum qw_ctl_opt { O_CONF, O_ADDR, O_PREFIX, O_JSON, O_TIMEOUT, O_HELP, O_VERSION, O_N, O_ALL,
	O_YES, O_ID, O_DELAY, O_JOB_TIMEOUT, O_MAX_ATTEMPTS, O_UNIQUE_FOR, O_REASON, O_COUNT };

#define ANY (~0u)
#define ONLY(c) (1u << (c))

static const struct {
	const char *lng;
	char shrt;
	bool arg;
	unsigned cmds;		/* which commands take it after their name */
} qw_ctl_opts[O_COUNT] = {
	[O_CONF] = { "config", 'c', true, ANY },
	[O_ADDR] = { "address", 'a', true, ANY },
	[O_PREFIX] = { "prefix", 0, true, ANY },
	[O_JSON] = { "json", 0, false, ANY },
	[O_TIMEOUT] = { "timeout", 0, true, ANY & ~ONLY(C_ENQUEUE) },
	[O_HELP] = { "help", 'h', false, ANY },
	[O_VERSION] = { "version", 0, false, 0 },
	[O_N] = { NULL, 'n', true, ONLY(C_LS) },
	[O_ALL] = { "all", 0, false, ONLY(C_RETRY) | ONLY(C_DELETE) },
	[O_YES] = { "yes", 0, false, ONLY(C_DELETE) },
	[O_ID] = { "id", 0, true, ONLY(C_ENQUEUE) },
	[O_DELAY] = { "delay", 0, true, ONLY(C_ENQUEUE) },
	[O_JOB_TIMEOUT] = { "timeout", 0, true, ONLY(C_ENQUEUE) },
	[O_MAX_ATTEMPTS] = { "max-attempts", 0, true, ONLY(C_ENQUEUE) },
	[O_UNIQUE_FOR] = { "unique-for", 0, true, ONLY(C_ENQUEUE) },
	[O_REASON] = { "reason", 0, true, ONLY(C_CANCEL) },
};

static void
qw_ctl_usage(FILE *f)
{
	fputs("usage: qworkerctl [-c FILE] [-a ADDRESS] [--prefix P] [--json] [--timeout DUR] "
	    "COMMAND [ARGS]\ncommands:\n", f);
	for (int i = 0; i < C_COUNT; i++)
		fprintf(f, "  %s\n", qw_ctl_cmds[i].usage);
	fputs("See qworkerctl(1).\n", f);
}

static int qw_ctl_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int
qw_ctl_usage_error(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	qw_ctl_verr(fmt, ap);
	va_end(ap);
	qw_ctl_usage(stderr);
	return QW_CTL_USAGE;
}

/* Which option ARG names for command CMD (C_COUNT: before the command),
 * or O_COUNT. *INLINE gets a value written into the word ("--id=7",
 * "-n5"). */
static enum qw_ctl_opt
qw_ctl_find_opt(const char *arg, int cmd, const char **inline_val)
{
	unsigned bit = cmd == C_COUNT ? 0 : ONLY(cmd);

	*inline_val = NULL;
	for (int o = 0; o < O_COUNT; o++) {
		bool here = cmd == C_COUNT ? (qw_ctl_opts[o].cmds == ANY || o == O_TIMEOUT ||
		    o == O_VERSION) : (qw_ctl_opts[o].cmds & bit) != 0;
		if (!here)
			continue;
		if (arg[1] == '-' && qw_ctl_opts[o].lng != NULL) {
			size_t n = strlen(qw_ctl_opts[o].lng);
			if (strncmp(arg + 2, qw_ctl_opts[o].lng, n) == 0 &&
			    (arg[2 + n] == '\0' || (arg[2 + n] == '=' && qw_ctl_opts[o].arg))) {
				*inline_val = arg[2 + n] == '=' ? arg + 3 + n : NULL;
				return (enum qw_ctl_opt)o;
			}
		} else if (arg[1] != '-' && qw_ctl_opts[o].shrt != 0 && arg[1] == qw_ctl_opts[o].shrt &&
		    (arg[2] == '\0' || qw_ctl_opts[o].arg)) {
			*inline_val = arg[2] != '\0' ? arg + 2 : NULL;
			return (enum qw_ctl_opt)o;
		}
	}
	return O_COUNT;
}

static int
qw_ctl_set_opt(struct qw_ctl *ctl, enum qw_ctl_opt o, const char *v)
{
	char *end;
	uint64_t ms;

	switch (o) {
	case O_CONF: ctl->conf_path = v; ctl->conf_given = true; return 0;
	case O_ADDR: ctl->address = v; return 0;
	case O_PREFIX:
		if (*v == '\0' || strpbrk(v, " \t{}") != NULL)
			return qw_ctl_usage_error("--prefix '%s': may not be empty or hold spaces or "
			    "braces", v);
		ctl->prefix = v;
		return 0;
	case O_JSON: ctl->json = true; return 0;
	case O_TIMEOUT:
		if (qw_conf_parse_duration(v, &ms) < 0 || ms == 0 || ms > 3600000)
			return qw_ctl_usage_error("--timeout '%s': not a duration from 1ms to 1h "
			    "(such as 5s or 250ms)", v);
		ctl->timeout_ms = ms;
		return 0;
	case O_N:
		errno = 0;
		ctl->n = strtol(v, &end, 10);
		if (errno != 0 || *end != '\0' || end == v || ctl->n < 0)
			return qw_ctl_usage_error("-n '%s': not a whole number (0: all)", v);
		return 0;
	case O_ALL: ctl->all = true; return 0;
	case O_YES: ctl->yes = true; return 0;
	case O_ID: ctl->id = v; return 0;
	case O_DELAY: ctl->delay = v; return 0;
	case O_JOB_TIMEOUT: ctl->job_timeout = v; return 0;
	case O_MAX_ATTEMPTS: ctl->max_attempts = v; return 0;
	case O_UNIQUE_FOR: ctl->unique_for = v; return 0;
	case O_REASON: ctl->reason = v; return 0;
	default: return QW_CTL_USAGE;
	}
}

/* Parses argv into CTL; returns the command, or -1 with *RC the exit
 * status (0 after --help). */
static int
qw_ctl_parse(struct qw_ctl *ctl, int argc, char **argv, int *rc)
{
	int cmd = C_COUNT;
	bool opts = true;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *val;
		enum qw_ctl_opt o;

		if (opts && strcmp(a, "--") == 0) {
			opts = false;
			continue;
		}
		if (opts && a[0] == '-' && a[1] != '\0') {
			if ((o = qw_ctl_find_opt(a, cmd, &val)) == O_COUNT) {
				*rc = qw_ctl_usage_error(cmd == C_COUNT ? "unknown option %s" :
				    "unknown option %s for this command", a);
				return -1;
			}
			if (o == O_HELP || o == O_VERSION) {
				if (o == O_HELP)
					qw_ctl_usage(stdout);
				else
					puts("qworkerctl " PACKAGE_VERSION);
				*rc = 0;
				return -1;
			}
			if (qw_ctl_opts[o].arg && val == NULL) {
				if (i + 1 >= argc) {
					*rc = qw_ctl_usage_error("option %s needs a value", a);
					return -1;
				}
				val = argv[++i];
			}
			if ((*rc = qw_ctl_set_opt(ctl, o, val)) != 0)
				return -1;
		} else if (cmd == C_COUNT) {
			for (cmd = 0; cmd < C_COUNT && strcmp(qw_ctl_cmds[cmd].name, a) != 0; cmd++)
				;
			if (cmd == C_COUNT) {
				*rc = qw_ctl_usage_error("unknown command '%s'", a);
				return -1;
			}
		} else {
			ctl->args[ctl->nargs++] = argv[i];
		}
	}
	if (cmd == C_COUNT) {
		*rc = qw_ctl_usage_error("%s", "no command given");
		return -1;
	}
	if (ctl->nargs < qw_ctl_cmds[cmd].min ||
	    (qw_ctl_cmds[cmd].max >= 0 && ctl->nargs > qw_ctl_cmds[cmd].max)) {
		fprintf(stderr, "qworkerctl: %s: wrong number of arguments\nusage: qworkerctl %s\n",
		    qw_ctl_cmds[cmd].name, qw_ctl_cmds[cmd].usage);
		*rc = QW_CTL_USAGE;
		return -1;
	}
	return cmd;
}

/* The configuration: -c, or the default unless -a is given; a default
 * file that does not exist means the defaults. */
static int
qw_ctl_load_conf(struct qw_ctl *ctl)
{
	char *err = NULL;

	if (!ctl->conf_given && (ctl->address != NULL || access(ctl->conf_path, F_OK) < 0))
		return 0;
	if (qw_conf_load_client(ctl->conf_path, &ctl->conf, &err) < 0) {
		qw_ctl_err("%s", err ? err : "out of memory");
		free(err);
		return QW_CTL_CONFIG;
	}
	return 0;
}

int
main(int argc, char **argv)
{
	struct qw_ctl ctl = { .conf_path = QW_DEFAULT_CONF, .timeout_ms = 5000, .n = -1 };
	int rc = 0, cmd;

	if ((ctl.args = calloc((size_t)argc, sizeof(*ctl.args))) == NULL)
		return QW_CTL_TEMPFAIL;
	if ((cmd = qw_ctl_parse(&ctl, argc, argv, &rc)) < 0)
		goto out;
	if ((rc = qw_ctl_load_conf(&ctl)) != 0)
		goto out;
	if (ctl.prefix == NULL)
		ctl.prefix = ctl.conf != NULL ? ctl.conf->prefix : "qw";
	if ((rc = qw_ctl_connect(&ctl)) != 0)
		goto out;
	rc = qw_ctl_cmds[cmd].fn(&ctl);
	if (fflush(stdout) != 0 && rc == 0)
		rc = QW_CTL_TEMPFAIL;
out:
	qw_ctl_disconnect(&ctl);
	qw_conf_free(ctl.conf);
	free(ctl.args);
	return rc;
}
