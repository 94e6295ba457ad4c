// SPDX-License-Identifier: MIT
/*
 * The guest console's lines (hv/kvm/hw/conlog.c): the rate limit holds
 * lines back instead of losing them, a panic written last after a flood
 * appears whole at the guest's end, and what was dropped is counted.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../hv/kvm/hw/conlog.h"

#define SEC 1000000000ULL

/* What the console printed, whole lines in order. */
struct sink {
	char text[256 * 1024];
	size_t len;
	unsigned int lines;
};

static void sink_out(void *ctx, const char *text, size_t len)
{
	struct sink *s = ctx;

	cr_assert(gt(sz, len, 0));
	cr_assert(eq(chr, text[len - 1], '\n'), "a line ends in a newline");
	cr_assert(lt(sz, s->len + len, sizeof(s->text)));
	memcpy(s->text + s->len, text, len);
	s->len += len;
	s->text[s->len] = 0;
	s->lines++;
}

/* Line i of the output (from 0), without its newline, into out. */
static char *sink_line(const struct sink *s, unsigned int i, char *out,
		       size_t cap)
{
	const char *p = s->text;

	for (; i && p; i--) {
		p = strchr(p, '\n');
		p = p ? p + 1 : NULL;
	}
	cr_assert(p && *p, "no line %u", i);
	snprintf(out, cap, "%.*s", (int)strcspn(p, "\n"), p);
	return out;
}

static void put_str(struct kvm_conlog *c, const char *s, uint64_t now)
{
	kvm_conlog__put(c, s, strlen(s), now);
}

static struct kvm_conlog conlog; /* 8 KiB of held lines: not on the stack */
static struct sink sink;

static void setup(void)
{
	memset(&sink, 0, sizeof(sink));
}

TestSuite(conlog, .init = setup);

Test(conlog, lines_under_the_rate_pass_at_once_with_the_prefix)
{
	char l[300];

	kvm_conlog__init(&conlog, "guest: ", 5, sink_out, &sink);
	put_str(&conlog, "one\ntwo\nthr", 0);
	cr_assert(eq(u32, sink.lines, 2));
	put_str(&conlog, "ee\n", 10);
	cr_assert(eq(u32, sink.lines, 3));
	cr_assert(eq(str, sink_line(&sink, 2, l, sizeof(l)), "guest: three"));
	kvm_conlog__end(&conlog);
	cr_assert(eq(u32, sink.lines, 3), "nothing held, nothing more");
}

/*
 * The console fills: 100 lines in one second at a rate of 5, then the
 * guest's panic. The first 5 are printed as they come; the panic and the
 * 31 lines before it are held, the 64 before those counted. At the guest's
 * end: the count, then the 32 held lines in order, the panic last and whole.
 */
Test(conlog, panic_after_a_flood_appears_whole_at_the_end)
{
	const char *panic =
		"panic: CPU exception 14 (#PF) at RIP 0x201234, CR2 0x0";
	char l[300], want[300];

	kvm_conlog__init(&conlog, "guest: ", 5, sink_out, &sink);
	for (int i = 0; i < 100; i++) {
		char line[32];

		snprintf(line, sizeof(line), "flood %d\n", i);
		put_str(&conlog, line, SEC + (uint64_t)i * 1000);
	}
	put_str(&conlog, panic, SEC + 200000);
	put_str(&conlog, "\n", SEC + 200001);
	cr_assert(eq(u32, sink.lines, 5), "over the rate: held, not printed");
	cr_assert(eq(str, sink_line(&sink, 4, l, sizeof(l)), "guest: flood 4"));

	kvm_conlog__end(&conlog);
	cr_assert(eq(u32, sink.lines, 5 + 1 + KVM_CONLOG_HELD));
	cr_assert(eq(str, sink_line(&sink, 5, l, sizeof(l)),
		     "guest: ... 64 lines suppressed (over 5 a second)"));
	for (int i = 0; i < KVM_CONLOG_HELD - 1; i++) {
		snprintf(want, sizeof(want), "guest: flood %d", 69 + i);
		cr_assert(
			eq(str,
			   sink_line(&sink, 6 + (unsigned int)i, l, sizeof(l)),
			   want));
	}
	snprintf(want, sizeof(want), "guest: %s", panic);
	cr_assert(eq(str, sink_line(&sink, 5 + KVM_CONLOG_HELD, l, sizeof(l)),
		     want));
	cr_assert(eq(u64, conlog.dropped_total, 64));
}

