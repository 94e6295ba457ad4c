// SPDX-License-Identifier: MIT
/* The control socket's JSON reader (core/json.c) and the Prometheus
 * exposition (core/prom.c) of a fixed snapshot. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "kemari/json.h"
#include "kemari/kemari.h"
#include "kemari/prom.h"

struct flat {
	char s[1024];
};

static int flat_cb(void *ctx, const char *path, enum kemari_json_type t,
		   const char *value)
{
	struct flat *f = ctx;
	size_t n = strlen(f->s);

	snprintf(f->s + n, sizeof(f->s) - n, "%s=%d:%s;", path, (int)t, value);
	return 0;
}

Test(json, walks_scalars_with_their_paths)
{
	struct flat f = { "" };

	cr_assert(eq(
		int,
		kemari_json__walk(
			" {\"return\":{\"peer\":{\"address\":\"a\\\"b\\u00e9\","
			"\"connected\":true},\"n\":-12.5e3,\"l\":[1,null,{}]},"
			"\"id\":7} \n",
			flat_cb, &f),
		0));
	cr_assert(eq(str, f.s,
		     "return.peer.address=0:a\"b\xc3\xa9;"
		     "return.peer.connected=2:true;return.n=1:-12.5e3;"
		     "return.l.0=1:1;return.l.1=3:null;return.l.2=4:{};"
		     "id=1:7;"));
}

Test(json, refuses_what_is_not_json)
{
	static const char *const bad[] = {
		"",
		"{",
		"{\"a\"}",
		"{\"a\":}",
		"{\"a\":1,}",
		"{a:1}",
		"[1 2]",
		"\"x",
		"tru",
		"{} {}",
		"{\"a\":\"\x01\"}",
		"-",
	};
	struct flat f;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		f.s[0] = 0;
		cr_assert(eq(int, kemari_json__walk(bad[i], flat_cb, &f),
			     -EINVAL),
			  "%s", bad[i]);
	}
}

Test(json, quote_escapes_and_truncates)
{
	char out[32];

	cr_assert(
		eq(sz, kemari_json__quote(out, sizeof(out), "a\"b\\c\n"), 15));
	cr_assert(eq(str, out, "\"a\\\"b\\\\c\\u000a\""));
	cr_assert(eq(sz, kemari_json__quote(out, 4, "abcdef"), 8));
	cr_assert(eq(str, out, "\"ab"));
}

Test(prom, exposition_of_a_snapshot)
{
	struct kemari_engine_stats s = {
		.role = KEMARI_ROLE_PRIMARY,
		.state = KEMARI_STATE_PROTECTED,
		.epoch = 3,
		.epochs = 3,
		.bytes = 3 * 64 * 4096,
		.pages = 3 * 64,
	};
	struct kemari_buf b = { 0 };
	char *text;

	/* Pauses of 30, 30 and 2000 us; 64 dirty pages each time. */
	s.pause_us.bucket[1] = 2;
	s.pause_us.bucket[6] = 1;
	s.pause_us.count = 3;
	s.pause_us.sum = 2060;
	s.dirty_pages.bucket[4] = 3;
	s.dirty_pages.count = 3;
	s.dirty_pages.sum = 192;
	cr_assert(eq(int, kemari_prom__render(&s, &b), 0));
	cr_assert(eq(int, kemari_buf__append(&b, "", 1), 0));
	text = (char *)b.data;
	cr_assert(
		strstr(text,
		       "kemari_info{role=\"primary\",state=\"protected\",version=\"" KEMARI_VERSION
		       "\"} 1\n") != NULL,
		"%s", text);
	cr_assert(strstr(text, "\nkemari_protected 1\n") != NULL);
	cr_assert(strstr(text, "\nkemari_epochs_total 3\n") != NULL);
	cr_assert(strstr(text, "\nkemari_pushed_pages_total 192\n") != NULL);
	cr_assert(strstr(text, "\nkemari_pushed_bytes_total 786432\n") != NULL);
	cr_assert(strstr(text,
			 "kemari_pause_seconds_bucket{le=\"2.5e-05\"} 0\n"
			 "kemari_pause_seconds_bucket{le=\"5e-05\"} 2\n"
			 "kemari_pause_seconds_bucket{le=\"0.0001\"} 2\n"
			 "kemari_pause_seconds_bucket{le=\"0.00025\"} 2\n"
			 "kemari_pause_seconds_bucket{le=\"0.0005\"} 2\n"
			 "kemari_pause_seconds_bucket{le=\"0.001\"} 2\n"
			 "kemari_pause_seconds_bucket{le=\"0.0025\"} 3\n") !=
			  NULL,
		  "%s", text);
	cr_assert(strstr(text, "kemari_pause_seconds_bucket{le=\"+Inf\"} 3\n"
			       "kemari_pause_seconds_sum 0.00206\n"
			       "kemari_pause_seconds_count 3\n") != NULL);
	cr_assert(
		strstr(text,
		       "kemari_pause_phase_seconds_bucket{phase=\"push\",le=\"+Inf\"} 0\n"
		       "kemari_pause_phase_seconds_sum{phase=\"push\"} 0\n"
		       "kemari_pause_phase_seconds_count{phase=\"push\"} 0\n") !=
		NULL);
	cr_assert(strstr(text,
			 "kemari_dirty_pages_bucket{le=\"16\"} 0\n"
			 "kemari_dirty_pages_bucket{le=\"64\"} 3\n") != NULL);
	kemari_buf__fini(&b);
}
