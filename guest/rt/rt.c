// SPDX-License-Identifier: MIT
/* Rings, boot info lookups, console and exit for the freestanding guests. */
#include "rt.h"

struct kemari_bootinfo *rt__bootinfo;

int rt__queue_init(struct rt_queue *q, const struct kemari_bootinfo_dev *dev,
		   uint32_t index)
{
	struct kemari_ring *ring;

	if (!dev || index >= dev->nqueues)
		return -ENODEV;
	ring = (struct kemari_ring *)(uintptr_t)(dev->ring_gpa +
						 index * KEMARI_RING_STRIDE);
	/* Slot arithmetic below uses the fixed array size of the ABI. */
	if (ring->nslots != KEMARI_RING_SLOTS)
		return -ENODEV;
	q->ring = ring;
	q->kick_port = (uint16_t)dev->kick_port;
	q->index = index;
	return 0;
}

int rt__queue_post(struct rt_queue *q, const struct kemari_req *req)
{
	struct kemari_ring *ring = q->ring;
	uint32_t prod = ring->req_prod;

	/* A request's slot pairs with its response's; both must be free. */
	if (prod - ring->rsp_cons >= KEMARI_RING_SLOTS)
		return -EBUSY;
	ring->req[prod & (KEMARI_RING_SLOTS - 1)] = *req;
	/* The slot must be complete before the backend can see the index. */
	rt__barrier();
	ring->req_prod = prod + 1;
	return 0;
}

void rt__queue_kick(struct rt_queue *q)
{
	rt__barrier();
	outl(q->kick_port, q->index);
}

bool rt__queue_poll(struct rt_queue *q, struct kemari_rsp *rsp)
{
	struct kemari_ring *ring = q->ring;
	uint32_t cons = ring->rsp_cons;

	if (ring->rsp_prod == cons)
		return false;
	/* Read the slot only after seeing the index that covers it. */
	rt__barrier();
	*rsp = ring->rsp[cons & (KEMARI_RING_SLOTS - 1)];
	/* ...and hand the slot back only once it has been copied out. */
	rt__barrier();
	ring->rsp_cons = cons + 1;
	return true;
}

void rt__queue_wait(struct rt_queue *q, struct kemari_rsp *rsp)
{
	/* After a kick the VMM has usually answered already; HLT otherwise. */
	while (!rt__queue_poll(q, rsp))
		rt__hlt();
}

const struct kemari_bootinfo_dev *rt__find_dev(const struct kemari_bootinfo *bi,
					       uint32_t type)
{
	uint32_t i, n = RT_MIN(bi->ndevs, (uint32_t)KEMARI_MAX_DEVS);

	for (i = 0; i < n; i++) {
		if (bi->dev[i].type == type)
			return &bi->dev[i];
	}
	return NULL;
}

/* Boot info strings are fixed-size fields the VMM may fill to the end, so
 * never run past cap looking for the NUL. */
static bool rt__field_eq(const char *field, size_t cap, const char *s)
{
	size_t i;

	for (i = 0; i < cap; i++) {
		if (field[i] != s[i])
			return false;
		if (!s[i])
			return true;
	}
	return false;
}

static bool rt__terminated(const char *field, size_t cap)
{
	size_t i;

	for (i = 0; i < cap; i++) {
		if (!field[i])
			return true;
	}
	return false;
}

const char *rt__arg(const struct kemari_bootinfo *bi, const char *key)
{
	uint32_t i, n = RT_MIN(bi->nargs, (uint32_t)KEMARI_MAX_ARGS);

	for (i = 0; i < n; i++) {
		const struct kemari_bootinfo_arg *a = &bi->arg[i];

		if (!rt__field_eq(a->key, sizeof(a->key), key))
			continue;
		/* Only hand out values that are terminated inside the field. */
		return rt__terminated(a->val, sizeof(a->val)) ? a->val : NULL;
	}
	return NULL;
}

static struct rt_queue rt__console_q;
static int rt__console_state; /* 0 = not looked up, 1 = ready, -1 = none */

static bool rt__console_ready(void)
{
	if (!rt__console_state) {
		const struct kemari_bootinfo_dev *dev = NULL;

		if (rt__bootinfo)
			dev = rt__find_dev(rt__bootinfo, KEMARI_DEV_CONSOLE);
		rt__console_state =
			rt__queue_init(&rt__console_q, dev, 0) ? -1 : 1;
	}
	return rt__console_state > 0;
}

void rt__write(const char *s, size_t len)
{
	struct kemari_req req = { 0 };
	struct kemari_rsp rsp;

	if (!len || !rt__console_ready())
		return;
	req.gpa = (uintptr_t)s;
	req.len = (uint32_t)len;
	if (rt__queue_post(&rt__console_q, &req))
		return;
	rt__queue_kick(&rt__console_q);
	/* Synchronous, so callers may pass stack buffers. */
	rt__queue_wait(&rt__console_q, &rsp);
}

int rt__printf(const char *fmt, ...)
{
	char buf[256];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = rt__vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	rt__write(buf, (size_t)n);
	return n;
}

_Noreturn void rt__exit(int status)
{
	outl(KEMARI_PORT_SHUTDOWN, (uint32_t)status);
	/* The VMM should not resume us; if it does, stay parked. */
	for (;;)
		rt__hlt();
}

_Noreturn void guest_panic(const char *fmt, ...)
{
	char buf[256];
	va_list ap;
	int n;

	n = rt__snprintf(buf, sizeof(buf), "panic: ");
	va_start(ap, fmt);
	/* Keep one byte for the newline. */
	n += rt__vsnprintf(buf + n, sizeof(buf) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	buf[n++] = '\n';
	rt__write(buf, (size_t)n);
	rt__exit(1);
}
