/* test_conf.c - unit tests for src/conf.c: the value parsers, word splitting,
 * queue names and whole qworkerd.conf(5) files (SPEC 7). */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

#include <cmocka.h>

#include "conf.h"

/* ------------------------------------------------------------------------ */
/* Helpers */

/* snprintf that fails the test instead of truncating. */
#define CHECKED_SNPRINTF(buf, ...) do { \
	int n_ = snprintf(buf, __VA_ARGS__); \
	assert_true(n_ >= 0 && (size_t)n_ < sizeof(buf)); \
} while (0)

static char tmpdir[PATH_MAX];

static int
rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static int
group_setup(void **state)
{
	const char *base = getenv("TMPDIR");

	(void)state;
	CHECKED_SNPRINTF(tmpdir, sizeof(tmpdir), "%s/qw-test-conf.XXXXXX",
	    base != NULL && *base != '\0' ? base : "/tmp");
	if (mkdtemp(tmpdir) == NULL) {
		perror("mkdtemp");
		return -1;
	}
	unsetenv("CREDENTIALS_DIRECTORY");
	return 0;
}

static int
group_teardown(void **state)
{
	(void)state;
	unsetenv("CREDENTIALS_DIRECTORY");
	return nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Per-test teardown: no test leaks its environment into the next one. */
static int
test_teardown(void **state)
{
	(void)state;
	unsetenv("CREDENTIALS_DIRECTORY");
	return 0;
}

/* Writes CONTENT to tmpdir/NAME with MODE; PATH gets the full name. */
static void
write_file(char *path, size_t size, const char *name, const char *content, mode_t mode)
{
	int fd, n;
	size_t len = strlen(content);

	n = snprintf(path, size, "%s/%s", tmpdir, name);
	assert_true(n > 0 && (size_t)n < size);
	unlink(path);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, content, len), (ssize_t)len);
	assert_int_equal(fchmod(fd, mode), 0);
	assert_int_equal(close(fd), 0);
}

static void
make_dir(char *path, size_t size, const char *name)
{
	int n = snprintf(path, size, "%s/%s", tmpdir, name);

	assert_true(n > 0 && (size_t)n < size);
	if (mkdir(path, 0755) < 0)
		assert_int_equal(errno, EEXIST);
}

/* Loads CONTENT as tmpdir/NAME and expects success. */
static struct qw_conf *
load_ok(const char *name, const char *content)
{
	char path[PATH_MAX];
	struct qw_conf *conf = NULL;
	char *err = NULL;
	int rc;

	write_file(path, sizeof(path), name, content, 0644);
	rc = qw_conf_load(path, &conf, &err);
	if (rc != 0)
		fail_msg("qw_conf_load failed: %s", err ? err : "(no message)");
	assert_null(err);
	assert_non_null(conf);
	assert_string_equal(conf->path, path);
	return conf;
}

/* Loads CONTENT and expects failure with "PATH:LINE: " followed by a
 * message that contains each of the NULL-terminated strings that follow.
 * LINE 0 means a message about the file as a whole: "PATH: ". */
static void
load_fails(const char *content, unsigned line, ...)
{
	char path[PATH_MAX], prefix[PATH_MAX + 32];
	struct qw_conf *conf = (struct qw_conf *)1;
	char *err = NULL;
	const char *want;
	va_list ap;
	int rc;

	write_file(path, sizeof(path), "bad.conf", content, 0644);
	rc = qw_conf_load(path, &conf, &err);
	if (rc == 0) {
		qw_conf_free(conf);
		fail_msg("qw_conf_load accepted a bad file (expected an error at line %u)", line);
	}
	assert_int_equal(rc, -1);
	assert_null(conf);
	assert_non_null(err);
	if (line != 0)
		CHECKED_SNPRINTF(prefix, sizeof(prefix), "%s:%u: ", path, line);
	else
		CHECKED_SNPRINTF(prefix, sizeof(prefix), "%s: ", path);
	if (strncmp(err, prefix, strlen(prefix)) != 0) {
		print_error("error '%s' does not start with '%s'\n", err, prefix);
		free(err);
		fail();
	}
	va_start(ap, line);
	while ((want = va_arg(ap, const char *)) != NULL) {
		if (strstr(err, want) == NULL) {
			print_error("error '%s' does not mention '%s'\n", err, want);
			va_end(ap);
			free(err);
			fail();
		}
	}
	va_end(ap);
	free(err);
}

static uint64_t
dur_ok(const char *s)
{
	uint64_t ms = 0xdeadbeef;

	if (qw_conf_parse_duration(s, &ms) != 0)
		fail_msg("duration '%s' rejected", s);
	return ms;
}

static void
dur_bad(const char *s)
{
	uint64_t ms = 0xdeadbeef;

	if (qw_conf_parse_duration(s, &ms) != -1)
		fail_msg("duration '%s' accepted as %llu ms", s, (unsigned long long)ms);
	assert_int_equal(ms, 0xdeadbeef);
}

static uint64_t
size_ok(const char *s)
{
	uint64_t b = 0xdeadbeef;

	if (qw_conf_parse_size(s, &b) != 0)
		fail_msg("size '%s' rejected", s);
	return b;
}

static void
size_bad(const char *s)
{
	uint64_t b = 0xdeadbeef;

	if (qw_conf_parse_size(s, &b) != -1)
		fail_msg("size '%s' accepted as %llu", s, (unsigned long long)b);
	assert_int_equal(b, 0xdeadbeef);
}

/* Splits S and checks the words against the NULL-terminated list. */
static void
split_is(const char *s, ...)
{
	const char *err = "unset", *want;
	char **argv = qw_conf_split_words(s, &err);
	size_t i = 0;
	va_list ap;

	if (argv == NULL)
		fail_msg("split of [%s] failed: %s", s, err ? err : "(null)");
	assert_null(err);
	va_start(ap, s);
	while ((want = va_arg(ap, const char *)) != NULL) {
		if (argv[i] == NULL || strcmp(argv[i], want) != 0) {
			print_error("split of [%s]: word %zu is [%s], expected [%s]\n", s, i,
			    argv[i] ? argv[i] : "(end)", want);
			va_end(ap);
			qw_conf_free_argv(argv);
			fail();
		}
		i++;
	}
	va_end(ap);
	if (argv[i] != NULL) {
		print_error("split of [%s]: extra word %zu [%s]\n", s, i, argv[i]);
		qw_conf_free_argv(argv);
		fail();
	}
	qw_conf_free_argv(argv);
}

