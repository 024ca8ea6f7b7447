/* pool_int.h - the pool's state, shared by the files that make up the pool:
 * pool.c (slots, fetching), run.c (one job's handler and outcome), settle.c
 * (writing results) and lease.c (instance leases and recovery). Nothing
 * outside them includes it. */
#ifndef QW_POOL_INT_H
#define QW_POOL_INT_H

#include <event2/event.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>
#include <time.h>

#include "clock.h"
#include "conf.h"
#include "flow.h"
#include "fmt.h"
#include "job.h"
#include "plugin_host.h"
#include "pool.h"
#include "keys.h"
#include "record.h"
#include "redis.h"
#include "tally.h"
#include "worker.h"

#define QW_OUTPUT_MAX (64 * 1024)
#define QW_CANCEL_TEXT_MAX 500	/* bytes of an operator's cancel reason kept */
#define QW_SETTLE_BATCH 512
#define QW_FETCH_MAX 1000
#define QW_SETTLE_DELAY_US 1000
#define QW_PROMOTE_MS 200
#define QW_PROMOTE_LIMIT 1000
#define QW_LEASE_TICK_MS 500
/* How long a queue held back by global_concurrency (by the jobs of other
 * instances), or by a half-open breaker's trial elsewhere, waits before it
 * asks again; its own results written end the wait at once. */
#define QW_FLOW_RETRY_MS 250
/* The longest a held queue waits before it asks again, whatever the wait it
 * was given: an operator's DEL of the breaker or rate key, or a reload, is
 * seen within this. */
#define QW_FLOW_WAIT_MAX_MS 5000
/* How many buffered jobs past the next one a started mark covers, at least
 * (qw_pool_say_started). */
#define QW_STARTED_AHEAD 32

/* The keys of a queue the daemon uses, named in keys.c. */
enum { K_PENDING = QW_KEY_PENDING, K_CLAIM = QW_KEY_CLAIM, K_ACTIVE = QW_KEY_ACTIVE,
	K_SCHEDULED = QW_KEY_SCHEDULED, K_DEAD = QW_KEY_DEAD, K_STATS = QW_KEY_STATS,
	K_LEASES = QW_KEY_LEASES, K_HOLDERS = QW_KEY_HOLDERS, K_STARTED = QW_KEY_STARTED,
	K_UNIQUE = QW_KEY_UNIQUE, K_PAUSED = QW_KEY_PAUSED, K_CANCEL = QW_KEY_CANCEL,
	K_BREAKER = QW_KEY_BREAKER, K_RATE = QW_KEY_RATE, K_COUNT };

/* The handler side of a RUNNING or CANCELLING record (run.c). A plugin run
 * whose thread is still inside the plugin after its record was settled
 * lives on, detached, until the thread returns. */
struct qw_run {
	struct qw_queue *q;
	struct qw_rec *rec;	/* NULL once detached */
	struct qw_job job;
	struct qw_exec *exec;
	struct qw_worker_job *wjob;	/* a job out to a persistent worker */
	struct qw_cts *cts;	/* linked to the shutdown source, with the job's deadline */
	struct qw_work work;	/* a plugin job on a worker thread */
	bool in_thread;		/* work is with a worker thread */
	bool unstarted;		/* cancelled before a thread took it */
	struct event *grace_ev;	/* a cancelled plugin's kill_grace */
	char *cancel_text;	/* cancelled by an operator: the reason given (owned) */
	uint64_t started_us;	/* monotonic: the run's duration, for prefetch = auto and /metrics */
	uint64_t deadline_us;	/* monotonic: its timeout passes (0: not started) */
	int breaker;		/* the outcome's, for its record (qw_outcome) */
	/* Kept from an earlier job of the queue (run.c's spare runs): a token
	 * source to relink as cts, unlinked meanwhile. */
	struct qw_cts *spare_cts;
	struct qw_run *next_spare;
};

