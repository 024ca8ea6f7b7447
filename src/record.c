/* record.c - owns job records: their states, the moves between them, the
 * list per state and the index by field (see record.h). */
#include "config.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "record.h"

#define QW_REC_MIN_BUCKETS 64

static const char *const qw_record_names[QW_REC_NSTATES] = {
	[QW_REC_NEW] = "new", [QW_REC_BUFFERED] = "buffered", [QW_REC_RUNNING] = "running",
	[QW_REC_CANCELLING] = "cancelling", [QW_REC_FENCED] = "fenced",
	[QW_REC_FINISHED] = "finished",
	[QW_REC_SETTLING] = "settling",
};

/* Which moves are legal: qw_record_moves[from] has bit (1 << to). */
#define B(s) (1u << (s))
static const unsigned qw_record_moves[QW_REC_NSTATES] = {
	[QW_REC_NEW] = B(QW_REC_BUFFERED) | B(QW_REC_FINISHED),
	[QW_REC_BUFFERED] = B(QW_REC_RUNNING) | B(QW_REC_FINISHED),
	[QW_REC_RUNNING] = B(QW_REC_CANCELLING) | B(QW_REC_FENCED) | B(QW_REC_FINISHED),
	[QW_REC_CANCELLING] = B(QW_REC_FENCED) | B(QW_REC_FINISHED),
	[QW_REC_FINISHED] = B(QW_REC_SETTLING),
	[QW_REC_SETTLING] = B(QW_REC_FINISHED),
};
#undef B

const char *
qw_record_state_name(enum qw_rec_state s)
{
	return s < QW_REC_NSTATES ? qw_record_names[s] : "?";
}

/* FNV-1a: fields are short and already random in their first part. */
static size_t
qw_record_hash(const char *s, size_t len)
{
	uint64_t h = 1469598103934665603ULL;

	for (size_t i = 0; i < len; i++)
		h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
	return (size_t)h;
}

int
qw_record_set_init(struct qw_recset *rs, const char *name)
{
	memset(rs, 0, sizeof(*rs));
	rs->name = name;
	for (int s = 0; s < QW_REC_NSTATES; s++)
		TAILQ_INIT(&rs->list[s]);
	rs->bucket = calloc(QW_REC_MIN_BUCKETS, sizeof(*rs->bucket));
	if (rs->bucket == NULL)
		return -1;
	rs->nbuckets = QW_REC_MIN_BUCKETS;
	return 0;
}

/* How many freed records a queue keeps for its next jobs: about what one
 * queue holds at once at full speed (a prefetched buffer of 256 and the
 * batches of results on their way), a few hundred KiB at most. */
#define QW_REC_SPARE_MAX 1024

/* Gives back what REC holds; kept as a spare when SPARE_OK and there is room. */
static void
qw_record_destroy(struct qw_recset *rs, struct qw_rec *rec, bool spare_ok)
{
	if (rec->field != rec->field_buf)
		free(rec->field);
	free(rec->owner);
	free(rec->elem);
	free(rec->hold_id);
	free(rec->hold_token);
	if (!spare_ok || rs->nspare >= QW_REC_SPARE_MAX) {
		free(rec);
		return;
	}
	rec->hnext = rs->spare;
	rs->spare = rec;
	rs->nspare++;
}

/* A zeroed record, a spare one when there is one. */
static struct qw_rec *
qw_record_alloc(struct qw_recset *rs)
{
	struct qw_rec *rec = rs->spare;

	if (rec == NULL)
		return calloc(1, sizeof(*rec));
	rs->spare = rec->hnext;
	rs->nspare--;
	memset(rec, 0, offsetof(struct qw_rec, field_buf));
	return rec;
}

void
qw_record_set_fini(struct qw_recset *rs)
{
	struct qw_rec *rec0;

	for (size_t b = 0; b < rs->nbuckets; b++) {
		struct qw_rec *rec = rs->bucket[b], *next;
		for (; rec != NULL; rec = next) {
			next = rec->hnext;
			assert(rec->run == NULL);
			qw_record_destroy(rs, rec, false);
		}
	}
	while ((rec0 = rs->spare) != NULL) {
		rs->spare = rec0->hnext;
		free(rec0);
	}
	rs->nspare = 0;
	free(rs->bucket);
	rs->bucket = NULL;
	rs->nbuckets = rs->count = 0;
}

/* Doubles the index once it holds more records than buckets. Out of memory
 * it stays as it is: chains get longer, nothing is lost. */
