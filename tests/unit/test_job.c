/* test_job.c - unit tests for src/job.c: raw jobs vs envelopes (SPEC 3),
 * envelope validation, the envelope written back to Redis, retry backoff
 * (SPEC 4) and base64. */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "conf.h"
#include "job.h"

/* ------------------------------------------------------------------------ */
/* Helpers */

#define NEW_ID "gen-1"

/* A queue with the documented defaults. */
static struct qw_queue_conf
queue_defaults(void)
{
	struct qw_queue_conf qc;

	memset(&qc, 0, sizeof(qc));
	qc.name = (char *)"q";
	qc.timeout_ms = 30000;
	qc.max_attempts = 5;
	qc.retry_base_ms = 1000;
	qc.retry_max_ms = 3600000;
	qc.weight = 1;
	qc.max_payload = 1 << 20;
	qc.max_interruptions = 10;
	qc.dead_max = 10000;
	return qc;
}

/* Parses LEN bytes of S (copied: qw_job_parse takes ownership). */
static void
parse_n(struct qw_job *job, const char *s, size_t len, const struct qw_queue_conf *qc)
{
	char *elem = malloc(len + 1);

	assert_non_null(elem);
	memcpy(elem, s, len);
	elem[len] = '\0';
	assert_int_equal(qw_job_parse(job, elem, len, qc, NEW_ID), 0);
	assert_ptr_equal(job->elem, elem);
	assert_int_equal(job->elem_len, len);
	assert_non_null(job->id);
	if (job->error == NULL)
		assert_non_null(job->payload);
}

static void
parse(struct qw_job *job, const char *s)
{
	struct qw_queue_conf qc = queue_defaults();

	parse_n(job, s, strlen(s), &qc);
}

static void
assert_payload(const struct qw_job *job, const char *want, size_t len)
{
	if (job->payload_len != len || memcmp(job->payload, want, len) != 0) {
		print_error("payload is [%.*s] (%zu bytes), expected [%.*s] (%zu bytes)\n",
		    (int)job->payload_len, job->payload, job->payload_len, (int)len, want, len);
		fail();
	}
}

/* Parses S as a raw job and checks the payload is S itself. */
static void
expect_raw(const char *s)
{
	struct qw_job job;

	parse(&job, s);
	assert_null(job.env);
	assert_null(job.error);
	assert_ptr_equal(job.payload, job.elem);
	assert_payload(&job, s, strlen(s));
	assert_string_equal(job.id, NEW_ID);
	assert_int_equal(job.timeout_ms, 30000);
	assert_int_equal(job.max_attempts, 5);
	assert_int_equal(job.attempt, 0);
	assert_int_equal(job.interrupted, 0);
	qw_job_clear(&job);
}

/* Parses the envelope S and expects job->error to name MEMBER. */
static void
expect_invalid(const char *s, const char *member)
{
	struct qw_job job;
	char quoted[64];

	parse(&job, s);
	assert_non_null(job.env);
	if (job.error == NULL) {
		qw_job_clear(&job);
		fail_msg("envelope %s accepted, expected an error about '%s'", s, member);
	}
	snprintf(quoted, sizeof(quoted), "'%s'", member);
	if (strstr(job.error, quoted) == NULL) {
		print_error("envelope %s: error '%s' does not name %s\n", s, job.error, quoted);
		qw_job_clear(&job);
		fail();
	}
	qw_job_clear(&job);
}

/* Parses the envelope S and expects no error. */
static void
expect_valid(struct qw_job *job, const char *s)
{
	parse(job, s);
	assert_non_null(job->env);
	if (job->error != NULL) {
		print_error("envelope %s rejected: %s\n", s, job->error);
		qw_job_clear(job);
		fail();
	}
}

/* Encodes JOB and parses the result back as JSON. */
static json_t *
encode_json(struct qw_job *job, const char *error, int64_t failed_at)
{
	size_t len = 0;
	char *out = qw_job_encode(job, error, failed_at, NULL, &len);
	json_error_t jerr;
	json_t *obj;

	assert_non_null(out);
	assert_int_equal(len, strlen(out));
	obj = json_loadb(out, len, JSON_ALLOW_NUL, &jerr);
	if (obj == NULL)
		print_error("encoded job is not JSON (%s): %s\n", jerr.text, out);
	free(out);
	assert_non_null(obj);
	assert_true(json_is_object(obj));
	return obj;
}

static void
assert_member_int(json_t *obj, const char *name, json_int_t want)
{
	json_t *v = json_object_get(obj, name);

	if (v == NULL)
		fail_msg("member '%s' missing", name);
	assert_true(json_is_integer(v));
	assert_int_equal(json_integer_value(v), want);
}

static void
assert_member_str(json_t *obj, const char *name, const char *want)
{
	json_t *v = json_object_get(obj, name);

	if (v == NULL)
		fail_msg("member '%s' missing", name);
	assert_true(json_is_string(v));
	assert_string_equal(json_string_value(v), want);
}

/* ------------------------------------------------------------------------ */
/* Raw jobs */

static void
test_raw_text(void **state)
{
	(void)state;
	expect_raw("hello world");
	expect_raw("");
	expect_raw("run me later");
}

static void
test_raw_binary(void **state)
{
	static const char bin[] = { 'a', '\0', 'b', (char)0xff, '\0', (char)0xc3 };
	struct qw_queue_conf qc = queue_defaults();
	struct qw_job job;

	(void)state;
	parse_n(&job, bin, sizeof(bin), &qc);
	assert_null(job.env);
	assert_null(job.error);
	assert_payload(&job, bin, sizeof(bin));
	qw_job_clear(&job);
}

static void
test_raw_json_not_envelope(void **state)
{
	(void)state;
	expect_raw("[\"payload\", 1]");
	expect_raw("[{\"payload\":\"x\"}]");
	expect_raw("{\"id\":\"x\",\"timeout\":5,\"max_attempts\":1}");
	expect_raw("{}");
	expect_raw("{\"Payload\":\"x\"}");
	expect_raw("{\"nested\":{\"payload\":\"x\"}}");
	expect_raw("\"payload\"");
	expect_raw("42");
	expect_raw("null");
	/* Looks like an envelope but is not valid JSON. */
	expect_raw("{\"payload\":");
	expect_raw("{\"payload\":\"x\"} trailing");
	expect_raw("{payload: \"x\"}");
	expect_raw("{\"payload\":\"x\",}");
	expect_raw("x {\"payload\":\"x\"}");
}

