/* clock.c - owns reading the clocks and arming timers. */
#include "config.h"

#include <event2/event.h>
#include <time.h>

#include "clock.h"

int64_t
qw_clock_wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t
qw_clock_mono_ms(void)
{
	return (int64_t)(qw_clock_mono_us() / 1000);
}

uint64_t
qw_clock_mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

void
qw_clock_arm(struct event *ev, uint64_t ms)
{
	struct timeval tv = { (time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000 };

	evtimer_add(ev, &tv);
}
