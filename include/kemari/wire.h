/* SPDX-License-Identifier: MIT */
/*
 * Replication wire protocol (see docs/protocol.md). All integers are
 * little-endian; both ends are x86-64, and the handshake refuses others.
 */
#ifndef KEMARI_WIRE_H
#define KEMARI_WIRE_H

#include <stddef.h>
#include <stdint.h>

#define KEMARI_WIRE_MAGIC 0x49524d4bU /* "KMRI" */
#define KEMARI_PROTO_VERSION 7
#define KEMARI_MSG_MAX (256u * 1024)

enum kemari_msg_type {
	KEMARI_MSG_HELLO = 1,	/* primary -> secondary: struct kemari_hello */
	KEMARI_MSG_WELCOME = 2, /* secondary -> primary: struct kemari_hello */
	KEMARI_MSG_REFUSE = 3,	/* either way: reason text, then close */
	KEMARI_MSG_RUNS = 4,	/* run list chunk of the current epoch */
	KEMARI_MSG_CPU_STATE = 5, /* vCPU state blob of the current epoch */
	KEMARI_MSG_DEV_STATE = 6, /* device state blob of the current epoch */
	KEMARI_MSG_COMMIT = 7,	  /* struct kemari_commit: epoch complete */
	KEMARI_MSG_ACK = 8, /* secondary -> primary: epoch N is complete */
	KEMARI_MSG_HEARTBEAT = 9, /* both ways while idle */
	KEMARI_MSG_BYE = 10,	  /* orderly shutdown: do not take over */
	/* Retired in protocol 7 (one-sided receivers keep two banks of
	 * receive buffers instead): "epoch N is in the replica". */
	KEMARI_MSG_APPLIED = 11,
	/* primary -> secondary: the guest or the VMM died (not an orderly
	 * stop): take over from the last committed epoch now. */
	KEMARI_MSG_FAILED = 12,
	/* primary -> secondary, testing (--verify-replica): u64 first page,
	 * then a 32-bit hash per page of guest RAM at this commit point */
	KEMARI_MSG_VERIFY = 13,
	/* both ways, before HELLO when the sides hold a key (--auth-key):
	 * struct kemari_auth; version 4 */
	KEMARI_MSG_AUTH = 14,
	KEMARI_MSG_PAGES = 16, /* tcp: run descriptors, then page bytes */
	KEMARI_MSG_XPORT = 17, /* transport-private setup (e.g. rkeys) */
	/* primary -> secondary: planned switchover (kemari-ctl switchover);
	 * the epoch just committed is the last: take over from it now, in
	 * order. Version 6. */
	KEMARI_MSG_SWITCHOVER = 18,
};

struct kemari_wire_hdr {
	uint32_t magic;
	uint16_t type;
	uint16_t flags;
	uint32_t len; /* payload bytes after the header */
	uint32_t crc; /* CRC32C of header (crc = 0) and payload */
	uint64_t epoch;
};

struct kemari_hello {
	uint32_t proto_version;
	uint32_t page_size;
	uint64_t ram_size;
	uint64_t image_hash;
	uint32_t ncpus;
	uint32_t flags; /* KEMARI_HELLO_* */
	char hv[16];
	/* The guest's TSC frequency (0: its time does not depend on it);
	 * version 3. */
	uint32_t tsc_khz;
	uint32_t pad;
	/* The shared disk's identity and the fence generation this side
	 * holds, from its fence record (all zero: no fence); version 5. */
	uint8_t disk_id[16];
	uint64_t fence_gen;
};

/*
 * The key exchange (docs/protocol.md, "Authentication"): the primary's
 * INIT carries its nonce, the secondary's CHALLENGE its nonce and proof,
 * the primary's PROOF its proof. A proof is HMAC-SHA256 under the shared
 * key of the role's label, the protocol version and both nonces.
 */
#define KEMARI_AUTH_NONCE_LEN 32
#define KEMARI_AUTH_MAC_LEN 32

enum kemari_auth_step {
	KEMARI_AUTH_INIT = 1,	   /* primary -> secondary: nonce */
	KEMARI_AUTH_CHALLENGE = 2, /* secondary -> primary: nonce, mac */
	KEMARI_AUTH_PROOF = 3,	   /* primary -> secondary: mac */
};

struct kemari_auth {
	uint32_t proto_version; /* first, as in struct kemari_hello */
	uint32_t step;		/* enum kemari_auth_step */
	uint8_t nonce[KEMARI_AUTH_NONCE_LEN];
	uint8_t mac[KEMARI_AUTH_MAC_LEN];
};

/* This side's hypervisor can run the guest's TSC at another frequency. */
#define KEMARI_HELLO_TSC_SCALING 0x1

#define KEMARI_COMMIT_INITIAL 0x1 /* the full initial sync */

struct kemari_commit {
	uint64_t nruns;	   /* runs listed in this epoch's RUNS messages */
	uint64_t npages;   /* pages in those runs */
	uint32_t runs_crc; /* CRC32C over all run descriptors, in order */
	uint32_t flags;
};

struct kemari_ack {
	uint64_t applied_next; /* every epoch below this is in the replica */
};

/* Fill and check frame headers (crc over header with crc = 0, payload). */
void kemari_wire__seal(struct kemari_wire_hdr *h, uint16_t type, uint64_t epoch,
		       const void *payload, uint32_t len);
/* 0, or -EBADMSG with a one-line reason recorded (kemari_err). */
int kemari_wire__check_hdr(const struct kemari_wire_hdr *h, uint32_t max);
int kemari_wire__check_crc(const struct kemari_wire_hdr *h,
			   const void *payload);
/*
 * A whole frame as a message transport (rdma, ofi) receives it: len bytes
 * at buf, a header and exactly the payload it announces, at most max
 * bytes, checksum right. 0 with the header copied to *h (buf need not be
 * aligned), or -EBADMSG with the reason recorded.
 */
int kemari_wire__check_frame(const void *buf, size_t len, uint32_t max,
			     struct kemari_wire_hdr *h);
const char *kemari_wire__type_name(uint16_t type);

#endif
