/* SPDX-License-Identifier: MIT */
/*
 * The libfabric transport's control data, free of libfabric so that its
 * checks are fuzzed without a provider (tests/fuzz/libfuzzer/
 * fuzz_xport_ctrl.c): the connection data both sides exchange (FI_EP_MSG:
 * struct ofi_cm; FI_EP_RDM: struct ofi_hello over the bootstrap socket),
 * and the transport-private KEMARI_MSG_XPORT messages (the receive region,
 * credits).
 */
#ifndef KEMARI_OFI_CTRL_H
#define KEMARI_OFI_CTRL_H

#include <stddef.h>
#include <stdint.h>

#define OFI_CM_MAGIC 0x4b4d4f46U /* "FOMK" */
#define OFI_WINDOW_MAX 4096	 /* more credits from a peer is nonsense */

/*
 * Transport-private messages (KEMARI_MSG_XPORT payload). LINK (FI_EP_RDM
 * only) is the first message over the fabric, sent by each side during
 * connect/accept: some providers (shm) take sends to a new peer only once
 * that peer has progressed, so both sides wait for the other's.
 */
enum { OFI_XP_REGION = 1, OFI_XP_CREDIT = 2, OFI_XP_LINK = 3 };

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
 * FI_EP_RDM endpoints have no connection: each side sends this over the
 * bootstrap TCP socket (ofi_rdm.c), OFI_HELLO_HDR fixed bytes then addrlen
 * bytes of the endpoint's name (fi_getname), which the other side inserts
 * into its address vector. Its magic is not OFI_CM_MAGIC, so an FI_EP_MSG
 * peer (or anything else) is told apart at the first four bytes.
 */
#define OFI_HELLO_MAGIC 0x524d4f46U /* "FOMR" */
#define OFI_HELLO_VERSION 1
#define OFI_HELLO_ADDR_MAX 256 /* endpoint names (efa: 32, shm: ~40) */
#define OFI_HELLO_PROV_MAX 32

struct ofi_hello {
	uint32_t magic;
	uint16_t version;
	uint16_t addrlen; /* bytes of addr that follow, 1..OFI_HELLO_ADDR_MAX */
	uint32_t window;
	char prov[OFI_HELLO_PROV_MAX]; /* the sender's provider, NUL-ended */
	uint8_t addr[OFI_HELLO_ADDR_MAX];
};

#define OFI_HELLO_HDR offsetof(struct ofi_hello, addr)

/*
 * The peer's connection data, len bytes at data: 0 with *cm filled when it
 * is Kemari's (magic, a window of 1 to OFI_WINDOW_MAX), else -EPROTO.
 */
int ofi_ctrl__cm(const void *data, size_t len, struct ofi_cm *cm);

/*
 * A peer's hello, len bytes at data: 0 with *h filled when it is a whole
 * Kemari RDM hello (magic, version, a window of 1 to OFI_WINDOW_MAX, a
 * NUL-terminated provider name, an address of 1 to OFI_HELLO_ADDR_MAX
 * bytes, exactly len bytes in all), else -EPROTO. Whether the provider is
 * ours is the caller's.
 */
int ofi_ctrl__hello(const void *data, size_t len, struct ofi_hello *h);
/* Bytes of a hello with an addrlen-byte address. */
size_t ofi_ctrl__hello_len(uint16_t addrlen);

/*
 * A KEMARI_MSG_XPORT payload of len bytes at p: 0 with *xp filled when it
 * is one whole message of a known kind (a credit return of at least one),
 * else -EBADMSG. Whether the credits fit the window is the caller's.
 */
int ofi_ctrl__xp(const void *p, uint32_t len, struct ofi_xp *xp);

#endif