static void
split_fails(const char *s, const char *why)
{
	const char *err = NULL;
	char **argv = qw_conf_split_words(s, &err);

	if (argv != NULL) {
		qw_conf_free_argv(argv);
		fail_msg("split of [%s] succeeded, expected '%s'", s, why);
	}
	assert_non_null(err);
	if (strstr(err, why) == NULL)
		fail_msg("split of [%s]: error '%s' does not mention '%s'", s, err, why);
}

/* ------------------------------------------------------------------------ */
/* Durations */

static void
test_duration_units(void **state)
{
	(void)state;
	assert_int_equal(dur_ok("250ms"), 250);
	assert_int_equal(dur_ok("0ms"), 0);
	assert_int_equal(dur_ok("1s"), 1000);
	assert_int_equal(dur_ok("25s"), 25000);
	assert_int_equal(dur_ok("2m"), 120000);
	assert_int_equal(dur_ok("1h"), 3600000);
	assert_int_equal(dur_ok("2h"), 7200000);
	assert_int_equal(dur_ok("1d"), 86400000);
	assert_int_equal(dur_ok("365d"), 365ULL * 86400000);
}

static void
test_duration_bare_seconds(void **state)
{
	(void)state;
	assert_int_equal(dur_ok("0"), 0);
	assert_int_equal(dur_ok("5"), 5000);
	assert_int_equal(dur_ok("30"), 30000);
	assert_int_equal(dur_ok("1.5"), 1500);
}

static void
test_duration_decimals(void **state)
{
	(void)state;
	assert_int_equal(dur_ok("1.5s"), 1500);
	assert_int_equal(dur_ok("0.25s"), 250);
	assert_int_equal(dur_ok("0.5m"), 30000);
	assert_int_equal(dur_ok("1.5h"), 5400000);
	assert_int_equal(dur_ok("0.5d"), 43200000);
	assert_int_equal(dur_ok("0.001s"), 1);
	assert_int_equal(dur_ok("2.5ms"), 3);	/* rounded to the nearest ms */
}

static void
test_duration_rejects(void **state)
{
	(void)state;
	dur_bad("");
	dur_bad("-1s");
	dur_bad("-1");
	dur_bad("5x");
	dur_bad("s");
	dur_bad("ms");
	dur_bad(" 5s");
	dur_bad("5 s");
	dur_bad("5s ");
	dur_bad("5S");
	dur_bad("5sec");
	dur_bad("5ss");
	dur_bad("1h30m");
	dur_bad(".5s");
	dur_bad("+5s");
	dur_bad("inf");
	dur_bad("nan");
	dur_bad("1e300d");	/* absurdly large */
}

/* ------------------------------------------------------------------------ */
/* Sizes */

static void
test_size_units(void **state)
{
	(void)state;
	assert_int_equal(size_ok("0"), 0);
	assert_int_equal(size_ok("512"), 512);
	assert_int_equal(size_ok("512B"), 512);
	assert_int_equal(size_ok("1KiB"), 1024);
	assert_int_equal(size_ok("64KiB"), 65536);
	assert_int_equal(size_ok("1MiB"), 1048576);
	assert_int_equal(size_ok("512MiB"), 512ULL << 20);
	assert_int_equal(size_ok("1GiB"), 1ULL << 30);
	assert_int_equal(size_ok("3GiB"), 3ULL << 30);
	assert_int_equal(size_ok("18446744073709551615"), UINT64_MAX);
	assert_int_equal(size_ok("17179869183GiB"), 17179869183ULL << 30);
}

static void
test_size_rejects(void **state)
{
	(void)state;
	size_bad("");
	size_bad("KiB");
	size_bad("-1");
	size_bad("-1KiB");
	size_bad(" 1KiB");
	size_bad("1 KiB");
	size_bad("1.5MiB");
	size_bad("1KB");
	size_bad("1kib");
	size_bad("1MB");
	size_bad("1M");
	size_bad("1TiB");
	size_bad("1x");
	/* Overflow, in the number and in the multiplication. */
	size_bad("18446744073709551616");
	size_bad("99999999999999999999999");
	size_bad("17179869184GiB");	/* 2^34 GiB = 2^64 bytes */
	size_bad("18014398509481984KiB");	/* 2^54 KiB = 2^64 bytes */
	size_bad("18446744073709551615KiB");
}

/* ------------------------------------------------------------------------ */
/* Word splitting */

static void
test_split_plain(void **state)
{
	(void)state;
	split_is("/bin/true", "/bin/true", NULL);
	split_is("  /usr/libexec/send-mail   --from\tnoreply@example.org  ",
	    "/usr/libexec/send-mail", "--from", "noreply@example.org", NULL);
}

static void
test_split_quotes(void **state)
{
	(void)state;
	split_is("prog 'a b' \"c d\"", "prog", "a b", "c d", NULL);
	split_is("prog 'it''s' x", "prog", "its", "x", NULL);
	split_is("prog a'b c'd", "prog", "ab cd", NULL);
	split_is("prog \"a\"'b'c", "prog", "abc", NULL);
	/* Empty quotes make an empty word, as in sh. */
	split_is("prog '' \"\" x", "prog", "", "", "x", NULL);
	/* Nothing is special inside single quotes. */
	split_is("prog '\\n $HOME \"x\" #no'", "prog", "\\n $HOME \"x\" #no", NULL);
	/* No expansions at all. */
	split_is("prog $HOME ~ *", "prog", "$HOME", "~", "*", NULL);
}

static void
test_split_escapes(void **state)
{
	(void)state;
	/* Outside quotes a backslash escapes any byte. */
	split_is("prog a\\ b \\'c\\' \\\\", "prog", "a b", "'c'", "\\", NULL);
	split_is("prog \\\"x\\\"", "prog", "\"x\"", NULL);
	/* In double quotes only \" \\ \$ \` are escapes; others stay. */
	split_is("prog \"a\\\"b\" \"c\\\\d\" \"\\$x\" \"\\`y\\`\"",
	    "prog", "a\"b", "c\\d", "$x", "`y`", NULL);
	split_is("prog \"a\\nb\"", "prog", "a\\nb", NULL);
	/* An escaped or quoted '#' is not a comment. */
	split_is("prog \\#x '#y' \"#z\"", "prog", "#x", "#y", "#z", NULL);
}

