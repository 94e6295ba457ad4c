/* SPDX-License-Identifier: MIT */
/*
 * Hypervisor ops table: what the engine needs from a hypervisor backend.
 *
 * Implemented by hv/kvm (the built-in VMM) and hv/synth (the synthetic
 * guest). The engine in core/ only ever calls these, through the inline
 * wrappers at the end of this file; it never names a hypervisor.
 *
 * Threads: the ops are called from one engine thread at a time, or from
 * inside a hook (below), never from two threads at once, except stop(),
 * which any thread or a signal handler may call. The hooks never run
 * concurrently with each other: a backend with several vCPU threads calls
 * them one at a time (kvm: under its VM lock), so the engine needs no lock
 * of its own around what the hooks share. A hook may call pause/resume,
 * collect_dirty, save_*, load_*, crash and flush of the same VM.
 *
 * Every op is present in every backend: one a backend lacks points to the
 * stub of its signature below, never NULL (tests/unit, the hv_ops suite).
 */
#ifndef KEMARI_HV_H
#define KEMARI_HV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kemari/dirty.h"

struct kemari_buf;
struct kemari_hv_ops;

/* Generic handle; backends embed it and recover themselves with container_of. */
struct kemari_hv {
	const struct kemari_hv_ops *ops;
};

enum kemari_event_kind {
	KEMARI_EV_BLOCK = 1,
	KEMARI_EV_NET_TX = 2,
	KEMARI_EV_CONSOLE = 3,
};

/*
 * A guest->device event, caught at the kick before the backend sees it.
 * The engine must call kemari_event__release() exactly once, when the
 * event's output may leave (after the checkpoint that covers it is
 * acknowledged, or at once when nothing is replicated). release() must
 * perform the output (the disk write, the packet's send) before it
 * returns, not hand it to another thread: the engine holds the fence
 * lock across the call (core/fence.c), so that no write of a side that
 * lost the fence lands after the winner's.
 */
struct kemari_event {
	enum kemari_event_kind kind;
	unsigned int dev;   /* device index */
	unsigned int queue; /* queue index within the device */
	int (*release)(struct kemari_event *ev);
};

static inline int kemari_event__release(struct kemari_event *ev)
{
	return ev->release(ev);
}

/* Callbacks from the hypervisor's run loop into the engine. */
struct kemari_hv_hooks {
	void *ctx;
	/*
	 * Every tapped kick, called on a vCPU thread with that vCPU stopped at
	 * the kick. Returns 0 or a negative errno (which stops the VM).
	 */
	int (*event)(void *ctx, struct kemari_event *ev);
	/*
	 * Periodic work (heartbeats), called from the run loop at least every
	 * tick_ms while the VM runs or idles. A negative return stops the VM.
	 */
	int (*tick)(void *ctx);
	unsigned int tick_ms;
};

#define KEMARI_MAX_GUEST_ARGS 16

struct kemari_hv_cfg {
	uint64_t mem_size;
	unsigned int ncpus;
	const char *disk_path; /* NULL: no block device */
	uint64_t disk_size;    /* size to create a missing disk with */
	const char *net;       /* "udp:HOST:PORT" or NULL */
	const char *guest_args[KEMARI_MAX_GUEST_ARGS]; /* "KEY=VALUE" */
	unsigned int nguest_args;
	int tap_console; /* route console kicks through the event hook */
	/* How dirty pages are found: the dirty ring (cost follows the dirty
	 * set) or the dirty bitmap (cost follows RAM); auto prefers the ring. */
	enum {
		KEMARI_DIRTY_AUTO,
		KEMARI_DIRTY_BITMAP,
		KEMARI_DIRTY_RING
	} dirty_track;
	int defer_net; /* do not bind the service address until attach */
	/* The secondary: do not open the disk at create, only at open_disk
	 * (after the handshake), and never create it (the primary does,
	 * with its fence record). */
	int defer_disk;
	const char *console_prefix;
	/*
	 * A Linux guest on a PC platform (in-kernel irqchip and PIT, UART,
	 * RTC, PCI with virtio devices) instead of a freestanding image:
	 * kernel is a bzImage, initrd and cmdline optional. The platform is
	 * chosen at create (both sides), the kernel loaded by load_guest.
	 */
	const char *kernel;
	const char *initrd;
	const char *cmdline;
	const char *console_log; /* the guest's serial console, else stdout */
	struct kemari_hv_hooks hooks;
};

