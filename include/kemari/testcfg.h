/* SPDX-License-Identifier: MIT */
/*
 * The test knobs of the engine, the VMM and the transports, in one place:
 * read from the environment once per process, the first time one is asked
 * for (at a handshake, a device open or a connection's setup), never on a
 * data path. Each makes a side behave as a host, device or provider the
 * tests cannot have here would.
 *
 * KEMARI_TEST_PROTO_VERSION=N  engine: announce protocol version N in the
 *     handshake (the version refusal tests).
 * KEMARI_TEST_TSC_KHZ=N  engine: announce a guest TSC of N kHz (the TSC
 *     refusal tests pose as a host at another frequency).
 * KEMARI_KVM_DEV=PATH  kvm: open PATH instead of /dev/kvm (the tests of
 *     its error lines).
 * KEMARI_KVM_LA57  kvm: offer the guest 5-level paging where KVM supports
 *     it, as before it was hidden (the A/B of the Linux guests' crashes
 *     inside the emulated test VM, docs/testing.md).
 * KEMARI_TEST_SLOW_FLUSH=MS  kvm: each disk FLUSH takes MS ms longer before
 *     its fdatasync, as a host busy writing back makes it (CI saw over
 *     200 ms right after a build).
 *
 * KEMARI_RDMA_MR_MAX=SRC[,DST]  rdma: register guest RAM (and the receive
 *     buffers) in memory regions of at most that size, as a device with a
 *     small max_mr_size would; different sizes make writes span several
 *     local regions (SGEs) and split at remote ones.
 * KEMARI_RDMA_COMMIT=send  rdma: send the COMMIT as a plain SEND, as on a
 *     device without immediate data (iWARP).
 * KEMARI_OFI_NO_SAW  ofi: act as if the provider did not order sends after
 *     writes (FI_ORDER_SAW), which exercises FI_DELIVERY_COMPLETE writes.
 */
#ifndef KEMARI_TESTCFG_H
#define KEMARI_TESTCFG_H

#include <stdbool.h>
#include <stdint.h>

struct kemari_testcfg {
	uint64_t rdma_mr_max_src; /* 0: no limit of ours */
	uint64_t rdma_mr_max_dst;
	bool rdma_commit_send;
	bool ofi_no_saw;
	uint32_t proto_version; /* 0: the real one */
	uint32_t tsc_khz;	/* 0: the host's */
	const char *kvm_dev;	/* NULL: /dev/kvm */
	bool kvm_la57;		/* offer CPUID's LA57 */
	uint32_t slow_flush_ms; /* 0: disks flush at their own pace */
};

/* The knobs, read on the first call. */
const struct kemari_testcfg *kemari_testcfg__get(void);
/* Parse the knobs through get (getenv, or a test's table; NULL: unset). */
void kemari_testcfg__parse(struct kemari_testcfg *c,
			   const char *(*get)(const char *name));

#endif