/* A queue's fetching: one state at a time, moved only by qw_fetch_move
 * (pool.c), which checks where it comes from.
 *   OFF          -> RECONCILING  our active hash is being read (lease.c)
 *   RECONCILING  -> IDLE         it was: every job in it is known here
 *   RECONCILING  -> OFF          reading it failed: the lease tick tries again
 *   IDLE         -> ASKING       a fetch script call was sent
 *   ASKING       -> IDLE         it brought all it asked for: there may be more
 *   ASKING       -> WAITING      it came back short, and pending has not changed
 *                                since it was sent: wait for Redis to say it did
 *   ASKING       -> HELD         it failed: fetch_retry_ev is armed
 *   ASKING       -> OFF          its reply was lost with the connection
 *   WAITING      -> IDLE         pending changed (a wake-up), or quiet ended
 *   IDLE, WAITING -> HELD        a handler could not start for a moment (run.c)
 *   HELD         -> IDLE         fetch_retry_ev fired
 *   ASKING       -> PAUSED       the fetch script found the queue paused
 *   IDLE, WAITING, HELD -> PAUSED   the lease tick found it paused
 *   PAUSED       -> IDLE         the lease tick found it resumed
 *   ASKING       -> LIMITED      the fetch script said a flow limit (breaker,
 *                                rate, global_concurrency) holds the queue
 *                                back: fetch_retry_ev is armed with the wait
 *                                it gave, so nothing polls in between
 *   LIMITED      -> IDLE         fetch_retry_ev fired, or (global_concurrency)
 *                                results of ours were written: a slot may be
 *                                free over all instances
 *   LIMITED      -> PAUSED       the lease tick found it paused
 *   IDLE, WAITING, HELD, PAUSED, LIMITED -> OFF   the main connection went away
 * A fetch in flight (ASKING) holds the slots it asked for until its reply.
 * A queue is paused while its key PREFIX:{Q}:paused exists (qworkerd(8),
 * "PAUSE AND RESUME"): PAUSED takes and starts nothing, and its buffer went
 * back to pending as it entered it. */
enum qw_fetch_state {
	QW_FETCH_OFF,
	QW_FETCH_RECONCILING,
	QW_FETCH_IDLE,
	QW_FETCH_ASKING,
	QW_FETCH_WAITING,
	QW_FETCH_HELD,
	QW_FETCH_PAUSED,
	QW_FETCH_LIMITED,
	QW_FETCH_NSTATES
};

/* Whether the keys a queue's results go to can take them (settle.c). Every
 * settle reply says which of pending, scheduled, dead and stats hold the
 * wrong type (a producer's SET on them, say). A result whose key does is
 * left in the active hash untouched and its record stays FINISHED here
 * (held), sent again with a backoff; counts that stats cannot take are
 * owed and go with a later call. Moved only by qw_settle_keys_move:
 *   UNCHECKED -> OK, WRONG   the first settle reply
 *   OK        -> WRONG       a key holds the wrong type, or the call failed
 *   WRONG     -> WRONG       another problem (logged once per problem)
 *   WRONG     -> OK          a reply found every key right again
 * Outside OK the queue's fetches count its unwritten results as taken, so
 * its active hash stays within concurrency + prefetch (qw_settle_gate):
 * fetching stops while results cannot be written, and goes on by itself
 * as they are. UNCHECKED is strict too, so a key already wrong at start
 * never lets the bound slip while the first reply is on its way. */
enum qw_keys_state {
	QW_KEYS_UNCHECKED,
	QW_KEYS_OK,
	QW_KEYS_WRONG,
};

/* The keys a result needs besides the active hash, as the settle script
 * reports them (its bits are the script's). QW_BAD_CALL: the whole call
 * failed (the active hash holds the wrong type, or Redis refused it). */
#define QW_BAD_PENDING 1u
#define QW_BAD_SCHEDULED 2u
#define QW_BAD_DEAD 4u
#define QW_BAD_STATS 8u
#define QW_BAD_CALL 16u

#define QW_OWED_MAX 16
/* A count stats could not take yet. */
struct qw_owed {
	char name[24];
	uint64_t n;
};

struct qw_writable {
	enum qw_keys_state state;
	unsigned bad;		/* WRONG: QW_BAD_* */
	char *why;		/* WRONG: which key and why, for the log and STATUS= (owned) */
	uint64_t backoff_ms;	/* WRONG: the next retry of held results */
	bool retry_due;		/* the retry fired: the next flush sends held results too */
	unsigned nowed;
	struct qw_owed owed[QW_OWED_MAX];
};