/* The guest died in the middle of its panic line: printed at the end. */
Test(conlog, a_line_without_its_newline_is_printed_at_the_end)
{
	char l[300];

	kvm_conlog__init(&conlog, "guest(secondary): ", 1, sink_out, &sink);
	put_str(&conlog, "first\nsecond\n", 0);
	put_str(&conlog, "panic: half a li", 5);
	cr_assert(eq(u32, sink.lines, 1));
	kvm_conlog__end(&conlog);
	cr_assert(eq(u32, sink.lines, 3));
	cr_assert(eq(str, sink_line(&sink, 1, l, sizeof(l)),
		     "guest(secondary): second"));
	cr_assert(eq(str, sink_line(&sink, 2, l, sizeof(l)),
		     "guest(secondary): panic: half a li"));
}

/* The next second's first line releases what the last one held, first. */
Test(conlog, a_new_second_prints_the_held_lines_before_its_own)
{
	char l[300];

	kvm_conlog__init(&conlog, "", 2, sink_out, &sink);
	put_str(&conlog, "a\nb\nc\nd\n", 0);
	cr_assert(eq(u32, sink.lines, 2));
	put_str(&conlog, "e\n", SEC);
	cr_assert(eq(u32, sink.lines, 5));
	cr_assert(eq(str, sink_line(&sink, 2, l, sizeof(l)), "c"));
	cr_assert(eq(str, sink_line(&sink, 3, l, sizeof(l)), "d"));
	cr_assert(eq(str, sink_line(&sink, 4, l, sizeof(l)), "e"));
	cr_assert(strstr(sink.text, "suppressed") == NULL, "nothing dropped");
}

/* A line longer than the buffer is split, never cut; odd bytes become '?'. */
Test(conlog, long_lines_split_and_control_bytes_shown)
{
	char big[KVM_CONLOG_LINE + 11], l[300];

	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = 0;
	kvm_conlog__init(&conlog, NULL, 100, sink_out, &sink);
	put_str(&conlog, big, 0);
	put_str(&conlog, "\n\x01\tz\n", 0);
	cr_assert(eq(u32, sink.lines, 3));
	cr_assert(eq(sz, strlen(sink_line(&sink, 0, l, sizeof(l))),
		     KVM_CONLOG_LINE));
	cr_assert(eq(sz, strlen(sink_line(&sink, 1, l, sizeof(l))), 10));
	cr_assert(eq(str, sink_line(&sink, 2, l, sizeof(l)), "?\tz"));
}

/* Every byte through a pipe smaller than the text (a slow reader). */
Test(conlog, write_all_delivers_everything_through_a_small_pipe)
{
	static char text[256 * 1024], back[sizeof(text)];
	int p[2];
	size_t got = 0;
	pid_t pid;

	for (size_t i = 0; i < sizeof(text); i++)
		text[i] = (char)('a' + i % 26);
	cr_assert(eq(int, pipe(p), 0));
	fcntl(p[1], F_SETPIPE_SZ, 4096);
	pid = fork();
	cr_assert(ge(int, pid, 0));
	if (!pid) {
		close(p[0]);
		_exit(kvm_conlog__write_all(p[1], text, sizeof(text)) ? 1 : 0);
	}
	close(p[1]);
	for (;;) {
		ssize_t n = read(p[0], back + got, sizeof(back) - got);

		if (n <= 0)
			break;
		got += (size_t)n;
	}
	close(p[0]);
	cr_assert(eq(sz, got, sizeof(text)));
	cr_assert(eq(int, memcmp(text, back, sizeof(text)), 0));
	cr_assert(eq(int, kvm_conlog__write_all(-1, "x", 1), -EBADF));
}
