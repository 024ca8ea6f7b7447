/* job.c - owns the job format: tells raw jobs from envelopes, checks envelope
 * members, and writes the envelope that goes back to Redis on retry, requeue
 * or dead. Pure functions of their inputs: no I/O, no clock. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf.h"
#include "job.h"

static const char qw_b64[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *
qw_base64_encode(const void *data, size_t len)
{
	const unsigned char *s = data;
	char *out = malloc((len + 2) / 3 * 4 + 1), *o = out;

	if (out == NULL)
		return NULL;
	for (size_t i = 0; i < len; i += 3) {
		unsigned v = (unsigned)s[i] << 16;
		if (i + 1 < len)
			v |= (unsigned)s[i + 1] << 8;
		if (i + 2 < len)
			v |= s[i + 2];
		*o++ = qw_b64[(v >> 18) & 63];
		*o++ = qw_b64[(v >> 12) & 63];
		*o++ = i + 1 < len ? qw_b64[(v >> 6) & 63] : '=';
		*o++ = i + 2 < len ? qw_b64[v & 63] : '=';
	}
	*o = '\0';
	return out;
}

int
qw_base64_decode(const char *in, size_t inlen, char **out, size_t *outlen)
{
	unsigned char *buf, *o;
	unsigned v = 0, bits = 0;
	size_t i;

	if (inlen % 4 != 0)
		return -1;
	buf = malloc(inlen / 4 * 3 + 1);
	if (buf == NULL)
		return -1;
	o = buf;
	for (i = 0; i < inlen && in[i] != '='; i++) {
		const char *p = in[i] ? strchr(qw_b64, in[i]) : NULL;
		if (p == NULL)
			goto bad;
		v = (v << 6) | (unsigned)(p - qw_b64);
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			*o++ = (unsigned char)(v >> bits);
		}
	}
	if (inlen - i > 2)
		goto bad;
	for (; i < inlen; i++)
		if (in[i] != '=')
			goto bad;
	*o = '\0';
	*out = (char *)buf;
	*outlen = (size_t)(o - buf);
	return 0;
bad:
	free(buf);
	return -1;
}

void
qw_job_clear(struct qw_job *job)
{
	free(job->elem);
	json_decref(job->env);
	free(job->id);
	free(job->payload_buf);
	free(job->error);
	memset(job, 0, sizeof(*job));
}

static int qw_job_fail(struct qw_job *job, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int
qw_job_fail(struct qw_job *job, const char *fmt, ...)
{
	char *msg;
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&msg, fmt, ap);
	va_end(ap);
	if (n < 0)
		return -1;
	free(job->error);
	job->error = msg;
	return 0;
}

/* Reads an optional integer member into *out; 1 when set, 0 when absent,
 * -1 when present but not a whole number in [lo, hi]. */
static int
qw_job_int_member(json_t *env, const char *name, long long lo, long long hi, unsigned *out)
{
	json_t *v = json_object_get(env, name);

	if (v == NULL)
		return 0;
	if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
		return -1;
	*out = (unsigned)json_integer_value(v);
	return 1;
}

/* Sets job->payload from the envelope's payload member. */
static int
qw_job_envelope_payload(struct qw_job *job, json_t *payload)
{
	json_t *enc = json_object_get(job->env, "payload_encoding");

	if (enc != NULL) {
		if (!json_is_string(enc) || strcmp(json_string_value(enc), "base64") != 0)
			return qw_job_fail(job, "member '%s' must be \"base64\"%s",
			    "payload_encoding", "");
		if (!json_is_string(payload))
			return qw_job_fail(job, "member '%s' must be a string with %s",
			    "payload", "payload_encoding");
		if (qw_base64_decode(json_string_value(payload), json_string_length(payload),
		    &job->payload_buf, &job->payload_len) < 0)
			return qw_job_fail(job, "member '%s' is not valid base64%s", "payload", "");
		job->payload = job->payload_buf;
		return 0;
	}
	if (json_is_string(payload)) {
		job->payload = json_string_value(payload);
		job->payload_len = json_string_length(payload);
		return 0;
	}
	job->payload_buf = json_dumps(payload, JSON_COMPACT | JSON_ENCODE_ANY);
	if (job->payload_buf == NULL)
		return -1;
	job->payload = job->payload_buf;
	job->payload_len = strlen(job->payload_buf);
	return 0;
}

