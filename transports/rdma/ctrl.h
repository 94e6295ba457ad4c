/* SPDX-License-Identifier: MIT */
/*
 * The rdma transport's control data, free of verbs so that its checks are
 * fuzzed without a device (tests/fuzz/libfuzzer/fuzz_xport_ctrl.c): the
 * CM private data both sides exchange when connecting, and the
 * KEMARI_MSG_XPORT messages that tell the peer where it may write.
 */
#ifndef KEMARI_RDMA_CTRL_H
#define KEMARI_RDMA_CTRL_H

#include <stddef.h>
#include <stdint.h>

#define RDMA_HS_MAGIC 0x524d4b52U /* "RKMR" */
#define RDMA_HS_VERSION 2
#define RDMA_XPORT_DST 1 /* KEMARI_MSG_XPORT kind: receive buffers */
#define RDMA_XPORT_RW 2	 /* ... kind: commit slots and credit word */

enum rdma_refuse {
	RDMA_REFUSE_NONE,
	RDMA_REFUSE_HANDSHAKE, /* not a Kemari peer, or another version */
	RDMA_REFUSE_RESOURCES, /* could not set the connection up */
};

/*
 * CM private data, both ways (fits the 56 bytes of a REQ). No address or
 * key: the peer is not yet authenticated (struct rdma_rw_info).
 */
struct rdma_hs {
	uint32_t magic;
	uint16_t version;
	uint16_t slots;	      /* receives posted: the peer's initial credits */
	uint32_t max_msg;     /* payload bytes a receive slot takes */
	uint32_t commit_size; /* bytes per commit slot */
	uint32_t refuse;      /* in a rejection: enum rdma_refuse */
};

/* KEMARI_MSG_XPORT payload from reg_src/reg_dst: our remote-writable area. */
struct rdma_rw_info {
	uint32_t kind; /* RDMA_XPORT_RW */
	uint32_t rkey;
	uint64_t addr; /* commit slots, then the credit word */
};

/* KEMARI_MSG_XPORT payload: where pushes land. */
/* The most receive buffers a peer may advertise: 256 TiB (beyond any
 * guest's RAM; keeps n * piece far from overflowing). */
#define RDMA_DST_LEN_MAX (1ULL << 48)

struct rdma_dst_info {
	uint32_t kind;
	uint32_t n;	/* memory regions */
	uint64_t len;	/* bytes registered */
	uint64_t piece; /* bytes per region (the last may be shorter) */
};

struct rdma_remote {
	uint64_t addr;
	uint32_t rkey;
	uint32_t pad;
};

/*
 * The peer's half of the handshake, len bytes at pd (NULL: none): 0 with
 * *hs filled when it is one of ours (this version, not a rejection, sane
 * queue sizes), else -EPROTO.
 */
int rdma_ctrl__hs(const void *pd, size_t len, struct rdma_hs *hs);

/* A KEMARI_MSG_XPORT payload, checked. */
struct rdma_ctrl_xport {
	uint32_t kind;		 /* RDMA_XPORT_RW or RDMA_XPORT_DST */
	struct rdma_rw_info rw;	 /* RW */
	struct rdma_dst_info di; /* DST */
	const void *mr;		 /* DST: di.n struct rdma_remote, in p */
};

/*
 * Check the len-byte payload at p: an RW message of its exact size, or a
 * DST message whose regions, whole pages each, cover its length (at most
 * RDMA_DST_LEN_MAX) and are all listed. 0 with *m filled, or -EBADMSG.
 */
int rdma_ctrl__xport(const void *p, uint32_t len, struct rdma_ctrl_xport *m);

#endif
