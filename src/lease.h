/* lease.h - proving that an instance's process is gone (SPEC 4). */
#ifndef QW_LEASE_H
#define QW_LEASE_H

/* "host<TAB>boot-id<TAB>pid<TAB>start-time" for this process; malloc'd. */
char *qw_lease_holder_info(void);
/* 1 when INFO names a process on this host (same boot) that no longer runs,
 * 0 when it may still run or we cannot tell (another host). */
int qw_lease_holder_gone(const char *info);

#endif