static void
test_split_comments(void **state)
{
	(void)state;
	split_is("prog arg # a comment 'unterminated", "prog", "arg", NULL);
	split_is("prog arg #", "prog", "arg", NULL);
	/* '#' only starts a comment at the start of a word. */
	split_is("prog a#b c#", "prog", "a#b", "c#", NULL);
	split_is("prog --color=#fff", "prog", "--color=#fff", NULL);
	split_is("prog#x", "prog#x", NULL);
}

static void
test_split_errors(void **state)
{
	(void)state;
	split_fails("prog 'abc", "single quote");
	split_fails("prog \"abc", "double quote");
	split_fails("prog \"abc\\\"", "double quote");
	split_fails("prog abc\\", "backslash");
	split_fails("", "no program");
	split_fails("   \t ", "no program");
	split_fails("# only a comment", "no program");
}

/* ------------------------------------------------------------------------ */
/* Queue names */

static void
test_queue_names(void **state)
{
	char name[QW_QUEUE_NAME_MAX + 2];

	(void)state;
	assert_true(qw_conf_valid_queue_name("mail"));
	assert_true(qw_conf_valid_queue_name("a"));
	assert_true(qw_conf_valid_queue_name("A-Z_a-z.0-9"));
	assert_true(qw_conf_valid_queue_name("..."));
	assert_true(qw_conf_valid_queue_name("-"));
	memset(name, 'q', QW_QUEUE_NAME_MAX);
	name[QW_QUEUE_NAME_MAX] = '\0';
	assert_true(qw_conf_valid_queue_name(name));
	name[QW_QUEUE_NAME_MAX] = 'q';
	name[QW_QUEUE_NAME_MAX + 1] = '\0';
	assert_false(qw_conf_valid_queue_name(name));

	assert_false(qw_conf_valid_queue_name(""));
	assert_false(qw_conf_valid_queue_name("a b"));
	assert_false(qw_conf_valid_queue_name("a:b"));
	assert_false(qw_conf_valid_queue_name("{mail}"));
	assert_false(qw_conf_valid_queue_name("a/b"));
	assert_false(qw_conf_valid_queue_name("a*"));
	assert_false(qw_conf_valid_queue_name("mail\n"));
	assert_false(qw_conf_valid_queue_name("caf\xc3\xa9"));
}

/* ------------------------------------------------------------------------ */
/* Whole files */

static void
test_load_spec_example(void **state)
{
	char pwpath[PATH_MAX], content[4096];
	struct qw_conf *c;
	struct qw_queue_conf *q;

	(void)state;
	write_file(pwpath, sizeof(pwpath), "redis.pass", "hunter2\n", 0600);
	CHECKED_SNPRINTF(content, sizeof(content),
	    "[redis]\n"
	    "address = 127.0.0.1:6380        # or unix:/run/redis/redis.sock\n"
	    "db = 3\n"
	    "password_file = %s   # optional; also $CREDENTIALS_DIRECTORY/redis.pass\n"
	    "prefix = myqw\n"
	    "\n"
	    "[workers]\n"
	    "concurrency = 16\n"
	    "shutdown_timeout = 40s\n"
	    "kill_grace = 3s\n"
	    "lease_timeout = 20s\n"
	    "instance = web-1                  # identity for leases; default: hostname + config file name\n"
	    "log_level = debug\n"
	    "metrics_listen = 127.0.0.1:9464   # optional: GET /metrics (Prometheus), GET /health\n"
	    "\n"
	    "[queue mail]\n"
	    "handler = /bin/true --from noreply@example.org\n"
	    "timeout = 45s\n"
	    "max_attempts = 7\n"
	    "retry_base = 2s\n"
	    "retry_max = 2h\n"
	    "weight = 3\n"
	    "concurrency = 4                   # optional cap for this queue\n"
	    "max_payload = 2MiB\n"
	    "max_interruptions = 12\n"
	    "dead_max = 500\n", pwpath);
	c = load_ok("qworkerd.conf", content);

	assert_string_equal(c->redis_address, "127.0.0.1:6380");
	assert_int_equal(c->db, 3);
	assert_string_equal(c->password_file, pwpath);
	assert_non_null(c->password);
	assert_string_equal(c->password, "hunter2");
	assert_string_equal(c->prefix, "myqw");
	assert_int_equal(c->concurrency, 16);
	assert_int_equal(c->shutdown_timeout_ms, 40000);
	assert_int_equal(c->kill_grace_ms, 3000);
	assert_int_equal(c->lease_timeout_ms, 20000);
	assert_string_equal(c->instance, "web-1");
	assert_int_equal(c->log_level, LOG_DEBUG);
	assert_string_equal(c->metrics_listen, "127.0.0.1:9464");

	assert_int_equal(c->nqueues, 1);
	q = &c->queues[0];
	assert_string_equal(q->name, "mail");
	assert_non_null(q->argv);
	assert_string_equal(q->argv[0], "/bin/true");
	assert_string_equal(q->argv[1], "--from");
	assert_string_equal(q->argv[2], "noreply@example.org");
	assert_null(q->argv[3]);
	assert_int_equal(q->timeout_ms, 45000);
	assert_int_equal(q->max_attempts, 7);
	assert_int_equal(q->retry_base_ms, 2000);
	assert_int_equal(q->retry_max_ms, 7200000);
	assert_int_equal(q->weight, 3);
	assert_int_equal(q->concurrency, 4);
	assert_int_equal(q->max_payload, 2ULL << 20);
	assert_int_equal(q->max_interruptions, 12);
	assert_int_equal(q->dead_max, 500);
	qw_conf_free(c);
}