/* A queue's hold on its instance's lease (SPEC 10), moved only by
 * qw_lease_move (lease.c), which checks where it comes from.
 *   NONE     -> TAKING    a take (compare-and-set) was sent
 *   TAKING   -> HELD      it took the lease: the active hash is reconciled
 *   TAKING   -> WAITING   a live process holds it, or one we cannot prove
 *                         gone: take again each tick until it expires
 *   TAKING   -> NONE      the reply was lost or an error came
 *   WAITING  -> TAKING    the lease tick
 *   HELD     -> NONE      fenced: a renewal found the lease expired or
 *                         held by another process; taken again as at start
 *   HELD     -> RELEASED  given up at the end of a drain
 * Only a queue in HELD fetches or starts jobs. */
enum qw_lease_state {
	QW_LEASE_NONE,
	QW_LEASE_TAKING,
	QW_LEASE_WAITING,
	QW_LEASE_HELD,
	QW_LEASE_RELEASED,
	QW_LEASE_NSTATES
};

struct qw_queue {
	struct qw_pool *pool;
	struct qw_queue_conf qc;	/* copy; strings borrowed from pool->conf but the name */
	char *name;			/* owned; qc.name points here */
	char *key[K_COUNT];
	struct qw_recset recs;	/* every job of the queue this process knows */
	enum qw_fetch_state fetch;
	unsigned asked;		/* ASKING: jobs it asked for */
	unsigned asked_slots;	/* of which slots reserved to run them at once */
	uint64_t first_seq;	/* the sequence number of its first job */
	uint64_t started_sent;	/* the highest sequence number said started (K_STARTED) */
	uint64_t asked_us;	/* ASKING: when (monotonic) */
	/* prefetch = auto: a job's run and a fetch's round trip, smoothed
	 * (microseconds, 0: not measured yet), and the buffer size last logged. */
	uint64_t job_us, fetch_us;
	unsigned ahead_said;
	/* Whether the paused key existed when last seen: what the log said last
	 * (once per change, not once per reconnect), STATUS= and metrics say. */
	bool paused_seen;
	/* The circuit breaker as the last fetch reply said (CLOSED while it is
	 * off): STATUS= and metrics. Other instances move it too, so this is a
	 * view, not a machine of ours (flow.h has the machine). */
	enum qw_breaker_state breaker_seen;
	char *active_any;	/* "PREFIX:{Q}:active:": any instance's active hash (owned) */
	char *flow_err;		/* the last unreadable flow status (owned) */
	int cw;			/* smooth weighted round robin */
	/* In a cluster: the slot of the queue's hash tag, and the master's
	 * connection the queue was last told about (qw_pool_cluster_cb). */
	unsigned slot;
	struct qw_redis *link;
	struct qw_redis *blk;	/* tells the queue of new jobs while it is empty */
	bool blocking;		/* that wake-up is armed (subscribed) */
	bool woken;		/* pending changed while a fetch was in flight */
	unsigned sending;	/* settle calls in flight */
	struct qw_writable wr;	/* settle.c's: whether results can be written */
	struct qw_plugin *plugin;	/* the pool's own reference, or NULL */
	void *plugin_state;
	struct qw_worker_group *worker;	/* worker = queues: their processes, or NULL */
	struct event *promote_ev, *lease_ev;
	char *promote_err, *fetch_err;	/* the last promote, fetch error: logged once (owned) */
	char *pause_err, *cancel_err;	/* the last pause check, cancel poll error (owned) */
	/* The cancel poll's sweep of stale requests: where its HSCAN goes on,
	 * and the ticks since the last look while no job is in hand. */
	char cancel_cursor[QW_FMT_U64_LEN];
	unsigned cancel_idle;
	struct event *fetch_retry_ev, *settle_retry_ev;
	enum qw_lease_state lease;
	char *lease_wait;	/* WAITING: who holds the lease and why we wait (owned) */
	/* Monotonic ms since when every renewal of our lease succeeded, 0 while
	 * not HELD or after a failed one: we recover other instances' jobs
	 * only once it is lease_timeout plus a tick old (SPEC 10). */
	int64_t lease_ok_ms;
	char *reaping;		/* the dead instance being recovered, if any */
	/* At the last status tick (qw_pool_poll), -1 unknown: LLEN of pending
	 * and dead, ZCARD of scheduled. */
	int64_t pending, scheduled, dead;
	struct qw_tally tally;	/* for /metrics; kept across reloads */
	/* The job deadlines of its running jobs (run.c): one timer, armed for
	 * the earliest, and when (monotonic µs, 0: not armed). */
	struct event *deadline_ev;
	uint64_t deadline_at_us;
	/* Runs of finished jobs kept for the next ones (run.c). */
	struct qw_run *spare_runs;
	unsigned nspare_runs;
};