static void
test_envelope_leading_whitespace(void **state)
{
	struct qw_job job;

	(void)state;
	expect_valid(&job, " \t\r\n{\"payload\":\"hi\"}\n");
	assert_payload(&job, "hi", 2);
	qw_job_clear(&job);
}

/* ------------------------------------------------------------------------ */
/* Envelope payloads */

static void
test_envelope_string_payload(void **state)
{
	struct qw_job job;

	(void)state;
	expect_valid(&job, "{\"payload\":\"hello\",\"timeout\":5,\"max_attempts\":3}");
	assert_payload(&job, "hello", 5);
	assert_string_equal(job.id, NEW_ID);
	assert_int_equal(job.timeout_ms, 5000);
	assert_int_equal(job.max_attempts, 3);
	assert_int_equal(job.attempt, 0);
	assert_int_equal(job.interrupted, 0);
	qw_job_clear(&job);

	/* The string's value, unescaped, nothing added: not re-encoded as JSON. */
	expect_valid(&job, "{\"payload\":\"say \\\"hi\\\"\\n\\t\\u00e9 {\\\"a\\\":1}\"}");
	assert_payload(&job, "say \"hi\"\n\t\xc3\xa9 {\"a\":1}",
	    strlen("say \"hi\"\n\t\xc3\xa9 {\"a\":1}"));
	qw_job_clear(&job);

	expect_valid(&job, "{\"payload\":\"\"}");
	assert_payload(&job, "", 0);
	qw_job_clear(&job);
}

static void
test_envelope_json_payload(void **state)
{
	static const struct { const char *in, *want; } cases[] = {
		{ "{\"payload\": { \"z\" : 1, \"a\" : [ true, null, \"x\" ], \"m\": {\"k\": \"v\"} } }",
		  "{\"z\":1,\"a\":[true,null,\"x\"],\"m\":{\"k\":\"v\"}}" },
		{ "{\"payload\":{\"b\":2,\"a\":1,\"c\":3}}", "{\"b\":2,\"a\":1,\"c\":3}" },
		{ "{\"payload\":[3, 2, 1]}", "[3,2,1]" },
		{ "{\"payload\":42}", "42" },
		{ "{\"payload\":-7}", "-7" },
		{ "{\"payload\":0.5}", "0.5" },
		{ "{\"payload\":true}", "true" },
		{ "{\"payload\":false}", "false" },
		{ "{\"payload\":null}", "null" },
		{ "{\"payload\":{}}", "{}" },
		{ "{\"payload\":[]}", "[]" },
		{ "{\"payload\":{\"s\":\"\\u00e9\\n\"}}", "{\"s\":\"\xc3\xa9\\n\"}" },
	};
	struct qw_job job;

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		expect_valid(&job, cases[i].in);
		assert_payload(&job, cases[i].want, strlen(cases[i].want));
		qw_job_clear(&job);
	}
}

static void
test_envelope_payload_nul(void **state)
{
	struct qw_job job;

	(void)state;
	expect_valid(&job, "{\"payload\":\"a\\u0000b\\u0000\"}");
	assert_int_equal(job.payload_len, 4);
	assert_payload(&job, "a\0b\0", 4);
	qw_job_clear(&job);

	expect_valid(&job, "{\"payload\":\"\\u0000\"}");
	assert_payload(&job, "\0", 1);
	qw_job_clear(&job);
}

static void
test_envelope_base64(void **state)
{
	struct qw_job job;

	(void)state;
	/* "hello\0\xc0\xff" */
	expect_valid(&job, "{\"payload\":\"aGVsbG8AwP8=\",\"payload_encoding\":\"base64\"}");
	assert_payload(&job, "hello\0\xc0\xff", 8);
	qw_job_clear(&job);

	expect_valid(&job, "{\"payload_encoding\":\"base64\",\"payload\":\"\"}");
	assert_payload(&job, "", 0);
	qw_job_clear(&job);

	expect_valid(&job, "{\"payload\":\"Zm9vYmFy\",\"payload_encoding\":\"base64\"}");
	assert_payload(&job, "foobar", 6);
	qw_job_clear(&job);
}

static void
test_envelope_base64_errors(void **state)
{
	(void)state;
	expect_invalid("{\"payload\":\"not base64!\",\"payload_encoding\":\"base64\"}", "payload");
	expect_invalid("{\"payload\":\"abc\",\"payload_encoding\":\"base64\"}", "payload");
	expect_invalid("{\"payload\":\"a===\",\"payload_encoding\":\"base64\"}", "payload");
	expect_invalid("{\"payload\":\"Zg==Zg==\",\"payload_encoding\":\"base64\"}", "payload");
	expect_invalid("{\"payload\":\"Zm9v\\u0000Zm9\",\"payload_encoding\":\"base64\"}", "payload");
	expect_invalid("{\"payload\":42,\"payload_encoding\":\"base64\"}", "payload");
	expect_invalid("{\"payload\":[\"Zm9v\"],\"payload_encoding\":\"base64\"}", "payload");
	expect_invalid("{\"payload\":\"Zm9v\",\"payload_encoding\":\"hex\"}", "payload_encoding");
	expect_invalid("{\"payload\":\"Zm9v\",\"payload_encoding\":\"BASE64\"}", "payload_encoding");
	expect_invalid("{\"payload\":\"Zm9v\",\"payload_encoding\":1}", "payload_encoding");
	expect_invalid("{\"payload\":\"Zm9v\",\"payload_encoding\":null}", "payload_encoding");
}

/* ------------------------------------------------------------------------ */
/* Envelope members */

static void
test_member_id(void **state)
{
	char buf[512];
	struct qw_job job;

	(void)state;
	expect_valid(&job, "{\"payload\":\"x\",\"id\":\"job-42\"}");
	assert_string_equal(job.id, "job-42");
	qw_job_clear(&job);

	/* 200 bytes is the limit. */
	snprintf(buf, sizeof(buf), "{\"payload\":\"x\",\"id\":\"%0200d\"}", 7);
	expect_valid(&job, buf);
	assert_int_equal(strlen(job.id), 200);
	qw_job_clear(&job);
	snprintf(buf, sizeof(buf), "{\"payload\":\"x\",\"id\":\"%0201d\"}", 7);
	expect_invalid(buf, "id");

	expect_invalid("{\"payload\":\"x\",\"id\":42}", "id");
	expect_invalid("{\"payload\":\"x\",\"id\":\"\"}", "id");
	expect_invalid("{\"payload\":\"x\",\"id\":null}", "id");
	expect_invalid("{\"payload\":\"x\",\"id\":[\"a\"]}", "id");
	expect_invalid("{\"payload\":\"x\",\"id\":\"a\\u0000b\"}", "id");
}

