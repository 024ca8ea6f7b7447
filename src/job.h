/* job.h - what a Redis list element means: raw job or envelope (SPEC 3). */
#ifndef QW_JOB_H
#define QW_JOB_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct qw_queue_conf;

#define QW_JOB_MAX_TIMEOUT_S (365.0 * 24 * 3600)

struct qw_job {
	char *elem;		/* the element exactly as taken from Redis (owned) */
	size_t elem_len;
	json_t *env;		/* the envelope object, or NULL for a raw job */
	char *id;		/* owned */
	const char *payload;	/* what the handler gets: into elem, or payload_buf */
	size_t payload_len;
	char *payload_buf;	/* owned when the payload had to be decoded */
	uint64_t timeout_ms;
	unsigned max_attempts;
	unsigned attempt;	/* failed runs so far */
	unsigned interrupted;	/* runs cut short by a shutdown */
	int64_t enqueued_at_ms;	/* its enqueued_at member, or -1 */
	char *error;		/* why the job cannot run at all (goes to dead), or NULL */
	/* Its unique_for hold: the envelope's "unique" member when that is a
	 * string (qw_enqueue writes it; qworkerd-jobs(7)), or NULL. Into env. */
	const char *unique;
	/* Too large to rewrite: it goes to dead exactly as taken, since an
	 * envelope around it could be more than Redis accepts in a command. */
	bool verbatim;
};

/* Oversize elements above this go to dead as they are. */
#define QW_JOB_REWRITE_MAX (64u << 20)

/* The longest element that may still be an envelope whose payload fits in
 * the queue's max_payload; anything longer is too large to run. */
uint64_t qw_job_json_max(const struct qw_queue_conf *qc);

/* Takes ownership of ELEM. Fills JOB; a job that cannot run gets job->error
 * and is still a valid job to encode. NEW_ID names a job that carries none.
 * Returns -1 only when out of memory (JOB is then cleared). */
int qw_job_parse(struct qw_job *job, char *elem, size_t len,
    const struct qw_queue_conf *qc, const char *new_id);
void qw_job_clear(struct qw_job *job);

/* Builds the envelope that goes back to Redis: the job's own members (unknown
 * ones kept, a raw job wrapped) with attempt, interrupted, id, when ERROR is
 * set error and failed_at, and when RUN is set the managed member "run" (the
 * active-hash field of the run that wrote it: what keeps identical jobs
 * apart in the scheduled sorted set). Returns a malloc'd string or NULL
 * (ENOMEM). */
char *qw_job_encode(struct qw_job *job, const char *error, int64_t failed_at_ms,
    const char *run, size_t *len);

/* Delay before the next try after ATTEMPT failed runs: retry_base doubled per
 * run, times a jitter in [0.8, 1.2) from R in [0, 1), capped at retry_max. */
uint64_t qw_job_backoff_ms(const struct qw_queue_conf *qc, unsigned attempt, double r);

/* Base64 (RFC 4648) for payloads that are not UTF-8. */
char *qw_base64_encode(const void *data, size_t len);
int qw_base64_decode(const char *in, size_t inlen, char **out, size_t *outlen);

#endif
