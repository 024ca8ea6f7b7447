/* clock.h - the daemon's clocks and timer arming, in one place: wall time
 * (what goes into Redis and handler deadlines) and monotonic time (what
 * measures intervals in this process). */
#ifndef QW_CLOCK_H
#define QW_CLOCK_H

#include <stdint.h>

struct event;

/* Unix time in milliseconds (CLOCK_REALTIME). */
int64_t qw_clock_wall_ms(void);
/* CLOCK_MONOTONIC in milliseconds and microseconds. */
int64_t qw_clock_mono_ms(void);
uint64_t qw_clock_mono_us(void);
/* (Re)arms the timer EV to fire once, MS milliseconds from now. */
void qw_clock_arm(struct event *ev, uint64_t ms);

#endif