static void
test_member_timeout(void **state)
{
	struct qw_job job;

	(void)state;
	expect_valid(&job, "{\"payload\":\"x\",\"timeout\":5}");
	assert_int_equal(job.timeout_ms, 5000);
	qw_job_clear(&job);
	expect_valid(&job, "{\"payload\":\"x\",\"timeout\":0.25}");
	assert_int_equal(job.timeout_ms, 250);
	qw_job_clear(&job);
	expect_valid(&job, "{\"payload\":\"x\",\"timeout\":0.0001}");
	assert_int_equal(job.timeout_ms, 1);	/* never rounded down to 0 */
	qw_job_clear(&job);
	expect_valid(&job, "{\"payload\":\"x\",\"timeout\":31536000}");
	assert_int_equal(job.timeout_ms, 31536000000ULL);
	qw_job_clear(&job);

	expect_invalid("{\"payload\":\"x\",\"timeout\":0}", "timeout");
	expect_invalid("{\"payload\":\"x\",\"timeout\":0.0}", "timeout");
	expect_invalid("{\"payload\":\"x\",\"timeout\":-1}", "timeout");
	expect_invalid("{\"payload\":\"x\",\"timeout\":-0.5}", "timeout");
	expect_invalid("{\"payload\":\"x\",\"timeout\":31536001}", "timeout");
	expect_invalid("{\"payload\":\"x\",\"timeout\":1e300}", "timeout");
	expect_invalid("{\"payload\":\"x\",\"timeout\":\"5\"}", "timeout");
	expect_invalid("{\"payload\":\"x\",\"timeout\":\"5s\"}", "timeout");
	expect_invalid("{\"payload\":\"x\",\"timeout\":true}", "timeout");
	expect_invalid("{\"payload\":\"x\",\"timeout\":null}", "timeout");
	expect_invalid("{\"payload\":\"x\",\"timeout\":[5]}", "timeout");
}

static void
test_member_max_attempts(void **state)
{
	struct qw_job job;

	(void)state;
	expect_valid(&job, "{\"payload\":\"x\",\"max_attempts\":1}");
	assert_int_equal(job.max_attempts, 1);
	qw_job_clear(&job);
	expect_valid(&job, "{\"payload\":\"x\",\"max_attempts\":1000000}");
	assert_int_equal(job.max_attempts, 1000000);
	qw_job_clear(&job);

	expect_invalid("{\"payload\":\"x\",\"max_attempts\":0}", "max_attempts");
	expect_invalid("{\"payload\":\"x\",\"max_attempts\":-3}", "max_attempts");
	expect_invalid("{\"payload\":\"x\",\"max_attempts\":2.5}", "max_attempts");
	expect_invalid("{\"payload\":\"x\",\"max_attempts\":\"3\"}", "max_attempts");
	expect_invalid("{\"payload\":\"x\",\"max_attempts\":1000001}", "max_attempts");
	expect_invalid("{\"payload\":\"x\",\"max_attempts\":4294967297}", "max_attempts");
	expect_invalid("{\"payload\":\"x\",\"max_attempts\":null}", "max_attempts");
}

static void
test_member_attempt_interrupted(void **state)
{
	struct qw_job job;

	(void)state;
	expect_valid(&job, "{\"payload\":\"x\",\"attempt\":2,\"interrupted\":3}");
	assert_int_equal(job.attempt, 2);
	assert_int_equal(job.interrupted, 3);
	qw_job_clear(&job);
	expect_valid(&job, "{\"payload\":\"x\",\"attempt\":0,\"interrupted\":0}");
	assert_int_equal(job.attempt, 0);
	assert_int_equal(job.interrupted, 0);
	qw_job_clear(&job);

	expect_invalid("{\"payload\":\"x\",\"attempt\":1.5}", "attempt");
	expect_invalid("{\"payload\":\"x\",\"attempt\":-1}", "attempt");
	expect_invalid("{\"payload\":\"x\",\"attempt\":\"2\"}", "attempt");
	expect_invalid("{\"payload\":\"x\",\"attempt\":true}", "attempt");
	expect_invalid("{\"payload\":\"x\",\"attempt\":4294967296}", "attempt");
	expect_invalid("{\"payload\":\"x\",\"interrupted\":0.5}", "interrupted");
	expect_invalid("{\"payload\":\"x\",\"interrupted\":-1}", "interrupted");
	expect_invalid("{\"payload\":\"x\",\"interrupted\":\"x\"}", "interrupted");
	expect_invalid("{\"payload\":\"x\",\"interrupted\":{}}", "interrupted");
}

static void
test_member_enqueued_at(void **state)
{
	struct qw_job job;

	(void)state;
	expect_valid(&job, "{\"payload\":\"x\",\"enqueued_at\":1700000000000}");
	qw_job_clear(&job);
	expect_valid(&job, "{\"payload\":\"x\",\"enqueued_at\":0}");
	qw_job_clear(&job);

	expect_invalid("{\"payload\":\"x\",\"enqueued_at\":\"now\"}", "enqueued_at");
	expect_invalid("{\"payload\":\"x\",\"enqueued_at\":-5}", "enqueued_at");
	expect_invalid("{\"payload\":\"x\",\"enqueued_at\":1.5}", "enqueued_at");
	expect_invalid("{\"payload\":\"x\",\"enqueued_at\":null}", "enqueued_at");
}

static void
test_unknown_members_accepted(void **state)
{
	struct qw_job job;

	(void)state;
	expect_valid(&job, "{\"trace\":\"abc\",\"payload\":\"x\",\"custom\":{\"k\":[1,2]},\"n\":1.5}");
	assert_payload(&job, "x", 1);
	qw_job_clear(&job);
}

/* The unique_for hold (qw_enqueue's "unique" member) is read from every
 * envelope, a malformed one too (it goes to dead, and its hold ends with
 * it), kept when the job is written back, and ignored when not a string. */
