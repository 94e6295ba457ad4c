// SPDX-License-Identifier: MIT
/* A guest console as prefixed lines at a bounded rate (conlog.h). */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "conlog.h"

void kvm_conlog__init(struct kvm_conlog *c, const char *prefix,
		      unsigned int rate, kvm_conlog_out_fn *out, void *ctx)
{
	memset(c, 0, sizeof(*c));
	c->prefix = prefix ? prefix : "";
	c->rate = rate ? rate : 1;
	c->out = out;
	c->ctx = ctx;
}

static void conlog__emit(struct kvm_conlog *c, const char *text, size_t len)
{
	char buf[KVM_CONLOG_LINE + 128];
	int n = snprintf(buf, sizeof(buf), "%s%.*s\n", c->prefix, (int)len,
			 text);

	if (n < 0)
		return;
	/* A prefix too long for the buffer still ends the line. */
	if ((size_t)n >= sizeof(buf)) {
		n = (int)sizeof(buf) - 1;
		buf[n - 1] = '\n';
	}
	c->out(c->ctx, buf, (size_t)n);
}

/* What was held back: the count of what is gone, then the kept lines. */
static void conlog__release_held(struct kvm_conlog *c)
{
	char note[96];

	if (c->dropped) {
		int n = snprintf(note, sizeof(note),
				 "... %lu lines suppressed (over %u a second)",
				 c->dropped, c->rate);

		conlog__emit(c, note, (size_t)n);
	}
	for (unsigned int i = 0; i < c->nheld; i++) {
		unsigned int k = (c->first + i) % KVM_CONLOG_HELD;

		conlog__emit(c, c->held[k], c->held_len[k]);
	}
	c->dropped = 0;
	c->first = c->nheld = 0;
}

static void conlog__hold(struct kvm_conlog *c)
{
	unsigned int k;

	if (c->nheld == KVM_CONLOG_HELD) {
		/* The oldest held line makes room: gone, but counted. */
		c->first = (c->first + 1) % KVM_CONLOG_HELD;
		c->nheld--;
		c->dropped++;
		c->dropped_total++;
	}
	k = (c->first + c->nheld++) % KVM_CONLOG_HELD;
	memcpy(c->held[k], c->line, c->len);
	c->held_len[k] = (uint16_t)c->len;
}

static void conlog__end_line(struct kvm_conlog *c, uint64_t now_ns)
{
	if (!c->started || now_ns - c->window_ns >= 1000000000ULL) {
		/* A new second: what the last one held back comes first. */
		conlog__release_held(c);
		c->started = true;
		c->window_ns = now_ns;
		c->in_window = 0;
	}
	if (c->in_window < c->rate) {
		c->in_window++;
		conlog__emit(c, c->line, c->len);
	} else {
		conlog__hold(c);
	}
	c->len = 0;
}

void kvm_conlog__put(struct kvm_conlog *c, const void *buf, size_t len,
		     uint64_t now_ns)
{
	const char *p = buf;

	for (size_t i = 0; i < len; i++) {
		char ch = p[i];

		if (ch == '\n') {
			conlog__end_line(c, now_ns);
			continue;
		}
		if (c->len == KVM_CONLOG_LINE)
			conlog__end_line(c, now_ns);
		c->line[c->len++] =
			(ch >= 0x20 && ch < 0x7f) || ch == '\t' ? ch : '?';
	}
}

void kvm_conlog__end(struct kvm_conlog *c)
{
	conlog__release_held(c);
	if (c->len)
		conlog__emit(c, c->line, c->len);
	c->len = 0;
	/* Whatever comes next starts a new second. */
	c->started = false;
}

int kvm_conlog__write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len) {
		ssize_t n = write(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN) {
			/* Someone else's non-blocking pipe: wait for room. */
			struct pollfd pfd = { .fd = fd, .events = POLLOUT };

			if (poll(&pfd, 1, 1000) >= 0 || errno == EINTR)
				continue;
		}
		if (n < 0)
			return -errno;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}