/* An id goes into log lines: no control characters (a newline could forge a
 * journal line), no NUL. */
static bool
qw_job_printable(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			return false;
	return true;
}

/* Checks the members SPEC 3 defines; the first problem becomes job->error. */
static int
qw_job_envelope(struct qw_job *job, const struct qw_queue_conf *qc)
{
	json_t *v;

	if (qw_job_envelope_payload(job, json_object_get(job->env, "payload")) < 0)
		return -1;
	if (job->error != NULL)
		return 0;
	v = json_object_get(job->env, "id");
	if (v != NULL) {
		if (!json_is_string(v) || json_string_length(v) == 0 ||
		    json_string_length(v) > 200 || !qw_job_printable(json_string_value(v),
		    json_string_length(v)))
			return qw_job_fail(job, "member '%s' must be a string of 1 to 200 bytes "
			    "without control characters%s", "id", "");
		free(job->id);
		if ((job->id = strdup(json_string_value(v))) == NULL)
			return -1;
	}
	v = json_object_get(job->env, "timeout");
	if (v != NULL) {
		double t = json_is_number(v) ? json_number_value(v) : -1;
		if (!json_is_number(v) || !(t > 0) || t > QW_JOB_MAX_TIMEOUT_S)
			return qw_job_fail(job, "member '%s' must be a number of seconds > 0 and <= %s",
			    "timeout", "31536000");
		job->timeout_ms = (uint64_t)ceil(t * 1000);
	}
	if (qw_job_int_member(job->env, "max_attempts", 1, 1000000, &job->max_attempts) < 0)
		return qw_job_fail(job, "member '%s' must be an integer from 1 to %s",
		    "max_attempts", "1000000");
	if (qw_job_int_member(job->env, "attempt", 0, 1000000, &job->attempt) < 0)
		return qw_job_fail(job, "member '%s' must be an integer from 0 to %s",
		    "attempt", "1000000");
	if (qw_job_int_member(job->env, "interrupted", 0, 1000000, &job->interrupted) < 0)
		return qw_job_fail(job, "member '%s' must be an integer from 0 to %s",
		    "interrupted", "1000000");
	v = json_object_get(job->env, "enqueued_at");
	if (v != NULL && (!json_is_integer(v) || json_integer_value(v) < 0))
		return qw_job_fail(job, "member '%s' must be an integer of Unix milliseconds%s",
		    "enqueued_at", "");
	if (v != NULL)
		job->enqueued_at_ms = json_integer_value(v);
	return 0;
}

