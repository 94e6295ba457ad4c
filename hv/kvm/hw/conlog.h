/* SPDX-License-Identifier: MIT */
/*
 * A guest console as prefixed lines for the VMM's log, at a bounded rate.
 *
 * A guest printing in a loop must not drown the VMM's own messages, so at
 * most `rate` lines a second are printed as they come. Lines over the rate
 * are held, not printed: the last KVM_CONLOG_HELD of them are kept (a ring
 * of lines, the oldest overwritten and counted as dropped) and printed
 * after a "... N lines suppressed" line when the next second's first line
 * arrives, or at the guest's end (kvm_conlog__end()). So the last lines a
 * guest wrote before it died (its panic) are never lost, whatever it
 * printed before, and what was dropped is counted.
 *
 * No locking: the caller serializes (the VMM's device lock).
 */
#ifndef KEMARI_HV_KVM_HW_CONLOG_H
#define KEMARI_HV_KVM_HW_CONLOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KVM_CONLOG_LINE 256 /* longer lines are split, never cut */
#define KVM_CONLOG_HELD 32  /* lines over the rate kept for later */

/* One whole line of output, prefix and newline included. */
typedef void kvm_conlog_out_fn(void *ctx, const char *text, size_t len);

struct kvm_conlog {
	const char *prefix;
	unsigned int rate; /* lines a second printed at once */
	kvm_conlog_out_fn *out;
	void *ctx;
	char line[KVM_CONLOG_LINE]; /* the line being written */
	size_t len;
	bool started;
	uint64_t window_ns;	/* start of the current second */
	unsigned int in_window; /* lines printed in it */
	/* Held lines: a ring of nheld lines from first, oldest first. */
	char held[KVM_CONLOG_HELD][KVM_CONLOG_LINE];
	uint16_t held_len[KVM_CONLOG_HELD];
	unsigned int first, nheld;
	unsigned long dropped; /* over the rate and not kept, since printed */
	unsigned long dropped_total;
};

/* Empty, printing through out with prefix (NULL: none), rate >= 1. */
void kvm_conlog__init(struct kvm_conlog *c, const char *prefix,
		      unsigned int rate, kvm_conlog_out_fn *out, void *ctx);
/*
 * Guest bytes at time now_ns (monotonic): a newline ends a line, other
 * bytes outside printable ASCII and tab become '?'.
 */
void kvm_conlog__put(struct kvm_conlog *c, const void *buf, size_t len,
		     uint64_t now_ns);
/*
 * The guest stopped (or the console goes away): the held lines with the
 * dropped count, then a line not yet ended, all printed now whatever the
 * rate. Printing may resume afterwards.
 */
void kvm_conlog__end(struct kvm_conlog *c);

/*
 * All of len bytes to fd, through EINTR and short writes (a pipe that is
 * full blocks the writer: output is slowed, not lost). 0 or -errno.
 */
int kvm_conlog__write_all(int fd, const void *buf, size_t len);

#endif
