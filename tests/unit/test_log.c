/* test_log.c - unit tests for src/log.c: control characters escaped in every
 * line (no forged lines, no terminal escapes), and writes that never wait
 * on a stderr nobody reads, with the lines it did not take written later in
 * order, whole, and the dropped ones counted. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>

#include "log.h"

static void
expect_escaped(const char *in, size_t len, const char *want)
{
	char out[256];
	size_t n = qw_log_escape(out, sizeof(out), in, len);

	assert_string_equal(out, want);
	assert_int_equal(n, strlen(want));
}

#define ESC(in, want) expect_escaped(in, sizeof(in) - 1, want)

static void
test_escape_c0(void **state)
{
	ESC("x\n<0>forged", "x\\n<0>forged");
	ESC("a\tb\rc", "a\\tb\\rc");
	ESC("\x1b[31mred", "\\x1b[31mred");
	ESC("nul\0byte", "nul\\x00byte");
	ESC("\x01\x1f", "\\x01\\x1f");
}

static void
test_escape_del(void **state)
{
	ESC("rub\x7fout", "rub\\x7fout");
}

static void
test_escape_c1_utf8(void **state)
{
	/* U+009B (CSI) and U+0085 (NEL) as UTF-8. */
	ESC("a\xc2\x9b" "31m", "a\\xc2\\x9b31m");
	ESC("\xc2\x85", "\\xc2\\x85");
	ESC("\xc2\x80\xc2\x9f", "\\xc2\\x80\\xc2\\x9f");
}

static void
test_escape_c1_lone(void **state)
{
	ESC("a\x9b" "b", "a\\x9bb");
	ESC("\x80\x85", "\\x80\\x85");
	/* A lead byte without its continuation: the 0x85 is lone. */
	ESC("\xe2\x85", "\xe2\\x85");
}

static void
test_escape_keeps_text(void **state)
{
	/* Printable ASCII, backslashes, and UTF-8 whose continuation bytes fall
	 * in 0x80..0x9f (U+00A0, U+0100, U+2019, U+1F600) pass unchanged. */
	ESC("plain \\n text", "plain \\n text");
	ESC("\xc2\xa0\xc4\x80\xe2\x80\x99\xf0\x9f\x98\x80", "\xc2\xa0\xc4\x80\xe2\x80\x99\xf0\x9f\x98\x80");
	ESC("caf\xc3\xa9", "caf\xc3\xa9");
	/* Invalid UTF-8 outside C1 is left alone (it cannot end a line). */
	ESC("\xff\xfe", "\xff\xfe");
	/* Overlong and surrogate forms are not UTF-8: their C1-range bytes are lone. */
	ESC("\xe0\x80\x80", "\xe0\\x80\\x80");
	ESC("\xed\xa0\x80", "\xed\xa0\\x80");
}

static void
test_escape_bounded(void **state)
{
	char out[6];

	/* An escape that would not fit is left out whole. */
	assert_int_equal(qw_log_escape(out, sizeof(out), "abcd\n", 5), 4);
	assert_string_equal(out, "abcd");
	assert_int_equal(qw_log_escape(out, sizeof(out), "abc\x1b", 4), 3);
	assert_string_equal(out, "abc");
	assert_int_equal(qw_log_escape(out, 1, "abc", 3), 0);
	assert_string_equal(out, "");
}

/* stderr replaced by a pipe; returns its read end. */
static int
capture_stderr(int *saved)
{
	int p[2];

	assert_int_equal(pipe(p), 0);
	*saved = dup(STDERR_FILENO);
	assert_true(dup2(p[1], STDERR_FILENO) >= 0);
	close(p[1]);
	qw_log_init(true, LOG_DEBUG);
	return p[0];
}

static void
restore_stderr(int saved)
{
	dup2(saved, STDERR_FILENO);
	close(saved);
}

static size_t
read_all(int fd, char *buf, size_t size)
{
	size_t got = 0;
	ssize_t n;

	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	while (got < size - 1 && (n = read(fd, buf + got, size - 1 - got)) > 0)
		got += (size_t)n;
	buf[got] = '\0';
	return got;
}

static void
test_line_is_escaped(void **state)
{
	int saved, rfd = capture_stderr(&saved);
	char buf[512];

	qw_log_err("holder %s", "x\n<0>forged\x7f\xc2\x9b");
	read_all(rfd, buf, sizeof(buf));
	/* The "<3>" is ours; the rest is one line. */
	assert_string_equal(buf, "<3>holder x\\n<0>forged\\x7f\\xc2\\x9b\n");
	restore_stderr(saved);
	close(rfd);
}

/* A pipe nobody reads: logging returns at once, lines that do not fit are
 * counted; once the loop sees the pipe drained, the queued lines come out
 * whole and in order, then the count. */
static void
test_full_stderr_never_waits(void **state)
{
	int saved, rfd = capture_stderr(&saved);
	struct event_base *base = event_base_new();
	static char out[4 << 20];
	size_t got = 0, lines = 0;
	unsigned next = 0;

	assert_int_equal(qw_log_attach(base), 0);
	fcntl(rfd, F_SETFL, fcntl(rfd, F_GETFL) | O_NONBLOCK);
	for (unsigned i = 0; i < 40000; i++)
		qw_log_info("line %u %0100d", i, 0);
	/* Drain the pipe while the loop writes what was queued. */
	for (int turns = 0; turns < 100000 && got < sizeof(out) - 1; turns++) {
		event_base_loop(base, EVLOOP_NONBLOCK);
		ssize_t n = read(rfd, out + got, sizeof(out) - 1 - got);
		if (n > 0)
			got += (size_t)n;
		else if (strstr(out, "dropped") != NULL)
			break;
		out[got] = '\0';
	}
	out[got] = '\0';
	assert_non_null(strstr(out, "log lines dropped"));
	for (char *p = out, *nl; (nl = strchr(p, '\n')) != NULL; p = nl + 1) {
		unsigned n;
		if (sscanf(p, "<6>line %u ", &n) == 1) {
			assert_true(n >= next);	/* in order; a gap is the dropped ones */
			assert_int_equal(nl - p, (long)strlen("<6>line ") + snprintf(NULL, 0, "%u", n) + 101);
			next = n + 1;
			lines++;
		} else {
			assert_non_null(strstr(p, "log lines dropped"));
		}
	}
	assert_true(lines > 0 && lines < 40000);
	unsigned long long dropped = 0;
	sscanf(strstr(out, "<4>") + 3, "%llu", &dropped);
	assert_int_equal(lines + dropped, 40000);
	qw_log_detach();
	event_base_free(base);
	restore_stderr(saved);
	close(rfd);
}

int
main(void)
{
#define T(f) cmocka_unit_test(f)
	const struct CMUnitTest tests[] = {
		T(test_escape_c0),
		T(test_escape_del),
		T(test_escape_c1_utf8),
		T(test_escape_c1_lone),
		T(test_escape_keeps_text),
		T(test_escape_bounded),
		T(test_line_is_escaped),
		T(test_full_stderr_never_waits),
	};
#undef T

	return cmocka_run_group_tests(tests, NULL, NULL);
}
