/* SPDX-License-Identifier: MIT */
/*
 * Freestanding guest runtime: port I/O, device rings, console, boot args.
 *
 * Single vCPU, no interrupts: the guest drives every device by posting
 * requests, kicking and then polling its response ring, parking in HLT while
 * nothing has arrived (the VMM resumes it when input may have arrived or
 * after a bounded timeout).
 */
#ifndef KEMARI_GUEST_RT_H
#define KEMARI_GUEST_RT_H

#include <kemari/abi.h>
#include <stdarg.h>

#include "lib.h"

/* Set by _start before guest_main runs. */
extern struct kemari_bootinfo *rt__bootinfo;

/* Entry point each guest image provides; its return value is the exit
 * status written to KEMARI_PORT_SHUTDOWN. */
int guest_main(struct kemari_bootinfo *bi);

static inline void outb(uint16_t port, uint8_t v)
{
	__asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port) : "memory");
}

static inline void outl(uint16_t port, uint32_t v)
{
	__asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port) : "memory");
}

static inline uint8_t inb(uint16_t port)
{
	uint8_t v;

	__asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port) : "memory");
	return v;
}

static inline uint32_t inl(uint16_t port)
{
	uint32_t v;

	__asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port) : "memory");
	return v;
}

/* Leave the CPU to the VMM until it has something for us (or times out). */
static inline void rt__hlt(void)
{
	__asm__ volatile("hlt" : : : "memory");
}

/*
 * Ordering against the VMM thread: x86 keeps stores in program order and
 * loads in program order, so all that must be prevented is the compiler
 * moving slot accesses across the index accesses.
 */
#define rt__barrier() __asm__ volatile("" : : : "memory")

/* One queue of a device, as the guest sees it. */
struct rt_queue {
	struct kemari_ring *ring;
	uint16_t kick_port;
	uint32_t index; /* queue number, the value written to kick_port */
};

/* Bind q to queue index of dev. Returns -ENODEV if the device lacks it. */
int rt__queue_init(struct rt_queue *q, const struct kemari_bootinfo_dev *dev,
		   uint32_t index);

/* Requests posted whose responses are not consumed yet. */
static inline uint32_t rt__queue_inflight(const struct rt_queue *q)
{
	return q->ring->req_prod - q->ring->rsp_cons;
}

/*
 * Copy req into the next slot and publish it by advancing req_prod. Does not
 * kick. Returns -EBUSY when every slot holds an unconsumed request/response;
 * the caller must consume responses first.
 */
int rt__queue_post(struct rt_queue *q, const struct kemari_req *req);

/* Tell the backend that requests are queued on q. */
void rt__queue_kick(struct rt_queue *q);

/* Consume the next response if there is one: returns true and fills rsp. */
bool rt__queue_poll(struct rt_queue *q, struct kemari_rsp *rsp);

/* Consume the next response, HLTing until the backend produced one. */
void rt__queue_wait(struct rt_queue *q, struct kemari_rsp *rsp);

/* The first device of a type, or NULL. */
const struct kemari_bootinfo_dev *rt__find_dev(const struct kemari_bootinfo *bi,
					       uint32_t type);

/* The value of boot argument key (--guest-arg key=value), or NULL. */
const char *rt__arg(const struct kemari_bootinfo *bi, const char *key);

/*
 * Console output. Text goes to the first console device, synchronously
 * (the buffer is reused as soon as the call returns); without a console it is
 * dropped. rt__printf understands %s %.*s %c %d %i %u %x %p %% with the l, ll
 * and z modifiers, a field width and the 0 and - flags. rt__vsnprintf and
 * rt__snprintf always terminate buf and return the length stored in it (not,
 * as C's do, the length the untruncated output would have had).
 */
void rt__write(const char *s, size_t len);
int rt__printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int rt__vsnprintf(char *buf, size_t cap, const char *fmt, va_list ap)
	__attribute__((format(printf, 3, 0)));
int rt__snprintf(char *buf, size_t cap, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Report status to the VMM through KEMARI_PORT_SHUTDOWN and stop. */
_Noreturn void rt__exit(int status);

/* Print "panic: <message>" and exit with status 1. */
/* Load the IDT whose gates report CPU exceptions and exit (traps.S). */
void rt__idt_init(void);
_Noreturn void guest_panic(const char *fmt, ...)
	__attribute__((format(printf, 1, 2)));

#endif