/* Whether the JSON string token S (quotes included) spells "payload". */
static bool
qw_job_key_is_payload(const char *s, size_t len)
{
	json_t *k;
	bool yes;

	if (len == 9 && memcmp(s, "\"payload\"", 9) == 0)
		return true;
	if (memchr(s, '\\', len) == NULL || len > 64)
		return false;
	/* Escaped, as in "pay\u006coad": let jansson decode it. */
	k = json_loadb(s, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
	yes = json_is_string(k) && json_string_length(k) == 7 &&
	    memcmp(json_string_value(k), "payload", 7) == 0;
	json_decref(k);
	return yes;
}

/* Whether the object that starts at S[I] has a member "payload" at its top
 * level, found by a scan that skips strings (with their escapes) and counts
 * brackets, without parsing: for JSON past what jansson can hold. */
static bool
qw_job_scan_payload(const char *s, size_t len, size_t i)
{
	size_t depth = 0;
	bool key = false;	/* the next string at depth 1 is a member name */

	for (; i < len; i++) {
		size_t start = i;
		switch (s[i]) {
		case '"':
			for (i++; i < len && s[i] != '"'; i++)
				if (s[i] == '\\')
					i++;
			if (i >= len)
				return false;
			if (depth == 1 && key && qw_job_key_is_payload(s + start, i + 1 - start))
				return true;
			key = false;
			break;
		case '{':
		case '[':
			key = ++depth == 1;
			break;
		case '}':
		case ']':
			if (depth-- <= 1)
				return false;	/* the end of the top-level object */
			break;
		case ',':
			key = depth == 1;
			break;
		}
	}
	return false;
}

/* An element is an envelope when it is a JSON object with a payload member.
 * Sets *LIMIT when it is JSON past what the parser can hold (a number too
 * large, nesting too deep) with a top-level payload member: an envelope
 * that cannot be read, so it must not run as raw. Without one it is raw. */
static json_t *
qw_job_try_envelope(const char *elem, size_t len, json_error_t *err, bool *limit)
{
	json_t *obj;
	size_t i = 0;

	*limit = false;
	while (i < len && isspace((unsigned char)elem[i]))
		i++;
	if (i == len || elem[i] != '{')
		return NULL;
	obj = json_loadb(elem, len, JSON_ALLOW_NUL, err);
	if (obj == NULL) {
		enum json_error_code c = json_error_code(err);
		*limit = c == json_error_out_of_memory ||
		    ((c == json_error_numeric_overflow || c == json_error_stack_overflow) &&
		    qw_job_scan_payload(elem, len, i));
	} else if (!json_is_object(obj) || json_object_get(obj, "payload") == NULL) {
		json_decref(obj);
		obj = NULL;
	}
	return obj;
}

/* JSON escaping makes a payload at most six times longer: anything far
 * beyond that cannot pass max_payload, so it is not worth parsing. */
uint64_t
qw_job_json_max(const struct qw_queue_conf *qc)
{
	return qc->max_payload > (UINT64_MAX - 65536) / 6 ? UINT64_MAX :
	    qc->max_payload * 6 + 65536;
}

int
qw_job_parse(struct qw_job *job, char *elem, size_t len, const struct qw_queue_conf *qc,
    const char *new_id)
{
	json_error_t jerr;
	bool limit;

	memset(job, 0, sizeof(*job));
	job->enqueued_at_ms = -1;
	job->elem = elem;
	job->elem_len = len;
	job->timeout_ms = qc->timeout_ms;
	job->max_attempts = qc->max_attempts;
	if ((job->id = strdup(new_id)) == NULL)
		goto nomem;
	if (len > qw_job_json_max(qc)) {
		if (asprintf(&job->error, "job of %zu bytes is larger than max_payload allows "
		    "(%llu bytes)", len, (unsigned long long)qc->max_payload) < 0) {
			job->error = NULL;
			goto nomem;
		}
		job->payload = elem;
		job->payload_len = len;
		job->verbatim = true;
		return 0;
	}
	job->env = qw_job_try_envelope(elem, len, &jerr, &limit);
	if (job->env == NULL && limit) {
		if (json_error_code(&jerr) == json_error_out_of_memory)
			goto nomem;
		job->payload = elem;
		job->payload_len = len;
		if (qw_job_fail(job, "JSON that qworkerd cannot read: %s, at byte %d", jerr.text,
		    jerr.position) < 0)
			goto nomem;
	} else if (job->env == NULL) {
		job->payload = elem;
		job->payload_len = len;
	} else if (qw_job_envelope(job, qc) < 0) {
		goto nomem;
	} else {
		/* Read even from a malformed envelope: its job goes to dead, and
		 * its hold ends with it. */
		json_t *u = json_object_get(job->env, "unique");
		job->unique = json_is_string(u) ? json_string_value(u) : NULL;
	}
	if (job->error == NULL && job->payload_len > qc->max_payload) {
		char size[64];
		snprintf(size, sizeof(size), "%llu", (unsigned long long)qc->max_payload);
		if (asprintf(&job->error, "payload of %zu bytes is larger than max_payload (%s bytes)",
		    job->payload_len, size) < 0) {
			job->error = NULL;
			goto nomem;
		}
		job->verbatim = len > QW_JOB_REWRITE_MAX;
	}
	return 0;
nomem:
	qw_job_clear(job);
	return -1;
}

/* Whether JSON string escaping makes these bytes more than half as long
 * again (base64 adds a third): control bytes take six each, so a binary-ish
 * payload could grow sixfold and outgrow what Redis accepts in a command. */
static bool
qw_job_escapes_long(const char *s, size_t len)
{
	size_t esc = len;

	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '"' || c == '\\' || c == '\n' || c == '\t' || c == '\r' || c == '\b' ||
		    c == '\f')
			esc += 1;
		else if (c < 0x20)
			esc += 5;
	}
	return esc > len + len / 2 + 16;
}

