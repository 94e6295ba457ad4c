/* SPDX-License-Identifier: MIT */
/*
 * Sticky failure of a one-sided connection (tests/unit/test_xp_common.c).
 * A failure is often found while reaping completions for another call;
 * the connection remembers its first one and every later operation reports
 * it again, with the same line. Two kinds: the connection died (the peer is
 * gone, a completion failed: usually -ECONNRESET), or the peer sent
 * something malformed (-EBADMSG), which is delivered only after the good
 * messages that arrived before it.
 */
#ifndef KEMARI_XP_FAIL_H
#define KEMARI_XP_FAIL_H

#include <stdbool.h>

#include "kemari/kemari.h"

struct xp_fail {
	int dead; /* negative errno, 0 while alive */
	int bad;  /* a malformed frame arrived: negative errno */
	char why[320];
	char bad_why[320];
};

/* Remember the first death; the others are dropped. */
void xp_fail__die(struct xp_fail *f, int err, const char *fmt, ...)
	KEMARI_PRINTF(3, 4);
/* -ECONNRESET: "connection to ADDR lost: WHY". */
void xp_fail__lost(struct xp_fail *f, const char *addr, const char *why);
/*
 * Remember the first malformed frame, with kemari_wire's reason for err
 * (the checks ran right after a kemari_err_clear).
 */
void xp_fail__malformed(struct xp_fail *f, int err);
/* Dead or bad. */
bool xp_fail__failed(const struct xp_fail *f);
/* The death, recorded as the error of this call: its errno, or 0. */
int xp_fail__dead(const struct xp_fail *f);
/* The malformed frame first, else the death, as the error of this call. */
int xp_fail__report(const struct xp_fail *f);

#endif