static void
test_member_unique(void **state)
{
	struct qw_job job;
	json_t *obj;

	(void)state;
	expect_valid(&job, "{\"payload\":\"x\",\"id\":\"u-1\",\"unique\":\"1700000000000:7\"}");
	assert_string_equal(job.unique, "1700000000000:7");
	assert_string_equal(job.id, "u-1");
	job.attempt = 1;
	obj = encode_json(&job, "exit status 1", 5);
	assert_string_equal(json_string_value(json_object_get(obj, "unique")), "1700000000000:7");
	json_decref(obj);
	qw_job_clear(&job);

	parse(&job, "{\"payload\":\"x\",\"id\":\"u-2\",\"timeout\":-1,\"unique\":\"9:1\"}");
	assert_non_null(job.error);
	assert_string_equal(job.unique, "9:1");
	assert_string_equal(job.id, "u-2");
	qw_job_clear(&job);

	expect_valid(&job, "{\"payload\":\"x\",\"unique\":5}");
	assert_null(job.unique);
	qw_job_clear(&job);
	parse(&job, "{\"unique\":\"9:1\"}");	/* no payload: a raw job */
	assert_null(job.env);
	assert_null(job.unique);
	qw_job_clear(&job);
}

/* ------------------------------------------------------------------------ */
/* max_payload */

static void
test_max_payload_raw(void **state)
{
	struct qw_queue_conf qc = queue_defaults();
	struct qw_job job;

	(void)state;
	qc.max_payload = 10;
	parse_n(&job, "0123456789", 10, &qc);
	assert_null(job.error);
	qw_job_clear(&job);

	parse_n(&job, "0123456789A", 11, &qc);
	assert_null(job.env);
	assert_non_null(job.error);
	assert_non_null(strstr(job.error, "max_payload"));
	assert_non_null(strstr(job.error, "11"));
	qw_job_clear(&job);
}

static void
test_max_payload_envelope(void **state)
{
	static const char fits[] = "{\"payload\":\"0123456789\",\"id\":\"a long id that is not counted\"}";
	static const char big[] = "{\"payload\":\"0123456789A\"}";
	static const char big64[] = "{\"payload\":\"MDEyMzQ1Njc4OUE=\",\"payload_encoding\":\"base64\"}";
	static const char fits64[] = "{\"payload\":\"MDEyMzQ1Njc4OQ==\",\"payload_encoding\":\"base64\"}";
	static const char bigjson[] = "{\"payload\":[1,2,3,4,5,6]}";
	struct qw_queue_conf qc = queue_defaults();
	struct qw_job job;

	(void)state;
	qc.max_payload = 10;
	/* The payload counts, not the envelope around it. */
	parse_n(&job, fits, strlen(fits), &qc);
	assert_non_null(job.env);
	assert_null(job.error);
	qw_job_clear(&job);
	parse_n(&job, fits64, strlen(fits64), &qc);
	assert_null(job.error);
	assert_int_equal(job.payload_len, 10);
	qw_job_clear(&job);

	parse_n(&job, big, strlen(big), &qc);
	assert_non_null(job.env);
	assert_non_null(job.error);
	assert_non_null(strstr(job.error, "max_payload"));
	qw_job_clear(&job);
	parse_n(&job, big64, strlen(big64), &qc);
	assert_non_null(job.error);
	assert_non_null(strstr(job.error, "max_payload"));
	qw_job_clear(&job);
	parse_n(&job, bigjson, strlen(bigjson), &qc);	/* "[1,2,3,4,5,6]" is 13 bytes */
	assert_non_null(job.error);
	assert_non_null(strstr(job.error, "max_payload"));
	qw_job_clear(&job);
}

/* Too long to parse, or oversize and over QW_JOB_REWRITE_MAX: dead as taken. */
static void
test_oversize_goes_verbatim(void **state)
{
	struct qw_queue_conf qc = queue_defaults();
	size_t n = 10 * 6 + 65536 + 1;
	char *big = malloc(n);
	struct qw_job job;

	(void)state;
	assert_non_null(big);
	qc.max_payload = 10;
	memset(big, 'y', n);
	memcpy(big, "{\"payload\":\"", 12);
	parse_n(&job, big, n, &qc);
	assert_true(job.verbatim);
	assert_null(job.env);
	assert_non_null(strstr(job.error, "job of 65597 bytes is larger than max_payload allows"));
	qw_job_clear(&job);
	/* Just oversize, and small: rewritten with its error as usual. */
	parse_n(&job, big + 12, 11, &qc);
	assert_false(job.verbatim);
	assert_non_null(strstr(job.error, "payload of 11 bytes"));
	qw_job_clear(&job);
	free(big);
}

/* Valid JSON past what jansson holds is an error, not a raw job. */
static void
test_json_past_parser_limits(void **state)
{
	static const char *const cases[] = {
		"{\"payload\":\"x\",\"max_attempts\":99999999999999999999}",
		"{\"payload\":\"x\",\"timeout\":1e999}",
	};
	struct qw_job job;
	char deep[2 * 3000 + 32];
	size_t n = 0;

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		parse(&job, cases[i]);
		assert_non_null(job.error);
		assert_non_null(strstr(job.error, "JSON that qworkerd cannot read"));
		assert_false(job.verbatim);
		qw_job_clear(&job);
	}
	n += (size_t)sprintf(deep, "{\"payload\":");
	for (int i = 0; i < 3000; i++)
		deep[n++] = '[';
	for (int i = 0; i < 3000; i++)
		deep[n++] = ']';
	deep[n++] = '}';
	parse_n(&job, deep, n, &(struct qw_queue_conf){ .max_payload = 1 << 20, .max_attempts = 5,
	    .timeout_ms = 1000 });
	assert_non_null(job.error);
	assert_non_null(strstr(job.error, "JSON that qworkerd cannot read"));
	qw_job_clear(&job);
	/* Plain invalid JSON is still a raw job. */
	parse(&job, "{\"payload\":");
	assert_null(job.error);
	qw_job_clear(&job);
}

/* Builds HEAD, then DEPTH levels of OPEN ... CLOSE, then TAIL: JSON nested
 * far deeper than jansson parses (2048). */