struct qw_pool {
	struct event_base *base;
	struct evdns_base *dns;
	const struct qw_conf *conf;
	struct qw_redis *redis;
	struct qw_sentinel *sentinel;	/* with Sentinel: names every connection's master */
	struct qw_cluster *cluster;	/* with cluster = yes: owns redis and the masters' */
	struct qw_queue *queues;
	size_t nqueues;
	unsigned concurrency;
	enum qw_stage stage;
	char runid[16];		/* names this process's fields in the active hashes */
	char *holder;		/* host, boot id, pid, start time: proves we are alive */
	uint64_t seq;
	struct event *flush_ev, *giveup_ev;
	struct event *eval_ev;	/* the deferred re-evaluation: see qw_pool_dirty */
	struct qw_execs *execs;		/* running exec handlers */
	struct qw_workers *workers;	/* threads for plugin handlers */
	struct qw_cts *shutdown;	/* the daemon's; fired by SIGTERM/SIGINT */
	char **env;		/* the daemon's environment without QW_* */
	size_t nenv;
	uint64_t processed, failed, recovered;
	unsigned short rnd[3];
	unsigned releasing;	/* lease releases in flight at the end of a drain */
	unsigned abandoned;	/* threads still inside a plugin whose job is settled */
	qw_pool_drained_fn *drained;
	qw_pool_ready_fn *ready;
	void *cb_arg;
	bool ready_sent;	/* READY=1 goes once */
	char *policy_warning;	/* set while Redis may evict keys */
};

/* Something changed that may free a slot, end the drain or make the daemon
 * ready: re-evaluate once, at the end of this loop turn (qw_pool_eval_cb). */
void qw_pool_dirty(struct qw_pool *pool);
/* Whether new jobs may be taken at all / the drain has begun. */
bool qw_pool_taking(const struct qw_pool *pool);
bool qw_pool_stopping(const struct qw_pool *pool);

/* fetch.c */
int qw_fetch_init(struct qw_queue *q);
/* Moves the queue's fetch state, checking where it comes from. */
int qw_fetch_move(struct qw_queue *q, enum qw_fetch_state to);
/* Asks for SLOTS jobs to run now plus EXTRA to keep at hand. */
int qw_fetch_ask(struct qw_queue *q, unsigned slots, unsigned extra);
/* How many jobs to keep taken ahead now (logs when auto moves it far). */
unsigned qw_fetch_ahead(struct qw_queue *q);
/* Gives every buffered job back to the tail of pending as it was. */
void qw_fetch_give_back(struct qw_queue *q);
/* Asks whether the queue is paused (the lease tick): PAUSED, or back. */
void qw_fetch_check_paused(struct qw_queue *q);
/* Results of Q were written: a queue held back by global_concurrency asks
 * again at once. */
void qw_fetch_settled(struct qw_queue *q);
/* Whether Q has a flow limit (breaker, rate, global_concurrency). */
bool qw_fetch_flow_on(const struct qw_queue *q);
int qw_fetch_open_wake(struct qw_queue *q);
/* Stops waiting for wake-ups (quiet); with CLOSE the connection goes. */
void qw_fetch_abandon_wake(struct qw_queue *q, bool close);
/* Slots in use: running and cancelling jobs, and slots fetches asked for. */
unsigned qw_pool_busy(const struct qw_pool *pool);
/* The queue's concurrency: its own, else the pool's. */
unsigned qw_pool_cap(const struct qw_queue *q);
/* How many jobs it takes ahead of its free slots now (prefetch, or auto's
 * current choice). */
unsigned qw_fetch_prefetch(const struct qw_queue *q);
/* A job of Q has ended after RAN_US: prefetch = auto learns how long jobs
 * take. */
void qw_fetch_job_ran(struct qw_queue *q, uint64_t ran_us);

/* run.c */
/* Starts the job of a BUFFERED record (which it moves to RUNNING). */
void qw_run_start(struct qw_rec *rec);
/* At teardown: detaches the run from its record and frees it (or leaves it
 * to its thread). */