static void
test_load_defaults(void **state)
{
	struct qw_conf *c;
	struct qw_queue_conf *q;

	(void)state;
	c = load_ok("defaults.conf", "[queue q]\nhandler = /bin/true\n");
	assert_string_equal(c->redis_address, "127.0.0.1:6379");
	assert_int_equal(c->db, 0);
	assert_null(c->password_file);
	assert_null(c->password);
	assert_string_equal(c->prefix, "qw");
	assert_int_equal(c->concurrency, 8);
	assert_int_equal(c->shutdown_timeout_ms, 25000);
	assert_int_equal(c->kill_grace_ms, 5000);
	assert_int_equal(c->lease_timeout_ms, 15000);
	assert_non_null(c->instance);
	assert_int_equal(c->log_level, LOG_INFO);
	assert_null(c->metrics_listen);

	assert_int_equal(c->nqueues, 1);
	q = &c->queues[0];
	assert_string_equal(q->name, "q");
	assert_string_equal(q->argv[0], "/bin/true");
	assert_null(q->argv[1]);
	assert_int_equal(q->timeout_ms, 30000);
	assert_int_equal(q->max_attempts, 5);
	assert_int_equal(q->retry_base_ms, 1000);
	assert_int_equal(q->retry_max_ms, 3600000);
	assert_int_equal(q->weight, 1);
	assert_int_equal(q->concurrency, 0);
	assert_int_equal(q->max_payload, 1ULL << 20);
	assert_int_equal(q->max_interruptions, 10);
	assert_int_equal(q->dead_max, 10000);
	assert_int_equal(q->prefetch, QW_PREFETCH_AUTO);
	qw_conf_free(c);
}

/* prefetch is a number (fixed, as before) or auto, the default. */
static void
test_load_prefetch(void **state)
{
	struct qw_conf *c;

	(void)state;
	c = load_ok("prefetch.conf",
	    "[queue a]\nhandler = /bin/true\nprefetch = 0\n"
	    "[queue b]\nhandler = /bin/true\nprefetch = 256 # tuned\n"
	    "[queue c]\nhandler = /bin/true\nprefetch = auto\n"
	    "[queue d]\nhandler = /bin/true\nprefetch = 10000\n");
	assert_int_equal(c->queues[0].prefetch, 0);
	assert_int_equal(c->queues[1].prefetch, 256);
	assert_int_equal(c->queues[2].prefetch, QW_PREFETCH_AUTO);
	assert_int_equal(c->queues[3].prefetch, 10000);
	qw_conf_free(c);
	load_fails("[queue q]\nhandler = /bin/true\nprefetch = 10001\n", 3,
	    "prefetch", "out of range", NULL);
	load_fails("[queue q]\nhandler = /bin/true\nprefetch = Auto\n", 3,
	    "prefetch", "'Auto' is not a whole number or auto", NULL);
	load_fails("[queue q]\nhandler = /bin/true\nprefetch = -1\n", 3, "prefetch", NULL);
	load_fails("[queue q]\nhandler = /bin/true\nprefetch =\n", 3, "prefetch", "empty", NULL);
}

static void
test_load_several_queues(void **state)
{
	struct qw_conf *c;

	(void)state;
	c = load_ok("multi.conf",
	    "[queue a]\nhandler = /bin/true\ntimeout = 1s\n"
	    "[queue b.c-d_e]\nhandler = /bin/true x\nweight = 5\n"
	    "[ queue   spaced ]\nhandler = true\n");
	assert_int_equal(c->nqueues, 3);
	assert_string_equal(c->queues[0].name, "a");
	assert_int_equal(c->queues[0].timeout_ms, 1000);
	assert_int_equal(c->queues[0].weight, 1);
	assert_string_equal(c->queues[1].name, "b.c-d_e");
	assert_int_equal(c->queues[1].weight, 5);
	assert_int_equal(c->queues[1].timeout_ms, 30000);
	assert_string_equal(c->queues[1].argv[1], "x");
	assert_string_equal(c->queues[2].name, "spaced");
	/* A bare program name is resolved through PATH to an absolute path. */
	assert_true(c->queues[2].argv[0][0] == '/');
	assert_non_null(strstr(c->queues[2].argv[0], "true"));
	assert_int_equal(access(c->queues[2].argv[0], X_OK), 0);
	qw_conf_free(c);
}

static void
test_load_comments_values(void **state)
{
	struct qw_conf *c;

	(void)state;
	c = load_ok("comments2.conf",
	    "# leading comment\n"
	    "; another style\n"
	    "   # indented comment\n"
	    "\n"
	    "[redis]   \n"
	    "address = unix:/run/redis/redis.sock # hash comment\n"
	    "db = 2 ; semicolon comment\n"
	    "prefix = a#b;c   # '#' and ';' inside a word are not comments\n"
	    "[workers] \r\n"
	    "\tkill_grace\t=\t2s\t;\ttabbed\r\n"
	    "instance = host;1 ;comment\n"
	    "log_level = warning # comment\n"
	    "[queue q]\n"
	    "handler = /bin/true '#not' # comment\n"
	    "timeout = 10s # ten seconds\n"
	    "max_payload = 64KiB ; small\n");
	assert_string_equal(c->redis_address, "unix:/run/redis/redis.sock");
	assert_int_equal(c->db, 2);
	assert_string_equal(c->prefix, "a#b;c");
	assert_int_equal(c->kill_grace_ms, 2000);
	assert_string_equal(c->instance, "host;1");
	assert_int_equal(c->log_level, LOG_WARNING);
	assert_int_equal(c->queues[0].timeout_ms, 10000);
	assert_int_equal(c->queues[0].max_payload, 64 * 1024);
	assert_string_equal(c->queues[0].argv[0], "/bin/true");
	assert_string_equal(c->queues[0].argv[1], "#not");
	assert_null(c->queues[0].argv[2]);
	qw_conf_free(c);
}

/* ------------------------------------------------------------------------ */
/* Errors: each names FILE:LINE and what is wrong */

#define QUEUE_OK "[queue ok]\nhandler = /bin/true\n"

static void
test_err_unknown_section(void **state)
{
	(void)state;
	load_fails(QUEUE_OK "\n# comment\n[bogus]\n", 5, "unknown section", "bogus", NULL);
	load_fails("[redis]\n[queue]\nhandler = /bin/true\n", 2, "unknown section", "queue", NULL);
	load_fails("[queues mail]\nhandler = /bin/true\n", 1, "unknown section", "queues mail", NULL);
	load_fails("[Redis]\n" QUEUE_OK, 1, "unknown section", "Redis", NULL);
}

