/* SPDX-License-Identifier: MIT */
/*
 * Receive credits of the one-sided transports' control messages, in
 * wrapping 32-bit counters (tests/unit/test_xp_common.c). A control message
 * needs a receive the peer posted for it: we send only while the peer's
 * receives (granted) outnumber our messages (sent). Our side counts the
 * receives it posts for the peer (lent) and returns them in batches (told:
 * as far as the peer knows), never one by one, so that returning credits
 * costs little; how a return travels is the transport's (rdma: the
 * immediate of a send or a write into the peer's credit word; ofi: a
 * transport message).
 */
#ifndef KEMARI_XP_CREDIT_H
#define KEMARI_XP_CREDIT_H

#include <stdbool.h>
#include <stdint.h>

struct xp_credit {
	uint32_t granted; /* receives the peer posted for us, cumulative */
	uint32_t sent;	  /* messages that took one of them */
	uint32_t lent;	  /* receives we posted for the peer, cumulative */
	uint32_t told;	  /* ... as the peer last heard */
	uint32_t batch;	  /* return credits once this many are owed */
};

/* The peer starts with window receives; we return every batch of ours. */
void xp_credit__init(struct xp_credit *c, uint32_t window, uint32_t batch);
/* Messages we may send now. */
uint32_t xp_credit__avail(const struct xp_credit *c);
/* We sent one message. */
void xp_credit__take(struct xp_credit *c);
/* The peer says it has posted total receives in all (the later counts). */
void xp_credit__granted(struct xp_credit *c, uint32_t total);
/*
 * The peer returned n more receives: 0, or -EBADMSG when that would give
 * more than max messages in hand (nonsense from a peer).
 */
int xp_credit__grant(struct xp_credit *c, uint32_t n, uint32_t max);
/* We posted a receive for the peer. */
void xp_credit__lend(struct xp_credit *c);
/* Receives posted that the peer has not heard of. */
uint32_t xp_credit__owed(const struct xp_credit *c);
/* Whether to tell the peer now: a batch is owed, or any at all (force). */
bool xp_credit__due(const struct xp_credit *c, bool force);
/* The peer has now heard of every receive posted. */
void xp_credit__told(struct xp_credit *c);
/* The later of two wrapping counters. */
uint32_t xp_credit__later(uint32_t cur, uint32_t seen);

#endif
