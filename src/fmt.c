/* fmt.c - owns number formatting (see fmt.h). */
#include "config.h"

#include <stdio.h>

#include "fmt.h"

size_t
qw_fmt_u64(char *buf, uint64_t v)
{
	char tmp[QW_FMT_U64_LEN];
	size_t n = 0;

	do
		tmp[n++] = (char)('0' + v % 10);
	while ((v /= 10) != 0);
	for (size_t i = 0; i < n; i++)
		buf[i] = tmp[n - 1 - i];
	buf[n] = '\0';
	return n;
}

const char *
qw_fmt_seconds(char *buf, size_t len, uint64_t ms)
{
	/* %.15g keeps every digit a uint64 of milliseconds / 1000 can carry
	 * below 1e15 and never switches to exponent form there. */
	snprintf(buf, len, "%.15g", (double)ms / 1000);
	return buf;
}

const char *
qw_fmt_duration(char *buf, size_t len, uint64_t ms)
{
	static const struct { uint64_t ms; char unit; } units[] = {
		{ 86400000, 'd' }, { 3600000, 'h' }, { 60000, 'm' }, { 1000, 's' },
	};
	char n[QW_FMT_U64_LEN];

	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (ms != 0 && ms % units[i].ms == 0) {
			qw_fmt_u64(n, ms / units[i].ms);
			snprintf(buf, len, "%s%c", n, units[i].unit);
			return buf;
		}
	}
	if (ms >= 1000) {
		char s[32];
		snprintf(buf, len, "%ss", qw_fmt_seconds(s, sizeof(s), ms));
		return buf;
	}
	qw_fmt_u64(n, ms);
	snprintf(buf, len, "%sms", n);
	return buf;
}

const char *
qw_fmt_count(char *buf, size_t len, uint64_t n, const char *one, const char *many)
{
	char num[QW_FMT_U64_LEN];

	qw_fmt_u64(num, n);
	snprintf(buf, len, "%s %s", num, n == 1 ? one : many);
	return buf;
}