static void
test_err_unknown_key(void **state)
{
	(void)state;
	load_fails(QUEUE_OK "[workers]\nconcurrency = 2\nfrobnicate = 1\n", 5,
	    "unknown key", "frobnicate", "workers", NULL);
	/* A key of another section is unknown here. */
	load_fails("[redis]\nconcurrency = 2\n" QUEUE_OK, 2, "unknown key", "concurrency", "redis", NULL);
	load_fails("[queue q]\nhandler = /bin/true\nlease_timeout = 5s\n", 3,
	    "unknown key", "lease_timeout", "queue", NULL);
	load_fails("[workers]\nConcurrency = 2\n" QUEUE_OK, 2, "unknown key", "Concurrency", NULL);
}

static void
test_err_bad_duration(void **state)
{
	(void)state;
	load_fails(QUEUE_OK "[workers]\nshutdown_timeout = 5x\n", 4,
	    "shutdown_timeout", "5x", "duration", NULL);
	load_fails("[queue q]\nhandler = /bin/true\n\ntimeout = -1s\n", 4, "timeout", "-1s", NULL);
	load_fails("[queue q]\nhandler = /bin/true\nretry_base = s\n", 3, "retry_base", NULL);
	load_fails(QUEUE_OK "[workers]\nkill_grace = 1h30m\n", 4, "kill_grace", "1h30m", NULL);
	load_fails(QUEUE_OK "[workers]\nlease_timeout =\n", 4, "lease_timeout", "empty", NULL);
}

static void
test_err_bad_size(void **state)
{
	(void)state;
	load_fails("[queue q]\nhandler = /bin/true\nmax_payload = 1MB\n", 3,
	    "max_payload", "1MB", "size", NULL);
	load_fails("[queue q]\nhandler = /bin/true\nmax_payload = 1.5KiB # x\n", 3,
	    "max_payload", "1.5KiB", NULL);
	load_fails("[queue q]\nhandler = /bin/true\nmax_payload = 99999999999999999999GiB\n", 3,
	    "max_payload", NULL);
}

static void
test_err_out_of_range(void **state)
{
	(void)state;
	load_fails(QUEUE_OK "[workers]\nconcurrency = 0\n", 4, "concurrency", "out of range", NULL);
	load_fails(QUEUE_OK "[workers]\nconcurrency = 10001\n", 4, "concurrency", "out of range", NULL);
	load_fails(QUEUE_OK "[workers]\nlease_timeout = 500ms\n", 4, "lease_timeout", "out of range", NULL);
	load_fails(QUEUE_OK "[redis]\ndb = 100001\n", 4, "db", "out of range", NULL);
	load_fails("[queue q]\nhandler = /bin/true\nweight = 1001\n", 3, "weight", "out of range", NULL);
	load_fails("[queue q]\nhandler = /bin/true\nmax_attempts = 0\n", 3,
	    "max_attempts", "out of range", NULL);
	load_fails("[queue q]\nhandler = /bin/true\ntimeout = 0s\n", 3, "timeout", "out of range", NULL);
	load_fails("[queue q]\nhandler = /bin/true\ntimeout = 366d\n", 3, "timeout", "out of range", NULL);
	/* Bounds said the way the file writes durations, not in milliseconds. */
	load_fails("[queue q]\nhandler = /bin/true\ntimeout = 366d\n", 3, "(1ms to 365d)", NULL);
	load_fails(QUEUE_OK "[workers]\nlease_timeout = 500ms\n", 4, "(2s to 1d)", NULL);
	load_fails("[queue q]\nhandler = /bin/true\nmax_payload = 0\n", 3,
	    "max_payload", "out of range", NULL);
	load_fails("[queue q]\nhandler = /bin/true\nmax_payload = 1GiB\n", 3,
	    "max_payload", "out of range", NULL);
	load_fails("[queue q]\nhandler = /bin/true\nmax_payload = 257MiB\n", 3,
	    "max_payload", "out of range", NULL);
	/* Not a number at all. */
	load_fails(QUEUE_OK "[workers]\nconcurrency = -1\n", 4, "concurrency", "-1", NULL);
	load_fails(QUEUE_OK "[workers]\nconcurrency = 3;x\n", 4, "concurrency", "3;x", NULL);
	load_fails(QUEUE_OK "[workers]\nconcurrency = 99999999999999999999999\n", 4,
	    "concurrency", NULL);
	/* The limits are inclusive. */
	struct qw_conf *c = load_ok("limits.conf",
	    "[workers]\nconcurrency = 10000\nlease_timeout = 2s\n"
	    "[queue q]\nhandler = /bin/true\nweight = 1000\nmax_payload = 256MiB\n"
	    "timeout = 365d\nmax_attempts = 1\ndead_max = 0\n");
	assert_int_equal(c->concurrency, 10000);
	assert_int_equal(c->lease_timeout_ms, 2000);
	assert_int_equal(c->queues[0].weight, 1000);
	assert_int_equal(c->queues[0].max_payload, 256ULL << 20);
	assert_int_equal(c->queues[0].timeout_ms, 365ULL * 86400000);
	assert_int_equal(c->queues[0].max_attempts, 1);
	assert_int_equal(c->queues[0].dead_max, 0);
	qw_conf_free(c);
}

static void
test_err_bad_values(void **state)
{
	(void)state;
	load_fails("[redis]\naddress = localhost\n" QUEUE_OK, 2, "address", "localhost", NULL);
	load_fails("[redis]\naddress = host:99999\n" QUEUE_OK, 2, "address", NULL);
	load_fails("[redis]\naddress = unix:relative.sock\n" QUEUE_OK, 2, "address", NULL);
	load_fails("[redis]\nprefix = a{b}\n" QUEUE_OK, 2, "prefix", NULL);
	load_fails("[workers]\nlog_level = loud\n" QUEUE_OK, 2, "log_level", "loud", NULL);
	load_fails("[workers]\nmetrics_listen = 9464\n" QUEUE_OK, 2, "metrics_listen", NULL);
	load_fails("[queue q]\nhandler = /bin/true\nretry_base = 2h\n", 1,
	    "retry_max", "retry_base", "q", NULL);
}

