// SPDX-License-Identifier: MIT
/*
 * The key exchange (core/auth.c) on both sides: the AUTH messages (their
 * size, version and step), a REFUSE's peer-supplied reason, and anything
 * else in their place. Input: one byte (bit 0: play the primary, else the
 * secondary), then harness.h's records as the peer's messages. The
 * nonces are random, so a forged proof is not expected to pass; what is
 * fuzzed is everything a peer without the key can send.
 *
 * Beyond the sanitizers: a peer without the key is never accepted.
 */
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "kemari/auth.h"
#include "kemari/buf.h"
#include "kemari/kemari.h"
#include "kemari/wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct kemari_auth_key key;
	struct fuzz_xport f;
	int err;

	if (size < 1)
		return 0;
	if (!key.path[0]) {
		memset(key.bytes, 0x4b, sizeof(key.bytes));
		strcpy(key.path, "fuzz.key");
		fuzz__quiet();
	}
	fuzz_xport__init(&f, data + 1, size - 1, 0);
	if (data[0] & 1)
		err = kemari_auth__primary(&f.x, &key, 1000);
	else
		err = kemari_auth__secondary(&f.x, &key, NULL, 1000);
	if (!err)
		abort(); /* accepted a peer that cannot know the nonce */
	/* The one line a refusal logs: must be a string. */
	if (strlen(kemari_last_error(err)) == 0)
		abort();
	fuzz_xport__fini(&f);
	kemari_err_clear();
	return 0;
}

static void seed_auth(const char *name, uint8_t role, const uint32_t *steps,
		      unsigned int n)
{
	struct kemari_buf b = { 0 };

	kemari_buf__append(&b, &role, 1);
	for (unsigned int i = 0; i < n; i++) {
		struct kemari_auth a = { .proto_version = KEMARI_PROTO_VERSION,
					 .step = steps[i] };

		memset(a.nonce, 0x11 * (int)(i + 1), sizeof(a.nonce));
		memset(a.mac, 0x22, sizeof(a.mac));
		fuzz__rec(&b, KEMARI_MSG_AUTH, 0, &a, sizeof(a));
	}
	fuzz__seed(name, b.data, b.len);
	kemari_buf__fini(&b);
}

void fuzz_seeds(void)
{
	static const uint32_t sec[] = { KEMARI_AUTH_INIT, KEMARI_AUTH_PROOF };
	static const uint32_t pri[] = { KEMARI_AUTH_CHALLENGE };
	static const char why[] = "authentication failed: another key";
	struct kemari_buf b = { 0 };
	uint8_t role = 1;

	seed_auth("secondary", 0, sec, 2);
	seed_auth("primary", 1, pri, 1);
	kemari_buf__append(&b, &role, 1);
	fuzz__rec(&b, KEMARI_MSG_REFUSE, 0, why, sizeof(why) - 1);
	fuzz__seed("primary-refused", b.data, b.len);
	kemari_buf__fini(&b);
}