struct kemari_hv_ops {
	const char *name;
	/* Create a VM with RAM and devices, not yet running. */
	int (*create)(struct kemari_hv **out, const struct kemari_hv_cfg *cfg);
	void (*destroy)(struct kemari_hv *hv);
	/* Load a guest image and set the boot vCPU state (fresh boot). */
	int (*load_guest)(struct kemari_hv *hv, const char *path);
	/* Guest RAM as one host mapping, stable for the VM's lifetime. */
	int (*map_ram)(struct kemari_hv *hv, void **base, uint64_t *size);
	/*
	 * Run the vCPUs until the guest shuts down (returns its exit status,
	 * >= 0) or stop is requested or a hook fails (negative errno).
	 */
	int (*run)(struct kemari_hv *hv);
	/* Ask run() to return; async-signal-safe. */
	void (*stop)(struct kemari_hv *hv);
	/* Stop all vCPUs with every pending exit completed, or let them go. */
	int (*pause)(struct kemari_hv *hv);
	int (*resume)(struct kemari_hv *hv);
	/* Start dirty tracking (everything written from now on is reported). */
	int (*dirty_start)(struct kemari_hv *hv);
	/* Add pages dirtied since the last call to d, and clear them (paused). */
	int (*collect_dirty)(struct kemari_hv *hv, struct kemari_dirty *d);
	/* vCPU state of all vCPUs as an opaque blob, and back (paused). */
	int (*save_cpu)(struct kemari_hv *hv, struct kemari_buf *out);
	int (*load_cpu)(struct kemari_hv *hv, const void *blob, size_t len);
	/* Device (backend) state as an opaque blob, and back (paused). */
	int (*save_dev)(struct kemari_hv *hv, struct kemari_buf *out);
	int (*load_dev)(struct kemari_hv *hv, const void *blob, size_t len);
	/*
	 * After load_*: connect the backends to the rings already in guest
	 * memory, take the ring indices as they are, bind deferred service
	 * addresses, and re-issue requests that were in flight.
	 */
	int (*reattach)(struct kemari_hv *hv);
	/*
	 * The secondary's disk (defer_disk): open cfg.disk_path read-write,
	 * never creating it, once the handshake has authenticated a primary
	 * and checked the disk's identity, before any state is loaded; again
	 * (reopened) for each later primary. 0, or a negative errno with
	 * the one line (-ENOENT: the disk is missing). Without a deferred
	 * disk: kemari_hv__no_open_disk.
	 */
	int (*open_disk)(struct kemari_hv *hv);
	/*
	 * Let go of what the guest serves the world through (a service
	 * address the next host must bind), the VM stopped: a planned
	 * switchover's old primary, which may become the secondary and so
	 * run this guest again after a reattach (that binds them again).
	 * run() may then be called again; it starts from a cleared stop.
	 */
	int (*detach)(struct kemari_hv *hv);
	/* Flush device backends to stable storage (fdatasync of the disk). */
	int (*flush)(struct kemari_hv *hv);
	/* Read a guest workload counter (boot info stats[i]). */
	int (*guest_stat)(struct kemari_hv *hv, unsigned int i, uint64_t *val);
	/*
	 * Testing (--fault=guest-crash): make the guest die the way a hardware
	 * or hypervisor fault kills it, not by anything it executes: from the
	 * next resume on, run() ends with a negative errno (KVM: the vCPU
	 * triple-faults). Called paused; the state already saved is unharmed.
	 */
	int (*crash)(struct kemari_hv *hv);
	/*
	 * The frequency of the guest's timestamp counter in kHz, and whether
	 * this host can run a guest's at another (TSC scaling): a guest moved
	 * to a host whose TSC runs at another rate keeps counting at the new
	 * one, and its clock drifts. *khz = 0: the guest's time does not
	 * depend on it (kemari_hv__no_tsc_khz).
	 */
	int (*tsc_khz)(struct kemari_hv *hv, uint32_t *khz, bool *can_scale);
};

/* Registered hypervisor backends; NULL-terminated. */
extern const struct kemari_hv_ops *const kemari_hv_backends[];
const struct kemari_hv_ops *kemari_hv_find(const char *name);

/*
 * Stubs for the ops a backend may lack (core/hv.c), each of the op's own
 * signature: open_disk (no deferred disk: 0), detach (-ENOTSUP with one
 * line: no planned switchover), crash (-ENOTSUP: no --fault=guest-crash),
 * tsc_khz (0 kHz: the guest's time does not follow a TSC), guest_stat
 * (-ENOENT: no counters).
 */
int kemari_hv__no_open_disk(struct kemari_hv *hv);
int kemari_hv__no_detach(struct kemari_hv *hv);
int kemari_hv__no_crash(struct kemari_hv *hv);
int kemari_hv__no_tsc_khz(struct kemari_hv *hv, uint32_t *khz,
			  bool *can_scale);