static void
test_err_duplicate_key(void **state)
{
	(void)state;
	load_fails(QUEUE_OK "[workers]\nconcurrency = 1\n# again\nconcurrency = 2\n", 6,
	    "concurrency", "twice", NULL);
	load_fails("[queue q]\nhandler = /bin/true\nhandler = /bin/true\n", 3, "handler", NULL);
	/* The same key in two queues is not a duplicate. */
	struct qw_conf *c = load_ok("twoq.conf",
	    "[queue a]\nhandler = /bin/true\ntimeout = 1s\n"
	    "[queue b]\nhandler = /bin/true\ntimeout = 2s\n");
	assert_int_equal(c->queues[0].timeout_ms, 1000);
	assert_int_equal(c->queues[1].timeout_ms, 2000);
	qw_conf_free(c);
}

static void
test_err_duplicate_queue(void **state)
{
	(void)state;
	load_fails("[queue mail]\nhandler = /bin/true\n\n[queue other]\nhandler = /bin/true\n"
	    "[queue mail]\nhandler = /bin/true\n", 6, "mail", "twice", NULL);
}

/* worker = and its keys (SPEC 12). */
static void
test_load_worker(void **state)
{
	(void)state;
	struct qw_conf *c = load_ok("worker.conf",
	    "[queue a]\nworker = /bin/cat -u\n"
	    "[queue b]\nworker = /bin/cat\nworker_processes = 3\nworker_inflight = 8\n"
	    "worker_max_jobs = 1000\n");
	assert_string_equal(c->queues[0].worker_argv[0], "/bin/cat");
	assert_string_equal(c->queues[0].worker_argv[1], "-u");
	assert_null(c->queues[0].argv);
	assert_int_equal(c->queues[0].worker_processes, 1);
	assert_int_equal(c->queues[0].worker_inflight, 1);
	assert_int_equal(c->queues[0].worker_max_jobs, 0);
	assert_int_equal(c->queues[1].worker_processes, 3);
	assert_int_equal(c->queues[1].worker_inflight, 8);
	assert_int_equal(c->queues[1].worker_max_jobs, 1000);
	qw_conf_free(c);
}

static void
test_err_worker(void **state)
{
	(void)state;
	load_fails("[queue q]\nhandler = /bin/true\nworker = /bin/cat\n", 1,
	    "one of handler, plugin or worker", NULL);
	load_fails("[queue q]\nhandler = /bin/true\n\nworker_inflight = 4\n", 4,
	    "worker_inflight", "only for a queue with worker", NULL);
	load_fails("[queue q]\nworker = /no/such/program\n", 2, "worker", "/no/such/program",
	    NULL);
	load_fails("[queue q]\nworker = /bin/cat\nworker_processes = 0\n", 3,
	    "worker_processes", "out of range", NULL);
	load_fails("[queue q]\nworker = /bin/cat\nworker_inflight = many\n", 3,
	    "worker_inflight", "not a whole number", NULL);
}

static void
test_err_bad_queue_name(void **state)
{
	(void)state;
	load_fails("[redis]\n[queue bad/name]\nhandler = /bin/true\n", 2, "bad/name", NULL);
	load_fails("[queue a b]\nhandler = /bin/true\n", 1, "a b", NULL);
	load_fails("[queue {mail}]\nhandler = /bin/true\n", 1, "{mail}", NULL);
	load_fails("[queue "
	    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa]\n"
	    "handler = /bin/true\n", 1, "aaaaaaaaaa", NULL);
}

static void
test_err_missing_handler(void **state)
{
	(void)state;
	/* Reported at the [queue] header, whether or not another section follows. */
	load_fails("[redis]\n\n[queue mail]\ntimeout = 5s\n\n[workers]\nconcurrency = 2\n", 3,
	    "mail", "handler", NULL);
	load_fails(QUEUE_OK "# x\n[queue last]\ntimeout = 5s\nweight = 2\n", 4,
	    "last", "handler", NULL);
	load_fails("[queue a]\n[queue b]\nhandler = /bin/true\n", 1, "a", "handler", NULL);
	load_fails("[queue a]\nhandler =\n", 2, "handler", "no program", NULL);
	load_fails("[queue a]\nhandler = # just a comment\n", 2, "handler", NULL);
	load_fails("[queue a]\nhandler = /bin/true 'oops\n", 2, "handler", "quote", NULL);
}

static void
test_err_handler_not_found(void **state)
{
	(void)state;
	load_fails("[queue a]\n\nhandler = /nonexistent/qw-handler --x\n", 3,
	    "handler", "/nonexistent/qw-handler", NULL);
	load_fails("[queue a]\nhandler = qw-no-such-program-anywhere\n", 2,
	    "handler", "qw-no-such-program-anywhere", "not found", NULL);
	/* A directory is not a program. */
	load_fails("[queue a]\nhandler = /\n", 2, "handler", NULL);
}

static void
test_err_handler_not_executable(void **state)
{
	char prog[PATH_MAX], content[PATH_MAX + 64];

	(void)state;
	write_file(prog, sizeof(prog), "not-exec.sh", "#!/bin/sh\nexit 0\n", 0644);
	CHECKED_SNPRINTF(content, sizeof(content), "[workers]\n[queue a]\nhandler = %s arg\n", prog);
	load_fails(content, 3, "handler", prog, "not executable", NULL);

	/* The same file made executable is accepted, argv[0] kept absolute. */
	assert_int_equal(chmod(prog, 0755), 0);
	struct qw_conf *c = load_ok("exec.conf", content);
	assert_string_equal(c->queues[0].argv[0], prog);
	assert_string_equal(c->queues[0].argv[1], "arg");
	assert_null(c->queues[0].argv[2]);
	qw_conf_free(c);
}

static void
test_err_no_queues(void **state)
{
	(void)state;
	load_fails("[redis]\naddress = 127.0.0.1:6379\n[workers]\n", 0, "no [queue", NULL);
	load_fails("", 0, "no [queue", NULL);
	load_fails("# nothing but comments\n\n", 0, "no [queue", NULL);
}

static void
test_err_key_outside_section(void **state)
{
	(void)state;
	load_fails("# top\nconcurrency = 4\n[workers]\n" QUEUE_OK, 2,
	    "outside", "concurrency", NULL);
}

