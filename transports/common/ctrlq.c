// SPDX-License-Identifier: MIT
/* Queue of arrived control frames with its held slot (see ctrlq.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "ctrlq.h"

int xp_ctrlq__init(struct xp_ctrlq *q, uint32_t slots, uint32_t backlog,
		   uint32_t copy_max)
{
	memset(q, 0, sizeof(*q));
	q->cap = slots + (copy_max ? backlog : 0);
	q->slots = slots;
	q->copy_max = copy_max;
	q->e = calloc(q->cap, sizeof(*q->e));
	if (copy_max)
		q->copies = calloc(q->cap, copy_max);
	if (!q->e || (copy_max && !q->copies)) {
		xp_ctrlq__fini(q);
		return -ENOMEM;
	}
	return 0;
}

void xp_ctrlq__fini(struct xp_ctrlq *q)
{
	free(q->e);
	free(q->copies);
	memset(q, 0, sizeof(*q));
}

uint32_t xp_ctrlq__len(const struct xp_ctrlq *q)
{
	return q->tail - q->head;
}

/*
 * Copies only while there is room beyond the entries reserved for the
 * slots, so the queue never holds more than cap: at most `slots` entries
 * keep a slot, since the peer has no more.
 */
bool xp_ctrlq__push(struct xp_ctrlq *q, const struct kemari_wire_hdr *h,
		    const uint8_t *payload, uint32_t slot)
{
	uint32_t i = q->tail % q->cap;
	struct xp_ctrl_entry *e = &q->e[i];
	bool copy =
		h->len <= q->copy_max && xp_ctrlq__len(q) < q->cap - q->slots;

	e->h = *h;
	if (copy) {
		uint8_t *c = q->copies + (size_t)i * q->copy_max;

		if (h->len)
			memcpy(c, payload, h->len);
		e->payload = c;
		e->slot = -1;
	} else {
		e->payload = payload;
		e->slot = (int32_t)slot;
	}
	q->tail++;
	return copy;
}

bool xp_ctrlq__peek(struct xp_ctrlq *q, struct kemari_msg *m)
{
	struct xp_ctrl_entry *e;

	if (q->head == q->tail)
		return false;
	e = &q->e[q->head % q->cap];
	q->held = true;
	m->type = e->h.type;
	m->epoch = e->h.epoch;
	m->len = e->h.len;
	m->payload = e->payload;
	return true;
}

int32_t xp_ctrlq__release(struct xp_ctrlq *q)
{
	int32_t slot;

	if (!q->held)
		return -1;
	slot = q->e[q->head % q->cap].slot;
	q->head++;
	q->held = false;
	return slot;
}