static char *
deep_json(const char *head, int depth, const char *open, const char *close, const char *tail,
    size_t *len)
{
	size_t hl = strlen(head), ol = strlen(open), cl = strlen(close), tl = strlen(tail);
	char *s = malloc(hl + (ol + cl) * (size_t)depth + tl + 1), *p = s;

	assert_non_null(s);
	memcpy(p, head, hl);
	p += hl;
	for (int i = 0; i < depth; i++, p += ol)
		memcpy(p, open, ol);
	for (int i = 0; i < depth; i++, p += cl)
		memcpy(p, close, cl);
	memcpy(p, tail, tl);
	p += tl;
	*p = '\0';
	*len = (size_t)(p - s);
	return s;
}

/* JSON too deep to parse is classified by a scan for a top-level payload
 * member: without one it is a raw job (SPEC 3) and runs; with one it is an
 * envelope that cannot be read, and goes to dead. */
static void
test_json_too_deep_classified_by_payload_member(void **state)
{
	static const struct {
		const char *head, *open, *close, *tail;
		bool envelope;
	} cases[] = {
		{ "{\"a\":", "{\"b\":", "}", "}", false },
		{ "{\"data\":", "[", "]", ",\"x\":1}", false },
		/* "payload" deeper down, or inside a string, is not a member. */
		{ "{\"a\":", "{\"payload\":", "}", "}", false },
		{ "{\"a\":\"\\\"payload\\\":\",\"b\":", "[", "]", "}", false },
		{ " \n{\"payload\":", "[", "]", "}", true },
		{ "{\"id\":\"x\",\"deep\":", "[{\"k\":", "}]", ",\"payload\":\"p\"}", true },
		{ "{\"pay\\u006coad\":", "[", "]", "}", true },
	};
	struct qw_queue_conf qc = queue_defaults();

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct qw_job job;
		size_t len;
		char *s = deep_json(cases[i].head, 10000, cases[i].open, cases[i].close,
		    cases[i].tail, &len);

		parse_n(&job, s, len, &qc);
		if (cases[i].envelope) {
			if (job.error == NULL || strstr(job.error, "JSON that qworkerd cannot read") == NULL)
				fail_msg("case %zu: a deep envelope was not refused: %s", i,
				    job.error ? job.error : "(no error)");
		} else {
			if (job.error != NULL || job.env != NULL)
				fail_msg("case %zu: deep JSON without payload is not raw: %s", i,
				    job.error ? job.error : "(an envelope)");
			assert_payload(&job, s, len);
		}
		qw_job_clear(&job);
		free(s);
	}
}

/* A number too large for jansson in an object without payload: raw too. */
static void
test_json_number_overflow_without_payload_is_raw(void **state)
{
	(void)state;
	expect_raw("{\"n\":99999999999999999999,\"m\":1e999}");
}

/* ------------------------------------------------------------------------ */
/* qw_job_encode */

static void
test_encode_raw_utf8(void **state)
{
	static const char want[] =
	    "{\"payload\":\"h\xc3\xa9llo \\\"w\\\"\\n\",\"id\":\"gen-1\",\"attempt\":2,\"interrupted\":1}";
	struct qw_job job;
	size_t len = 0;
	char *out;

	(void)state;
	parse(&job, "h\xc3\xa9llo \"w\"\n");
	assert_null(job.env);
	job.attempt = 2;
	job.interrupted = 1;
	out = qw_job_encode(&job, NULL, 0, NULL, &len);
	assert_non_null(out);
	assert_string_equal(out, want);
	assert_int_equal(len, strlen(want));
	free(out);
	qw_job_clear(&job);
}

static void
test_encode_raw_nul_roundtrip(void **state)
{
	struct qw_queue_conf qc = queue_defaults();
	struct qw_job job, again;
	size_t len = 0;
	char *out;

	(void)state;
	parse_n(&job, "a\0b", 3, &qc);
	out = qw_job_encode(&job, NULL, 0, NULL, &len);
	assert_non_null(out);
	assert_int_equal(len, strlen(out));
	assert_non_null(strstr(out, "\"payload\":\"a\\u0000b\""));
	/* What goes back to Redis is an envelope with the same payload. */
	assert_int_equal(qw_job_parse(&again, out, len, &qc, "other"), 0);
	assert_non_null(again.env);
	assert_null(again.error);
	assert_payload(&again, "a\0b", 3);
	assert_string_equal(again.id, NEW_ID);
	qw_job_clear(&again);
	qw_job_clear(&job);
}

static void
test_encode_raw_binary_base64(void **state)
{
	static const char bin[] = { (char)0xff, (char)0xfe, '\0', 'a', (char)0xc3, '(', (char)0x80 };
	struct qw_queue_conf qc = queue_defaults();
	struct qw_job job, again;
	json_t *obj;
	char *dec = NULL;
	size_t declen = 0, len = 0;
	char *out;

	(void)state;
	parse_n(&job, bin, sizeof(bin), &qc);
	obj = encode_json(&job, NULL, 0);
	assert_member_str(obj, "payload_encoding", "base64");
	assert_member_str(obj, "id", NEW_ID);
	assert_member_int(obj, "attempt", 0);
	assert_member_int(obj, "interrupted", 0);
	json_t *p = json_object_get(obj, "payload");
	assert_true(json_is_string(p));
	assert_int_equal(qw_base64_decode(json_string_value(p), json_string_length(p), &dec, &declen), 0);
	assert_int_equal(declen, sizeof(bin));
	assert_memory_equal(dec, bin, sizeof(bin));
	free(dec);
	json_decref(obj);

	/* And qw_job_parse of the result hands the handler the same bytes. */
	out = qw_job_encode(&job, NULL, 0, NULL, &len);
	assert_non_null(out);
	assert_int_equal(qw_job_parse(&again, out, len, &qc, "other"), 0);
	assert_null(again.error);
	assert_payload(&again, bin, sizeof(bin));
	qw_job_clear(&again);
	qw_job_clear(&job);
}

/* Control bytes escape to six bytes each: base64 is shorter, and kept. */
static void
test_encode_raw_control_bytes_base64(void **state)
{
	char ctl[300];
	struct qw_job job;
	json_t *obj;

	(void)state;
	memset(ctl, 1, sizeof(ctl));
	parse_n(&job, ctl, sizeof(ctl), &(struct qw_queue_conf){ .max_payload = 1 << 20,
	    .max_attempts = 5, .timeout_ms = 1000 });
	obj = encode_json(&job, NULL, 0);
	assert_member_str(obj, "payload_encoding", "base64");
	assert_int_equal(json_string_length(json_object_get(obj, "payload")), 400);
	json_decref(obj);
	qw_job_clear(&job);
	/* Text with a few newlines stays text. */
	parse(&job, "line one\nline two\n");
	obj = encode_json(&job, NULL, 0);
	assert_null(json_object_get(obj, "payload_encoding"));
	assert_member_str(obj, "payload", "line one\nline two\n");
	json_decref(obj);
	qw_job_clear(&job);
}