static void
test_err_malformed_line(void **state)
{
	(void)state;
	load_fails(QUEUE_OK "[workers]\njust some words\n", 4, "just some words", NULL);
	load_fails(QUEUE_OK "[workers\n", 3, "[workers", NULL);
	load_fails(QUEUE_OK "[workers] trailing\n", 3, "[workers] trailing", NULL);
	load_fails("[queue a]\nhandler /bin/true\n", 2, "handler /bin/true", NULL);
}

static void
test_err_first_error_wins(void **state)
{
	(void)state;
	load_fails("[workers]\nconcurrency = x\nbogus = 1\n", 2, "concurrency", NULL);
}

static void
test_err_cannot_open(void **state)
{
	char path[PATH_MAX];
	struct qw_conf *conf = (struct qw_conf *)1;
	char *err = NULL;

	(void)state;
	CHECKED_SNPRINTF(path, sizeof(path), "%s/does-not-exist.conf", tmpdir);
	assert_int_equal(qw_conf_load(path, &conf, &err), -1);
	assert_null(conf);
	assert_non_null(err);
	assert_true(strncmp(err, path, strlen(path)) == 0);
	assert_non_null(strstr(err, "No such file"));
	free(err);
}

static void
test_err_password_file_missing(void **state)
{
	char content[PATH_MAX + 128];

	(void)state;
	CHECKED_SNPRINTF(content, sizeof(content),
	    "[redis]\n# the password\npassword_file = %s/no-such.pass\n" QUEUE_OK, tmpdir);
	load_fails(content, 3, "password_file", "no-such.pass", NULL);
}

static void
test_err_password_file_empty(void **state)
{
	char pw[PATH_MAX], content[PATH_MAX + 128];

	(void)state;
	write_file(pw, sizeof(pw), "empty.pass", "", 0600);
	CHECKED_SNPRINTF(content, sizeof(content), "[redis]\npassword_file = %s\n" QUEUE_OK, pw);
	load_fails(content, 2, "password_file", "empty", NULL);
	/* A lone line ending is no password either (it would send AUTH ""). */
	write_file(pw, sizeof(pw), "newline.pass", "\n", 0600);
	CHECKED_SNPRINTF(content, sizeof(content), "[redis]\npassword_file = %s\n" QUEUE_OK, pw);
	load_fails(content, 2, "password_file", "empty first line", NULL);
}

/* ------------------------------------------------------------------------ */
/* Instance and credentials */

static void
expect_instance(const char *file, const char *suffix)
{
	char host[256] = "localhost", want[512];
	struct qw_conf *c;

	gethostname(host, sizeof(host) - 1);
	host[sizeof(host) - 1] = '\0';
	CHECKED_SNPRINTF(want, sizeof(want), "%s:%s", host, suffix);
	c = load_ok(file, QUEUE_OK);
	assert_string_equal(c->instance, want);
	qw_conf_free(c);
}

static void
test_default_instance(void **state)
{
	(void)state;
	expect_instance("worker-7.conf", "worker-7");
	expect_instance("qworkerd.conf", "qworkerd");
	expect_instance("plain", "plain");
	expect_instance("x.conf.bak", "x.conf.bak");
	expect_instance("a.b.conf", "a.b");
}

static void
test_explicit_instance(void **state)
{
	struct qw_conf *c;

	(void)state;
	c = load_ok("inst.conf", "[workers]\ninstance = web-1\n" QUEUE_OK);
	assert_string_equal(c->instance, "web-1");
	qw_conf_free(c);
}

static void
test_credentials_directory(void **state)
{
	char dir[PATH_MAX], pw[PATH_MAX];
	struct qw_conf *c;
	int n;

	(void)state;
	make_dir(dir, sizeof(dir), "creds");
	n = snprintf(pw, sizeof(pw), "%s/redis.pass", dir);
	assert_true(n > 0 && (size_t)n < sizeof(pw));
	write_file(pw, sizeof(pw), "creds/redis.pass", "s3cret\r\nsecond line\n", 0600);
	assert_int_equal(setenv("CREDENTIALS_DIRECTORY", dir, 1), 0);

	c = load_ok("creds.conf", QUEUE_OK);
	assert_null(c->password_file);
	assert_non_null(c->password);
	assert_string_equal(c->password, "s3cret");
	qw_conf_free(c);
}

static void
test_password_file_beats_credentials(void **state)
{
	char dir[PATH_MAX], pw[PATH_MAX], own[PATH_MAX], content[PATH_MAX + 128];
	struct qw_conf *c;

	(void)state;
	make_dir(dir, sizeof(dir), "creds2");
	write_file(pw, sizeof(pw), "creds2/redis.pass", "from-credentials\n", 0600);
	write_file(own, sizeof(own), "own.pass", "from-file", 0600);
	assert_int_equal(setenv("CREDENTIALS_DIRECTORY", dir, 1), 0);
	CHECKED_SNPRINTF(content, sizeof(content), "[redis]\npassword_file = %s\n" QUEUE_OK, own);

	c = load_ok("own.conf", content);
	assert_string_equal(c->password, "from-file");
	qw_conf_free(c);
}

static void
test_credentials_directory_without_file(void **state)
{
	char dir[PATH_MAX];
	struct qw_conf *c;

	(void)state;
	make_dir(dir, sizeof(dir), "creds-empty");
	assert_int_equal(setenv("CREDENTIALS_DIRECTORY", dir, 1), 0);
	c = load_ok("nocreds.conf", QUEUE_OK);
	assert_null(c->password);
	qw_conf_free(c);
}

