/* SPDX-License-Identifier: MIT */
/*
 * Guest <-> VMM ABI of the built-in KVM VMM.
 *
 * Shared by the VMM (hv/kvm) and the freestanding guest runtime (guest/), so
 * it uses nothing but fixed-width integer types. Every structure here lives in
 * guest memory; the layout is part of the replicated state (a secondary
 * re-attaches its backends to these rings after a failover), so change it only
 * together with KEMARI_ABI_VERSION.
 *
 * Guest-physical memory map:
 *   0x00001000-0x0001ffff  GDT and identity page tables (VMM-owned)
 *   0x00020000             struct kemari_bootinfo (one page)
 *   0x00030000-0x000fffff  device rings (addresses given in the boot info)
 *   0x00100000-            guest image (ELF program headers), then free RAM
 *
 * Entry: 64-bit long mode, flat segments, paging on with every byte of RAM
 * identity-mapped (2 MiB pages), interrupts off, RIP = ELF entry,
 * RDI = KEMARI_BOOTINFO_GPA. The guest sets up its own stack.
 */
#ifndef KEMARI_ABI_H
#define KEMARI_ABI_H

#include <stdint.h>

#define KEMARI_ABI_VERSION 1
#define KEMARI_BOOTINFO_GPA 0x20000ULL
#define KEMARI_BOOTINFO_MAGIC 0x4f464e4952414d4bULL /* "KMARINFO" */
#define KEMARI_RING_AREA_GPA 0x30000ULL
#define KEMARI_RING_AREA_END 0x100000ULL
#define KEMARI_IMAGE_MIN_GPA 0x100000ULL

#define KEMARI_MAX_DEVS 8
#define KEMARI_MAX_ARGS 16
#define KEMARI_ARG_KEY_MAX 32 /* including the NUL */
#define KEMARI_ARG_VAL_MAX 96 /* including the NUL */
#define KEMARI_NSTATS 8

/* Port I/O. A 32-bit OUT to a device's kick port, value = queue index, is the
 * guest's event channel: "I queued requests on this queue". */
#define KEMARI_PORT_SHUTDOWN 0x04f0  /* OUT value = guest exit status */
#define KEMARI_PORT_KICK_BASE 0x0500 /* device i kicks at BASE + i */

enum kemari_dev_type {
	KEMARI_DEV_CONSOLE = 1, /* queue 0: text out (req: gpa, len) */
	KEMARI_DEV_BLOCK = 2,	/* queue 0: read/write/flush of sectors */
	KEMARI_DEV_NET = 3,	/* queue 0: transmit, queue 1: receive */
};

/* Block request ops (kemari_req.op). */
enum kemari_blk_op {
	KEMARI_BLK_READ = 1,  /* len sectors at sector arg into gpa */
	KEMARI_BLK_WRITE = 2, /* len sectors from gpa to sector arg */
	KEMARI_BLK_FLUSH = 3, /* durable when the response arrives */
};

#define KEMARI_SECTOR_SIZE 512
#define KEMARI_NET_MTU 2048 /* largest datagram the net device carries */

/* Net addresses in kemari_req.arg / kemari_rsp.arg: IPv4 << 16 | port, both
 * in host byte order. */
#define KEMARI_NET_ADDR(ip, port) (((uint64_t)(ip) << 16) | (uint16_t)(port))
#define KEMARI_NET_IP(a) ((uint32_t)((a) >> 16))
#define KEMARI_NET_PORT(a) ((uint16_t)(a))

/*
 * One request slot, written by the guest.
 *   block: op = enum kemari_blk_op, gpa = buffer, len = sectors, arg = sector
 *   net tx: gpa = datagram, len = bytes, arg = destination KEMARI_NET_ADDR
 *   net rx: gpa = empty buffer the backend may fill, len = its size
 *   console: gpa = text, len = bytes
 */
struct kemari_req {
	uint64_t id; /* echoed in the response */
	uint64_t gpa;
	uint32_t len;
	uint32_t op;
	uint64_t arg;
};

/*
 * One response slot, written by the backend.
 *   status: 0 or a negative errno
 *   net rx: len = datagram bytes, arg = source KEMARI_NET_ADDR
 */
struct kemari_rsp {
	uint64_t id;
	int32_t status;
	uint32_t len;
	uint64_t arg;
	uint64_t reserved;
};

/*
 * A queue: producer indices free-running (wrap at 2^32), slot = index & (nslots-1).
 * The guest owns req_prod and rsp_cons; the backend owns rsp_prod and
 * req_cons. Both are in guest memory so that a backend re-attaching after a
 * failover can take them as they are: requests in [req_cons, req_prod) were
 * in flight and are re-issued.
 */
#define KEMARI_RING_SLOTS 64
struct kemari_ring {
	volatile uint32_t req_prod;
	volatile uint32_t req_cons;
	volatile uint32_t rsp_prod;
	volatile uint32_t rsp_cons;
	uint32_t nslots; /* set by the VMM: KEMARI_RING_SLOTS */
	uint32_t reserved[3];
	struct kemari_req req[KEMARI_RING_SLOTS];
	struct kemari_rsp rsp[KEMARI_RING_SLOTS];
};
#define KEMARI_RING_STRIDE 0x2000ULL /* bytes between the queues of a device */
#define KEMARI_DEV_STRIDE 0x4000ULL  /* bytes between devices' ring areas */

struct kemari_bootinfo_dev {
	uint32_t type;	    /* enum kemari_dev_type */
	uint32_t kick_port; /* KEMARI_PORT_KICK_BASE + index */
	uint64_t ring_gpa;  /* queue q at ring_gpa + q * KEMARI_RING_STRIDE */
	uint32_t nqueues;
	uint32_t reserved;
	uint64_t capacity; /* block: sectors; net: service KEMARI_NET_ADDR */
};

struct kemari_bootinfo_arg {
	char key[KEMARI_ARG_KEY_MAX];
	char val[KEMARI_ARG_VAL_MAX];
};

struct kemari_bootinfo {
	uint64_t magic;	  /* KEMARI_BOOTINFO_MAGIC */
	uint32_t version; /* KEMARI_ABI_VERSION */
	uint32_t ndevs;
	uint64_t ram_size;  /* bytes, all identity-mapped */
	uint64_t image_end; /* first byte after the loaded image, page-aligned */
	struct kemari_bootinfo_dev dev[KEMARI_MAX_DEVS];
	uint32_t nargs;
	uint32_t reserved;
	struct kemari_bootinfo_arg arg[KEMARI_MAX_ARGS]; /* --guest-arg K=V */
	/* Written by the guest, read by the host (workload counters). */
	volatile uint64_t stats[KEMARI_NSTATS];
};

/* stats[] slots */
#define KEMARI_STAT_ROUNDS 0   /* dirtier: completed rounds */
#define KEMARI_STAT_REQUESTS 0 /* kvstore: requests answered */
#define KEMARI_STAT_UPDATES 1  /* kvstore: updates applied */
#define KEMARI_STAT_REPLAYED 2 /* kvstore: WAL records replayed at boot */
#define KEMARI_STAT_READY 7    /* guest sets 1 when it serves requests */

#endif