int kemari_hv__no_guest_stat(struct kemari_hv *hv, unsigned int i,
			     uint64_t *val);

/*
 * The engine's calls, one wrapper per op, each with what the caller may
 * rely on. All return 0 (or a status) or a negative errno; the backend has
 * already logged the one line for an error it returns.
 */

/* Run the guest until it ends (its status >= 0), stop() is called, or a
 * hook fails (its negative errno). Blocks for the guest's life. */
static inline int kemari_hv__run(struct kemari_hv *hv)
{
	return hv->ops->run(hv);
}

/* Ask run() to return soon; async-signal-safe, from any thread. */
static inline void kemari_hv__stop(struct kemari_hv *hv)
{
	hv->ops->stop(hv);
}

/* Stop every vCPU with its pending exit completed; blocks until they are
 * (a vCPU thread stuck in the host delays it). Pair with resume. */
static inline int kemari_hv__pause(struct kemari_hv *hv)
{
	return hv->ops->pause(hv);
}

static inline int kemari_hv__resume(struct kemari_hv *hv)
{
	return hv->ops->resume(hv);
}

/* Guest RAM as one mapping, stable until destroy. */
static inline int kemari_hv__map_ram(struct kemari_hv *hv, void **base,
				     uint64_t *size)
{
	return hv->ops->map_ram(hv, base, size);
}

/* Load the guest image (fresh boot); path NULL for a --kernel guest. */
static inline int kemari_hv__load_guest(struct kemari_hv *hv, const char *path)
{
	return hv->ops->load_guest(hv, path);
}

/* Arm dirty tracking: every page written from now on is reported. */
static inline int kemari_hv__dirty_start(struct kemari_hv *hv)
{
	return hv->ops->dirty_start(hv);
}

/* Add what was dirtied since the last call to d and clear it; paused, or
 * (pre-copy rounds) running: then a page written meanwhile is reported
 * by the next call. */
static inline int kemari_hv__collect_dirty(struct kemari_hv *hv,
					   struct kemari_dirty *d)
{
	return hv->ops->collect_dirty(hv, d);
}

/* The vCPU / device state as opaque blobs appended to out, and back;
 * paused. A blob load_* refuses leaves the VM as it was. */
static inline int kemari_hv__save_cpu(struct kemari_hv *hv,
				      struct kemari_buf *out)
{
	return hv->ops->save_cpu(hv, out);
}

static inline int kemari_hv__load_cpu(struct kemari_hv *hv, const void *blob,
				      size_t len)
{
	return hv->ops->load_cpu(hv, blob, len);
}

static inline int kemari_hv__save_dev(struct kemari_hv *hv,
				      struct kemari_buf *out)
{
	return hv->ops->save_dev(hv, out);
}

static inline int kemari_hv__load_dev(struct kemari_hv *hv, const void *blob,
				      size_t len)
{
	return hv->ops->load_dev(hv, blob, len);
}

/* After load_*: backends re-attach to the rings in guest RAM, bind the
 * service addresses, re-issue requests in flight. */
static inline int kemari_hv__reattach(struct kemari_hv *hv)
{
	return hv->ops->reattach(hv);
}

/* The secondary's deferred disk, after an authenticated handshake. */
static inline int kemari_hv__open_disk(struct kemari_hv *hv)
{
	return hv->ops->open_disk(hv);
}

/* Let go of the service addresses (planned switchover), the VM stopped. */
static inline int kemari_hv__detach(struct kemari_hv *hv)
{
	return hv->ops->detach(hv);
}

/* fdatasync the disk: blocks for the storage's flush. */
static inline int kemari_hv__flush(struct kemari_hv *hv)
{
	return hv->ops->flush(hv);
}

static inline int kemari_hv__guest_stat(struct kemari_hv *hv, unsigned int i,
					uint64_t *val)
{
	return hv->ops->guest_stat(hv, i, val);
}

/* Testing: the guest dies at the next resume (paused). */
static inline int kemari_hv__crash(struct kemari_hv *hv)
{
	return hv->ops->crash(hv);
}

/* The guest's TSC rate (0: its time does not follow one). */
static inline int kemari_hv__tsc_khz(struct kemari_hv *hv, uint32_t *khz,
				     bool *can_scale)
{
	return hv->ops->tsc_khz(hv, khz, can_scale);
}

static inline void kemari_hv__destroy(struct kemari_hv *hv)
{
	hv->ops->destroy(hv);
}

#endif
