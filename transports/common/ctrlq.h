/* SPDX-License-Identifier: MIT */
/*
 * The one-sided transports' queue of arrived control frames, between the
 * completion that delivered a frame and the recv that hands it to the
 * engine (tests/unit/test_xp_common.c). A frame lands in a receive buffer
 * (slot) posted for the peer. A small one may be copied out on arrival, so
 * its slot goes back to the peer at once (a primary busy pushing still
 * takes the secondary's heartbeats); the others keep their slot until the
 * engine is done with them. The frame recv returned last is held (its
 * payload stays valid) until the next recv releases it.
 */
#ifndef KEMARI_XP_CTRLQ_H
#define KEMARI_XP_CTRLQ_H

#include <stdbool.h>
#include <stdint.h>

#include "kemari/wire.h"
#include "kemari/xport.h"

struct xp_ctrl_entry {
	int32_t slot; /* receive slot still holding the payload, -1: copied */
	struct kemari_wire_hdr h;
	const uint8_t *payload;
};

struct xp_ctrlq {
	struct xp_ctrl_entry *e;
	uint8_t *copies;   /* copy_max bytes per entry */
	uint32_t cap;	   /* entries */
	uint32_t slots;	   /* receive slots: entries kept for them */
	uint32_t copy_max; /* payloads up to this are copied, 0: none */
	uint32_t head, tail;
	bool held; /* e[head] was returned by recv and is still in use */
};

/*
 * A queue for slots receive slots and backlog copied frames on top (0: no
 * copies); 0 or -ENOMEM.
 */
int xp_ctrlq__init(struct xp_ctrlq *q, uint32_t slots, uint32_t backlog,
		   uint32_t copy_max);
void xp_ctrlq__fini(struct xp_ctrlq *q);
/*
 * Queue a checked frame whose payload lies in receive slot `slot`: true
 * when it was copied (the caller gives the slot back now), false when the
 * entry keeps the slot until released.
 */
bool xp_ctrlq__push(struct xp_ctrlq *q, const struct kemari_wire_hdr *h,
		    const uint8_t *payload, uint32_t slot);
/* The oldest frame into *m, held until the next release; false if none. */
bool xp_ctrlq__peek(struct xp_ctrlq *q, struct kemari_msg *m);
/*
 * The held frame is done with: the receive slot it kept (to give back to
 * the peer), or -1 when it kept none or nothing was held.
 */
int32_t xp_ctrlq__release(struct xp_ctrlq *q);
/* Frames waiting (the held one included). */
uint32_t xp_ctrlq__len(const struct xp_ctrlq *q);

#endif