static void
test_encode_envelope_keeps_unknown(void **state)
{
	static const char in[] =
	    "{\"trace\":\"abc\",\"payload\":{\"b\":1,\"a\":2},\"custom\":{\"k\":[1,2]},\"timeout\":5}";
	struct qw_job job;
	json_t *obj, *want;

	(void)state;
	expect_valid(&job, in);
	job.attempt++;
	obj = encode_json(&job, NULL, 0);
	want = json_pack("{s:s, s:{s:i, s:i}, s:{s:[i,i]}, s:i, s:s, s:i, s:i}",
	    "trace", "abc", "payload", "b", 1, "a", 2, "custom", "k", 1, 2, "timeout", 5,
	    "id", NEW_ID, "attempt", 1, "interrupted", 0);
	assert_non_null(want);
	assert_true(json_equal(obj, want));
	json_decref(want);
	json_decref(obj);
	/* Members keep the producer's order; new ones are appended. */
	size_t len = 0;
	char *out = qw_job_encode(&job, NULL, 0, NULL, &len);
	assert_non_null(out);
	assert_string_equal(out, "{\"trace\":\"abc\",\"payload\":{\"b\":1,\"a\":2},"
	    "\"custom\":{\"k\":[1,2]},\"timeout\":5,\"id\":\"gen-1\",\"attempt\":1,\"interrupted\":0}");
	free(out);
	obj = encode_json(&job, NULL, 0);
	assert_null(json_object_get(obj, "error"));
	assert_null(json_object_get(obj, "failed_at"));
	json_decref(obj);
	qw_job_clear(&job);

	/* An id the producer set is kept. */
	expect_valid(&job, "{\"payload\":\"x\",\"id\":\"mine\",\"attempt\":1}");
	job.attempt = 2;
	obj = encode_json(&job, NULL, 0);
	assert_member_str(obj, "id", "mine");
	assert_member_int(obj, "attempt", 2);
	json_decref(obj);
	qw_job_clear(&job);
}

static void
test_encode_error_failed_at(void **state)
{
	struct qw_job job;
	json_t *obj;

	(void)state;
	parse(&job, "hello world");
	job.attempt = 5;
	obj = encode_json(&job, "timed out after 5s", 1700000000123LL);
	assert_member_str(obj, "payload", "hello world");
	assert_member_str(obj, "error", "timed out after 5s");
	assert_member_int(obj, "failed_at", 1700000000123LL);
	assert_member_int(obj, "attempt", 5);
	json_decref(obj);
	qw_job_clear(&job);

	expect_valid(&job, "{\"payload\":\"x\",\"error\":\"old\",\"failed_at\":1}");
	obj = encode_json(&job, "exit status 65", 1700000000999LL);
	assert_member_str(obj, "error", "exit status 65");
	assert_member_int(obj, "failed_at", 1700000000999LL);
	json_decref(obj);
	qw_job_clear(&job);

	/* Error text that is not UTF-8 still gives valid JSON. */
	parse(&job, "x");
	obj = encode_json(&job, "bad \xff byte", 1);
	assert_true(json_is_string(json_object_get(obj, "error")));
	json_decref(obj);
	qw_job_clear(&job);
}

static void
test_encode_malformed_keeps_members(void **state)
{
	struct qw_job job;
	json_t *obj, *v;

	(void)state;
	parse(&job, "{\"payload\":\"x\",\"attempt\":\"lots\",\"interrupted\":-1}");
	assert_non_null(job.error);
	obj = encode_json(&job, job.error, 1700000000000LL);
	assert_member_str(obj, "attempt", "lots");
	v = json_object_get(obj, "interrupted");
	assert_non_null(v);
	assert_true(json_is_integer(v));
	assert_int_equal(json_integer_value(v), -1);
	assert_non_null(strstr(json_string_value(json_object_get(obj, "error")), "'attempt'"));
	assert_member_str(obj, "payload", "x");
	json_decref(obj);
	qw_job_clear(&job);

	parse(&job, "{\"payload\":\"x\",\"id\":7,\"timeout\":\"soon\",\"max_attempts\":0}");
	assert_non_null(job.error);
	obj = encode_json(&job, job.error, 1);
	v = json_object_get(obj, "id");
	assert_true(json_is_integer(v));
	assert_int_equal(json_integer_value(v), 7);
	assert_member_str(obj, "timeout", "soon");
	assert_member_int(obj, "max_attempts", 0);
	/* Missing managed members are still added. */
	assert_member_int(obj, "attempt", 0);
	assert_member_int(obj, "interrupted", 0);
	json_decref(obj);
	qw_job_clear(&job);

	/* A raw job over max_payload is wrapped like any raw job. */
	struct qw_queue_conf qc = queue_defaults();
	qc.max_payload = 2;
	parse_n(&job, "abc", 3, &qc);
	assert_non_null(job.error);
	obj = encode_json(&job, job.error, 1);
	assert_member_str(obj, "payload", "abc");
	assert_member_str(obj, "id", NEW_ID);
	assert_member_int(obj, "attempt", 0);
	assert_non_null(strstr(json_string_value(json_object_get(obj, "error")), "max_payload"));
	json_decref(obj);
	qw_job_clear(&job);
}

/* A retry must hand the handler the same payload as the first run, and keep
 * unknown members as sent: numbers survive qw_job_encode exactly. */
static void
test_encode_keeps_numbers_exact(void **state)
{
	static const char in[] =
	    "{\"payload\":{\"v\":0.30000000000000004,\"w\":0.1,\"i\":-12},"
	    "\"n\":0.30000000000000004,\"timeout\":2.5}";
	struct qw_queue_conf qc = queue_defaults();
	struct qw_job job, again;
	char *first, *out;
	size_t len = 0;
	json_t *n;

	(void)state;
	expect_valid(&job, in);
	first = strndup(job.payload, job.payload_len);
	assert_non_null(first);
	out = qw_job_encode(&job, NULL, 0, NULL, &len);
	assert_non_null(out);
	assert_int_equal(qw_job_parse(&again, out, len, &qc, "other"), 0);
	assert_null(again.error);
	assert_int_equal(again.timeout_ms, 2500);
	n = json_object_get(again.env, "n");
	assert_true(json_is_real(n));
	if (json_real_value(n) != 0.30000000000000004 ||
	    again.payload_len != strlen(first) || memcmp(again.payload, first, strlen(first)) != 0) {
		print_error("first run got [%s], the retry [%.*s]; encoded %s\n", first,
		    (int)again.payload_len, again.payload, again.elem);
		free(first);
		qw_job_clear(&again);
		qw_job_clear(&job);
		fail();
	}
	free(first);
	qw_job_clear(&again);
	qw_job_clear(&job);
}