/* Wraps a raw job's bytes: as a string when they are UTF-8 and escaping
 * keeps them short enough, else base64. */
static json_t *
qw_job_wrap_raw(const struct qw_job *job)
{
	json_t *obj = json_object(), *p = NULL;

	if (obj == NULL)
		goto fail;
	if (!qw_job_escapes_long(job->elem, job->elem_len))
		p = json_stringn(job->elem, job->elem_len);
	if (p == NULL) {
		char *b64 = qw_base64_encode(job->elem, job->elem_len);
		if (b64 == NULL)
			goto fail;
		p = json_string(b64);
		free(b64);
		if (p == NULL || json_object_set_new(obj, "payload_encoding", json_string("base64")) < 0)
			goto fail;
	}
	if (json_object_set_new(obj, "payload", p) < 0) {
		p = NULL;
		goto fail;
	}
	return obj;
fail:
	json_decref(p);
	json_decref(obj);
	return NULL;
}

char *
qw_job_encode(struct qw_job *job, const char *error, int64_t failed_at_ms, const char *run,
    size_t *len)
{
	json_t *v;
	char *out;
	int rc = 0;

	if (job->env == NULL && (job->env = qw_job_wrap_raw(job)) == NULL)
		return NULL;
	v = json_object_get(job->env, "id");
	if (v == NULL)
		rc |= json_object_set_new(job->env, "id", json_string(job->id));
	/* A malformed envelope keeps its members as sent, so the error stays true. */
	if (job->error == NULL || json_object_get(job->env, "attempt") == NULL)
		rc |= json_object_set_new(job->env, "attempt", json_integer(job->attempt));
	if (job->error == NULL || json_object_get(job->env, "interrupted") == NULL)
		rc |= json_object_set_new(job->env, "interrupted", json_integer(job->interrupted));
	if (error != NULL) {
		/* json_string needs UTF-8; error text quotes user input, so fall back. */
		json_t *e = json_string(error);
		rc |= json_object_set_new(job->env, "error", e ? e : json_string("(not UTF-8)"));
		if (failed_at_ms > 0)
			rc |= json_object_set_new(job->env, "failed_at", json_integer(failed_at_ms));
	}
	/* A sorted set holds each member once: two identical jobs failing in
	 * the same millisecond would become one. The run's field is unique. */
	if (run != NULL)
		rc |= json_object_set_new(job->env, "run", json_string(run));
	if (rc != 0)
		return NULL;
	/* 17 digits: a number must read back as the same double on the next run. */
	out = json_dumps(job->env, JSON_COMPACT | JSON_REAL_PRECISION(17));
	if (out != NULL)
		*len = strlen(out);
	return out;
}

uint64_t
qw_job_backoff_ms(const struct qw_queue_conf *qc, unsigned attempt, double r)
{
	double d = (double)qc->retry_base_ms;

	for (unsigned i = 1; i < attempt && d < (double)qc->retry_max_ms; i++)
		d *= 2;
	d *= 0.8 + 0.4 * r;
	if (d > (double)qc->retry_max_ms)
		d = (double)qc->retry_max_ms;
	return d < 1 ? 1 : (uint64_t)d;
}
