/* lease.h - proving that an instance's process is gone (SPEC 4, 10). */
#ifndef QW_LEASE_H
#define QW_LEASE_H

#include <stddef.h>

/* "host<TAB>boot-id<TAB>pid-namespace<TAB>pid<TAB>start-time<TAB>started-ms"
 * for this process (start-time in clock ticks since boot, as /proc has it;
 * started-ms when it took up its leases, in Unix ms); malloc'd. */
char *qw_lease_holder_info(void);

/* What this process can tell about the holder INFO names. */
enum qw_holder {
	QW_HOLDER_GONE,		/* proved gone: same host, boot and pid namespace, and
				 * that pid no longer runs with that start time */
	QW_HOLDER_LIVE,		/* it still runs here */
	QW_HOLDER_UNKNOWN,	/* no proof either way: another host or boot, another
				 * pid namespace, a pid we cannot see, info we cannot read */
};
/* Says which, and writes why (for a log line) into WHY. */
enum qw_holder qw_lease_holder_state(const char *info, char *why, size_t len);

#endif