/* Two identical jobs that fail in the same millisecond with the same error
 * are written to the scheduled sorted set as two members: the managed
 * member "run" (the field of the run that failed) tells them apart, and a
 * raw job keeps its bytes exactly. */
static void
test_encode_run_keeps_identical_jobs_apart(void **state)
{
	static const char raw[] = "charge card 42 \xff\x01";
	static const char envl[] = "{\"payload\":\"charge card 42\",\"id\":\"order-42\"}";
	struct qw_queue_conf qc = queue_defaults();
	const char *elems[] = { raw, envl };
	size_t lens[] = { sizeof(raw) - 1, sizeof(envl) - 1 };

	(void)state;
	for (size_t k = 0; k < 2; k++) {
		struct qw_job a, b, again;
		char *ea, *eb;
		size_t la = 0, lb = 0;

		parse_n(&a, elems[k], lens[k], &qc);
		parse_n(&b, elems[k], lens[k], &qc);
		a.attempt = b.attempt = 1;
		ea = qw_job_encode(&a, "exit status 1", 1700000000000, "0a0b0c0d0e0f-7", &la);
		eb = qw_job_encode(&b, "exit status 1", 1700000000000, "0a0b0c0d0e0f-8", &lb);
		assert_non_null(ea);
		assert_non_null(eb);
		assert_false(la == lb && memcmp(ea, eb, la) == 0);
		assert_non_null(strstr(ea, "\"run\":\"0a0b0c0d0e0f-7\""));
		assert_non_null(strstr(eb, "\"run\":\"0a0b0c0d0e0f-8\""));
		/* Read back, the job hands its handler the same payload. */
		assert_int_equal(qw_job_parse(&again, ea, la, &qc, "other"), 0);
		assert_null(again.error);
		if (k == 0)
			assert_payload(&again, raw, sizeof(raw) - 1);
		else
			assert_payload(&again, "charge card 42", 14);
		assert_int_equal(again.attempt, 1);
		/* Its next failure replaces the member, never adds a second. */
		free(eb);
		eb = qw_job_encode(&again, "exit status 1", 1700000000000, "0a0b0c0d0e0f-9", &lb);
		assert_non_null(eb);
		assert_non_null(strstr(eb, "\"run\":\"0a0b0c0d0e0f-9\""));
		assert_null(strstr(eb, "0a0b0c0d0e0f-7"));
		free(eb);
		qw_job_clear(&again);
		qw_job_clear(&a);
		qw_job_clear(&b);
	}
}

/* Without a run (pending, dead) no "run" member is added. */
static void
test_encode_without_run(void **state)
{
	struct qw_job job;
	json_t *obj;

	(void)state;
	parse(&job, "plain");
	obj = encode_json(&job, "boom", 5);
	assert_null(json_object_get(obj, "run"));
	json_decref(obj);
	qw_job_clear(&job);
}

/* ------------------------------------------------------------------------ */
/* Backoff */

static void
test_backoff_grows(void **state)
{
	struct qw_queue_conf qc = queue_defaults();

	(void)state;
	for (unsigned n = 1; n < 3; n++) {
		uint64_t hi = qw_job_backoff_ms(&qc, n, 0.999);
		uint64_t lo = qw_job_backoff_ms(&qc, n + 1, 0.0);
		if (!(hi < lo))
			fail_msg("backoff(%u, 0.999) = %llu is not below backoff(%u, 0) = %llu",
			    n, (unsigned long long)hi, n + 1, (unsigned long long)lo);
	}
	assert_int_equal(qw_job_backoff_ms(&qc, 1, 0.0), 800);
	assert_int_equal(qw_job_backoff_ms(&qc, 2, 0.0), 1600);
	assert_int_equal(qw_job_backoff_ms(&qc, 3, 0.0), 3200);
	assert_int_equal(qw_job_backoff_ms(&qc, 1, 0.5), 1000);
	assert_int_equal(qw_job_backoff_ms(&qc, 2, 0.5), 2000);
}

static void
test_backoff_jitter_bounds(void **state)
{
	static const double rs[] = { 0.0, 0.001, 0.25, 0.5, 0.75, 0.999, 0.999999 };
	struct qw_queue_conf qc = queue_defaults();

	(void)state;
	qc.retry_base_ms = 1000;
	qc.retry_max_ms = 365ULL * 86400000;
	for (unsigned n = 1; n <= 12; n++) {
		uint64_t exp = qc.retry_base_ms << (n - 1);
		for (size_t i = 0; i < sizeof(rs) / sizeof(rs[0]); i++) {
			uint64_t v = qw_job_backoff_ms(&qc, n, rs[i]);
			if (v < exp * 8 / 10 || v >= exp * 12 / 10)
				fail_msg("backoff(%u, %g) = %llu outside [%llu, %llu)", n, rs[i],
				    (unsigned long long)v, (unsigned long long)(exp * 8 / 10),
				    (unsigned long long)(exp * 12 / 10));
		}
	}
}