/* qworkerctl's reading: what only the daemon needs cannot fail it. */
static void
test_client_load_skips_daemon_only_checks(void **state)
{
	char path[PATH_MAX];
	struct qw_conf *conf = NULL;
	char *err = NULL;
	const char *text = "[redis]\naddress = unix:/run/r.sock\ndb = 3\nprefix = app\n"
	    "[queue mail]\nhandler = /no/such/program --flag\ndead_max = 7\n"
	    "[queue img]\nplugin = /no/such/plugin.so\n[queue bare]\n"
	    "[cron nightly]\nqueue = elsewhere\n";

	(void)state;
	write_file(path, sizeof(path), "client.conf", text, 0644);
	assert_int_equal(qw_conf_load(path, &conf, &err), -1);
	assert_non_null(err);
	free(err);
	err = NULL;
	assert_int_equal(qw_conf_load_client(path, &conf, &err), 0);
	assert_null(err);
	assert_string_equal(conf->redis_address, "unix:/run/r.sock");
	assert_int_equal(conf->db, 3);
	assert_string_equal(conf->prefix, "app");
	assert_int_equal(conf->nqueues, 3);
	assert_null(conf->queues[0].argv);
	assert_int_equal(conf->queues[0].dead_max, 7);
	assert_null(conf->queues[1].plugin);
	qw_conf_free(conf);
	/* No queue at all is fine too; the grammar still is checked. */
	write_file(path, sizeof(path), "client.conf", "[redis]\nprefix = x\n", 0644);
	assert_int_equal(qw_conf_load_client(path, &conf, &err), 0);
	qw_conf_free(conf);
	write_file(path, sizeof(path), "client.conf", "[redis]\nbogus = 1\n", 0644);
	assert_int_equal(qw_conf_load_client(path, &conf, &err), -1);
	assert_non_null(strstr(err, "client.conf:2: unknown key 'bogus'"));
	free(err);
}

static void
test_load_cron(void **state)
{
	struct qw_conf *c;

	(void)state;
	c = load_ok("cron.conf",
	    "[cron first]\nschedule = */15 9-17 * * mon-fri   # office hours\nqueue = a\n"
	    "timezone = local\npayload = {\"x\": 1}\n"
	    "[queue a]\nhandler = /bin/true\n"
	    "[ cron  second ]\ntimezone = UTC\nqueue = a\nschedule = @every 90s\npayload =\n");
	assert_int_equal(c->ncrons, 2);
	assert_string_equal(c->crons[0].name, "first");
	assert_string_equal(c->crons[0].queue, "a");
	assert_string_equal(c->crons[0].payload, "{\"x\": 1}");
	assert_int_equal(c->crons[0].sched.tz, QW_CRON_LOCAL);
	assert_int_equal(c->crons[0].sched.minute, 1ULL | 1ULL << 15 | 1ULL << 30 | 1ULL << 45);
	assert_int_equal(c->crons[0].sched.dow, 0x3e);
	assert_int_equal(c->crons[0].line, 1);
	assert_string_equal(c->crons[1].name, "second");
	assert_string_equal(c->crons[1].payload, "");
	assert_int_equal(c->crons[1].sched.tz, QW_CRON_UTC);
	assert_int_equal(c->crons[1].sched.every_ms, 90000);
	qw_conf_free(c);
	/* The timezone defaults to UTC and the payload to empty. */
	c = load_ok("cron2.conf", "[queue a]\nhandler = /bin/true\n[cron x]\nschedule = @daily\nqueue = a\n");
	assert_int_equal(c->crons[0].sched.tz, QW_CRON_UTC);
	assert_string_equal(c->crons[0].payload, "");
	qw_conf_free(c);
}

static void
test_err_cron(void **state)
{
	(void)state;
	load_fails("[queue a]\nhandler = /bin/true\n[cron x]\nschedule = 61 * * * *\nqueue = a\n",
	    4, "schedule", "minute '61'", NULL);
	load_fails("[queue a]\nhandler = /bin/true\n[cron x]\nqueue = a\nschedule = * * *\n",
	    5, "schedule", "3 fields", NULL);
	load_fails("[queue a]\nhandler = /bin/true\n[cron x]\nschedule = @every 0s\nqueue = a\n",
	    4, "@every '0s'", NULL);
	load_fails("[queue a]\nhandler = /bin/true\n[cron x]\nschedule = @daily\n"
	    "timezone = America/New_York\nqueue = a\n", 5, "timezone", "UTC or local", NULL);
	load_fails("[queue a]\nhandler = /bin/true\n[cron x]\nschedule = @daily\n", 3,
	    "[cron x]", "no queue", NULL);
	load_fails("[cron x]\nschedule = @daily\nqueue = b\n[queue a]\nhandler = /bin/true\n", 3,
	    "queue", "'b'", NULL);
	load_fails("[queue a]\nhandler = /bin/true\n[cron x]\nschedule = @daily\nqueue = a\n"
	    "payload = \xff\n", 6, "payload", "UTF-8", NULL);
	load_fails("[queue a]\nhandler = /bin/true\n[cron x y]\n", 3, "cron name", NULL);
	load_fails("[queue a]\nhandler = /bin/true\n[cron x]\nschedule = @daily\nqueue = a\n"
	    "[cron x]\n", 6, "twice", NULL);
}

/* ------------------------------------------------------------------------ */

#define T(f) cmocka_unit_test_teardown(f, test_teardown)

int
main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_duration_units),
		T(test_duration_bare_seconds),
		T(test_duration_decimals),
		T(test_duration_rejects),
		T(test_size_units),
		T(test_size_rejects),
		T(test_split_plain),
		T(test_split_quotes),
		T(test_split_escapes),
		T(test_split_comments),
		T(test_split_errors),
		T(test_queue_names),
		T(test_load_spec_example),
		T(test_load_defaults),
		T(test_load_prefetch),
		T(test_load_several_queues),
		T(test_load_comments_values),
		T(test_load_cron),
		T(test_err_cron),
		T(test_err_unknown_section),
		T(test_err_unknown_key),
		T(test_err_bad_duration),
		T(test_err_bad_size),
		T(test_err_out_of_range),
		T(test_err_bad_values),
		T(test_err_duplicate_key),
		T(test_err_duplicate_queue),
		T(test_load_worker),
		T(test_err_worker),
		T(test_err_bad_queue_name),
		T(test_err_missing_handler),
		T(test_err_handler_not_found),
		T(test_err_handler_not_executable),
		T(test_err_no_queues),
		T(test_err_key_outside_section),
		T(test_err_malformed_line),
		T(test_err_first_error_wins),
		T(test_err_cannot_open),
		T(test_err_password_file_missing),
		T(test_err_password_file_empty),
		T(test_default_instance),
		T(test_explicit_instance),
		T(test_credentials_directory),
		T(test_password_file_beats_credentials),
		T(test_credentials_directory_without_file),
		T(test_client_load_skips_daemon_only_checks),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
