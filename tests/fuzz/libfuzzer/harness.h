/* SPDX-License-Identifier: MIT */
/*
 * What the libFuzzer harnesses share, and the seed generator (gen_seeds.c)
 * agrees on: the replica they set up, so that seeds are valid inputs.
 */
#ifndef KEMARI_FUZZ_HARNESS_H
#define KEMARI_FUZZ_HARNESS_H

#include <stddef.h>
#include <stdint.h>

#include "kemari/xport.h"

#define FUZZ_RAM_PAGES 16u
#define FUZZ_IMAGE_HASH 0x6b656d6172692121ULL
#define FUZZ_NCPUS 1u
#define FUZZ_HV_NAME "fuzz"

/* fuzz_secondary's first input byte. */
#define FUZZ_SEC_KEY 0x1      /* the secondary holds a key */
#define FUZZ_SEC_ONESIDED 0x2 /* over a one-sided transport */

/*
 * A transport whose peer is a fuzzer input, for the harnesses that drive
 * the engine's and the key exchange's message handling (fuzz_secondary.c,
 * fuzz_auth.c). The input is a sequence of records
 *
 *	u8 type, u8 epoch, u16 len (little-endian), len payload bytes
 *
 * each one control message as recv() returns it; a PAGES record's payload
 * is a u32 byte offset and the bytes that land there in the registered
 * receive buffers (clamped to them), as a transport's push would. The end
 * of the input is the peer closing the connection (-ECONNRESET). Every
 * payload sits in its own allocation of exactly its length, so reading
 * past it is caught. Sends succeed and are counted.
 */
struct fuzz_xport {
	struct kemari_xport x;
	const uint8_t *in;
	size_t left;
	uint8_t *payload; /* the last message's, freed at the next recv */
	uint8_t *dst;
	uint64_t dst_len;
	unsigned int sent;
};

/* A connection over in[0..len); caps as a transport would have them. */
void fuzz_xport__init(struct fuzz_xport *f, const uint8_t *in, size_t len,
		      unsigned int caps);
void fuzz_xport__fini(struct fuzz_xport *f);

/* Log nothing below an error (FUZZ_VERBOSE=1: everything). */
void fuzz__quiet(void);

/*
 * Seeds: each harness defines fuzz_seeds(), which writes a few valid
 * inputs with fuzz__seed(); LLVMFuzzerInitialize (harness.c) calls it and
 * exits when FUZZ_WRITE_SEEDS names a directory (make fuzz-seeds).
 */
struct kemari_buf;
void fuzz_seeds(void);
void fuzz__seed(const char *name, const void *p, size_t len);
/* Append one fuzz_xport record to b. */
void fuzz__rec(struct kemari_buf *b, uint8_t type, uint8_t epoch, const void *p,
	       uint16_t len);

#endif