static void
qw_record_set_grow(struct qw_recset *rs)
{
	size_t nb = rs->nbuckets * 2;
	struct qw_rec **nbk;

	if (rs->count < rs->nbuckets || (nbk = calloc(nb, sizeof(*nbk))) == NULL)
		return;
	for (size_t b = 0; b < rs->nbuckets; b++) {
		struct qw_rec *rec = rs->bucket[b], *next;
		for (; rec != NULL; rec = next) {
			size_t h = qw_record_hash(rec->field, strlen(rec->field)) & (nb - 1);
			next = rec->hnext;
			rec->hnext = nbk[h];
			nbk[h] = rec;
		}
	}
	free(rs->bucket);
	rs->bucket = nbk;
	rs->nbuckets = nb;
}

/* Indexes REC (NEW), whose field is set. */
static struct qw_rec *
qw_record_index(struct qw_recset *rs, struct qw_rec *rec, struct qw_queue *q, size_t len)
{
	size_t h;

	rec->q = q;
	rec->state = QW_REC_NEW;
	qw_record_set_grow(rs);
	h = qw_record_hash(rec->field, len) & (rs->nbuckets - 1);
	rec->hnext = rs->bucket[h];
	rs->bucket[h] = rec;
	rs->count++;
	return rec;
}

struct qw_rec *
qw_record_new(struct qw_recset *rs, struct qw_queue *q, char *field, char *owner)
{
	struct qw_rec *rec = qw_record_alloc(rs);

	if (rec == NULL) {
		free(field);
		free(owner);
		return NULL;
	}
	rec->field = field;
	rec->owner = owner;
	return qw_record_index(rs, rec, q, strlen(field));
}

struct qw_rec *
qw_record_new_copy(struct qw_recset *rs, struct qw_queue *q, const char *field, size_t len)
{
	struct qw_rec *rec = qw_record_alloc(rs);

	if (rec == NULL)
		return NULL;
	if (len < sizeof(rec->field_buf)) {
		rec->field = rec->field_buf;
	} else if ((rec->field = malloc(len + 1)) == NULL) {
		free(rec);
		return NULL;
	}
	memcpy(rec->field, field, len);
	rec->field[len] = '\0';
	return qw_record_index(rs, rec, q, len);
}

struct qw_rec *
qw_record_find(const struct qw_recset *rs, const char *field, size_t len)
{
	struct qw_rec *rec = rs->bucket[qw_record_hash(field, len) & (rs->nbuckets - 1)];

	for (; rec != NULL; rec = rec->hnext)
		if (strncmp(rec->field, field, len) == 0 && rec->field[len] == '\0')
			return rec;
	return NULL;
}

int
qw_record_move(struct qw_recset *rs, struct qw_rec *rec, enum qw_rec_state to)
{
	enum qw_rec_state from = rec->state;

	if (from >= QW_REC_NSTATES || to >= QW_REC_NSTATES || !(qw_record_moves[from] & (1u << to))) {
		qw_log_err("queue %s: job record %s cannot move from %s to %s (a bug)", rs->name,
		    rec->field, qw_record_state_name(from), qw_record_state_name(to));
		assert(!"illegal job record move");
		return -1;
	}
	if (from != QW_REC_NEW) {
		TAILQ_REMOVE(&rs->list[from], rec, link);
		rs->n[from]--;
	}
	TAILQ_INSERT_TAIL(&rs->list[to], rec, link);
	rs->n[to]++;
	rec->state = to;
	return 0;
}

int
qw_record_finish(struct qw_recset *rs, struct qw_rec *rec, enum qw_dest dest, char *elem,
    size_t len, uint64_t delay_ms, const char *counters)
{
	if (qw_record_move(rs, rec, QW_REC_FINISHED) < 0) {
		free(elem);
		return -1;
	}
	if (rec->elem != elem)
		free(rec->elem);
	rec->elem = elem;
	rec->len = len;
	rec->dest = dest;
	rec->delay_ms = delay_ms;
	rec->counters = counters;
	rec->breaker = 0;
	rec->run = NULL;
	free(rec->hold_id);
	free(rec->hold_token);
	rec->hold_id = rec->hold_token = NULL;
	return 0;
}

int
qw_record_hold(struct qw_rec *rec, const char *id, const char *token)
{
	char *i = strdup(id), *t = strdup(token);

	if (i == NULL || t == NULL) {
		free(i);
		free(t);
		return -1;
	}
	free(rec->hold_id);
	free(rec->hold_token);
	rec->hold_id = i;
	rec->hold_token = t;
	return 0;
}

void
qw_record_free(struct qw_recset *rs, struct qw_rec *rec)
{
	struct qw_rec **pp = &rs->bucket[qw_record_hash(rec->field, strlen(rec->field)) &
	    (rs->nbuckets - 1)];

	assert(rec->run == NULL);
	while (*pp != rec)
		pp = &(*pp)->hnext;
	*pp = rec->hnext;
	rs->count--;
	if (rec->state != QW_REC_NEW) {
		TAILQ_REMOVE(&rs->list[rec->state], rec, link);
		rs->n[rec->state]--;
	}
	qw_record_destroy(rs, rec, true);
}
