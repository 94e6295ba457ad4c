/* SPDX-License-Identifier: MIT */
/*
 * The libfabric transport's control data, free of libfabric so that its
 * checks are fuzzed without a provider (tests/fuzz/libfuzzer/
 * fuzz_xport_ctrl.c): the connection data both sides exchange, and the
 * transport-private KEMARI_MSG_XPORT messages (the receive region, credits).
 */
#ifndef KEMARI_OFI_CTRL_H
#define KEMARI_OFI_CTRL_H

#include <stddef.h>
#include <stdint.h>

#define OFI_CM_MAGIC 0x4b4d4f46U /* "FOMK" */
#define OFI_WINDOW_MAX 4096	 /* more credits from a peer is nonsense */

/* Transport-private messages (KEMARI_MSG_XPORT payload). */
enum { OFI_XP_REGION = 1, OFI_XP_CREDIT = 2 };

struct ofi_xp {
	uint32_t op;
	uint32_t credits; /* OFI_XP_CREDIT */
	uint64_t base;	  /* OFI_XP_REGION: address of offset 0 */
	uint64_t key;
	uint64_t len;
};

/* Connection data: tells the peer how many messages it may send. */
struct ofi_cm {
	uint32_t magic;
	uint32_t window;
};

/*
 * The peer's connection data, len bytes at data: 0 with *cm filled when it
 * is Kemari's (magic, a window of 1 to OFI_WINDOW_MAX), else -EPROTO.
 */
int ofi_ctrl__cm(const void *data, size_t len, struct ofi_cm *cm);

/*
 * A KEMARI_MSG_XPORT payload of len bytes at p: 0 with *xp filled when it
 * is one whole message of a known kind (a credit return of at least one),
 * else -EBADMSG. Whether the credits fit the window is the caller's.
 */
int ofi_ctrl__xp(const void *p, uint32_t len, struct ofi_xp *xp);

#endif