void qw_run_drop(struct qw_run *run);
/* deadline_ev's callback: cancels the runs whose timeout has passed. */
void qw_run_deadline_cb(evutil_socket_t fd, short what, void *arg);
/* Frees the queue's spare runs; at its end. */
void qw_run_spares_free(struct qw_queue *q);
/* The job of a RUNNING or CANCELLING record was taken over by another
 * process: cancel its handler; the record (FENCED) holds its slot until the
 * handler ends, then goes with nothing written. */
void qw_run_fence(struct qw_rec *rec);
/* An operator cancelled the job of REC with the reason TEXT (LEN bytes,
 * may be empty): a running job's token fires (QW_CANCEL_CANCELLED), and the
 * job goes to dead once its handler has ended; a buffered one goes to dead
 * at once. Nothing for a record in another state. */
void qw_run_cancel(struct qw_rec *rec, const char *text, size_t len);

/* cancel.c */
/* The lease tick: reads the queue's cancel requests for this process's
 * jobs and cancels them, and deletes a share of the requests for jobs no
 * live instance runs; every tick while jobs are in hand, every
 * QW_CANCEL_IDLE_TICKS otherwise. */
void qw_cancel_poll(struct qw_queue *q);
/* An operator's reason as it is kept (malloc'd): at most QW_CANCEL_TEXT_MAX
 * bytes of TEXT (LEN bytes), or a note when it is not UTF-8 text (the
 * error in the dead envelope is JSON). NULL when out of memory. */
char *qw_cancel_text(const char *text, size_t len);
/* "cancelled: TEXT" into BUF, or "cancelled" when TEXT is NULL or empty. */
void qw_cancel_error(char *buf, size_t len, const char *text);
/* The settle script found a request to cancel the job of REC (SETTLING),
 * whose result was to put it back on pending or in scheduled: its result
 * becomes dead as cancelled with reason TEXT (TLEN bytes), and REC is
 * FINISHED, to be sent again. -1 (REC unchanged) when out of memory. */
int qw_cancel_settled(struct qw_rec *rec, const char *text, size_t tlen);

/* The program or plugin that runs the queue's jobs, for log lines. */
const char *qw_pool_handler_name(const struct qw_queue *q);

/* settle.c */
/* A result decided without running the job (reconcile, recovery): takes
 * FIELD, ELEM and OWNER (NULL for our own jobs). JOB, when given, is the
 * job parsed, whose unique_for hold the result may end (qw_settle_hold). */
int qw_settle_add(struct qw_queue *q, char *field, enum qw_dest dest, char *elem, size_t len,
    const char *counters, char *owner, const struct qw_job *job);
/* REC's result (FINISHED) ends JOB's unique_for hold when it ends the job:
 * done or dead. A retried or requeued job keeps its hold. */
void qw_settle_hold(struct qw_rec *rec, const struct qw_job *job);
/* REC moved to FINISHED: send it within QW_SETTLE_DELAY_US. */
void qw_settle_soon(struct qw_queue *q);
void qw_settle_flush_cb(evutil_socket_t fd, short what, void *arg);
/* settle_retry_ev (ARG is the queue): held results go again. */
void qw_settle_retry_cb(evutil_socket_t fd, short what, void *arg);
/* Results not written yet: FINISHED and SETTLING records. */
unsigned qw_settle_unwritten(const struct qw_pool *pool);
/* The fetch gate: how many more jobs the queue may take now without its
 * active hash holding more than BOUND (concurrency + prefetch) while its
 * results may not be writable (see enum qw_keys_state); UINT_MAX when they
 * are. */
unsigned qw_settle_room(const struct qw_queue *q, unsigned bound);
/* Held results (results that cannot be written now) and why, or 0. */
unsigned qw_settle_held(const struct qw_queue *q, const char **why);
void qw_settle_fini(struct qw_queue *q);

/* lease.c */
int qw_lease_init(struct qw_pool *pool);
void qw_lease_start(struct qw_queue *q);
void qw_lease_release(struct qw_pool *pool);
/* Reads our active hash, settles the jobs in it this process does not know
 * and fences the runs whose jobs are gone from it (OFF -> RECONCILING). */
void qw_lease_reconcile(struct qw_queue *q);

/* The connection a queue's commands go to: in a cluster, its master's
 * (the control connection while the map names none: it answers MOVED). */
struct qw_redis *qw_pool_queue_redis(const struct qw_queue *q);

#endif