static void
test_backoff_cap(void **state)
{
	static const double rs[] = { 0.0, 0.5, 0.999 };
	static const unsigned attempts[] = { 1, 2, 3, 4, 5, 10, 20, 31, 32, 33, 63, 64, 65,
	    1000, 1000000, 4000000000U };
	struct qw_queue_conf qc = queue_defaults();

	(void)state;
	for (size_t a = 0; a < sizeof(attempts) / sizeof(attempts[0]); a++)
		for (size_t i = 0; i < sizeof(rs) / sizeof(rs[0]); i++) {
			uint64_t v = qw_job_backoff_ms(&qc, attempts[a], rs[i]);
			assert_true(v >= 1);
			assert_true(v <= qc.retry_max_ms);
		}
	/* Once capped, jitter only ever takes it down, by at most 20%. */
	for (unsigned n = 30; n < 40; n++) {
		assert_true(qw_job_backoff_ms(&qc, n, 0.0) >= qc.retry_max_ms * 8 / 10);
		assert_int_equal(qw_job_backoff_ms(&qc, n, 0.999), qc.retry_max_ms);
	}

	qc.retry_base_ms = 1000;
	qc.retry_max_ms = 5000;
	assert_int_equal(qw_job_backoff_ms(&qc, 3, 0.0), 3200);
	assert_int_equal(qw_job_backoff_ms(&qc, 3, 0.999), 4798);
	assert_int_equal(qw_job_backoff_ms(&qc, 4, 0.0), 5000);
	assert_int_equal(qw_job_backoff_ms(&qc, 4, 0.999), 5000);
	assert_int_equal(qw_job_backoff_ms(&qc, 50, 0.5), 5000);

	/* retry_base == retry_max: always retry_max or just below it. */
	qc.retry_base_ms = qc.retry_max_ms = 2000;
	for (unsigned n = 1; n < 10; n++) {
		uint64_t v = qw_job_backoff_ms(&qc, n, 0.999);
		assert_true(v <= 2000);
		assert_true(v >= 1600);
	}

	/* Never 0, even for a 1 ms base. */
	qc.retry_base_ms = 1;
	qc.retry_max_ms = 1;
	assert_int_equal(qw_job_backoff_ms(&qc, 1, 0.0), 1);
}

/* ------------------------------------------------------------------------ */
/* Base64 */

static void
test_base64_vectors(void **state)
{
	static const struct { const char *plain, *enc; } v[] = {
		{ "", "" }, { "f", "Zg==" }, { "fo", "Zm8=" }, { "foo", "Zm9v" },
		{ "foob", "Zm9vYg==" }, { "fooba", "Zm9vYmE=" }, { "foobar", "Zm9vYmFy" },
		{ "\xfb\xff", "+/8=" },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		char *e = qw_base64_encode(v[i].plain, strlen(v[i].plain)), *d = NULL;
		size_t dlen = 99;

		assert_non_null(e);
		assert_string_equal(e, v[i].enc);
		free(e);
		assert_int_equal(qw_base64_decode(v[i].enc, strlen(v[i].enc), &d, &dlen), 0);
		assert_int_equal(dlen, strlen(v[i].plain));
		assert_memory_equal(d, v[i].plain, dlen);
		free(d);
	}
}

static void
test_base64_roundtrip(void **state)
{
	unsigned char data[10];

	(void)state;
	for (size_t len = 0; len <= 10; len++) {
		for (int pattern = 0; pattern < 3; pattern++) {
			char *enc, *dec = NULL;
			size_t declen = 12345;

			for (size_t i = 0; i < len; i++)
				data[i] = pattern == 0 ? (unsigned char)(i * 37 + 11)
				    : pattern == 1 ? 0x00 : 0xff;
			enc = qw_base64_encode(data, len);
			assert_non_null(enc);
			assert_int_equal(strlen(enc), (len + 2) / 3 * 4);
			assert_int_equal(qw_base64_decode(enc, strlen(enc), &dec, &declen), 0);
			assert_int_equal(declen, len);
			if (len > 0)
				assert_memory_equal(dec, data, len);
			free(dec);
			free(enc);
		}
	}
}

static void
test_base64_rejects(void **state)
{
	static const char *bad[] = {
		"Z", "Zg", "Zg=", "Zm9vY", "Zg===", "====", "=Zg=", "Z===", "Zg=a", "Zm9v!A==",
		"Zm9 v", "Zm9v\n", "Zg==Zg==", "Zm-_", "Zm9v====",
	};

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char *d = NULL;
		size_t dlen = 0;

		if (qw_base64_decode(bad[i], strlen(bad[i]), &d, &dlen) != -1) {
			free(d);
			fail_msg("base64 '%s' accepted", bad[i]);
		}
	}
	/* An embedded NUL is not base64 either. */
	char *d = NULL;
	size_t dlen = 0;
	assert_int_equal(qw_base64_decode("Zm\0v", 4, &d, &dlen), -1);
}

/* ------------------------------------------------------------------------ */

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_raw_text),
		cmocka_unit_test(test_raw_binary),
		cmocka_unit_test(test_raw_json_not_envelope),
		cmocka_unit_test(test_envelope_leading_whitespace),
		cmocka_unit_test(test_envelope_string_payload),
		cmocka_unit_test(test_envelope_json_payload),
		cmocka_unit_test(test_envelope_payload_nul),
		cmocka_unit_test(test_envelope_base64),
		cmocka_unit_test(test_envelope_base64_errors),
		cmocka_unit_test(test_member_id),
		cmocka_unit_test(test_member_timeout),
		cmocka_unit_test(test_member_max_attempts),
		cmocka_unit_test(test_member_attempt_interrupted),
		cmocka_unit_test(test_member_enqueued_at),
		cmocka_unit_test(test_unknown_members_accepted),
		cmocka_unit_test(test_member_unique),
		cmocka_unit_test(test_max_payload_raw),
		cmocka_unit_test(test_max_payload_envelope),
		cmocka_unit_test(test_oversize_goes_verbatim),
		cmocka_unit_test(test_json_past_parser_limits),
		cmocka_unit_test(test_json_too_deep_classified_by_payload_member),
		cmocka_unit_test(test_json_number_overflow_without_payload_is_raw),
		cmocka_unit_test(test_encode_raw_control_bytes_base64),
		cmocka_unit_test(test_encode_raw_utf8),
		cmocka_unit_test(test_encode_run_keeps_identical_jobs_apart),
		cmocka_unit_test(test_encode_without_run),
		cmocka_unit_test(test_encode_raw_nul_roundtrip),
		cmocka_unit_test(test_encode_raw_binary_base64),
		cmocka_unit_test(test_encode_envelope_keeps_unknown),
		cmocka_unit_test(test_encode_error_failed_at),
		cmocka_unit_test(test_encode_malformed_keeps_members),
		cmocka_unit_test(test_encode_keeps_numbers_exact),
		cmocka_unit_test(test_backoff_grows),
		cmocka_unit_test(test_backoff_jitter_bounds),
		cmocka_unit_test(test_backoff_cap),
		cmocka_unit_test(test_base64_vectors),
		cmocka_unit_test(test_base64_roundtrip),
		cmocka_unit_test(test_base64_rejects),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
