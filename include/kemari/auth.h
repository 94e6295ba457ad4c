/* SPDX-License-Identifier: MIT */
/*
 * Authenticated replication (docs/protocol.md, "Authentication"): a shared
 * 32-byte key on both sides, a mutual HMAC-SHA256 challenge-response over
 * the transport's control messages before HELLO is acted on. The crypto is
 * OpenSSL's libcrypto (HMAC, RAND_bytes, CRYPTO_memcmp); nothing here is
 * hand-written crypto.
 */
#ifndef KEMARI_AUTH_H
#define KEMARI_AUTH_H

#include <stdbool.h>
#include <stdint.h>

#include "kemari/xport.h"

#define KEMARI_AUTH_KEY_LEN 32

struct kemari_auth_key {
	uint8_t bytes[KEMARI_AUTH_KEY_LEN];
	char path[256]; /* the file it came from, for messages */
};

/*
 * Read a key file: exactly KEMARI_AUTH_KEY_LEN bytes, a regular file that
 * neither group nor others may read. 0, or a negative errno with one line
 * naming the file and what to do.
 */
int kemari_auth__load_key(struct kemari_auth_key *k, const char *path);
/* Wipe a key from memory. */
void kemari_auth__forget(struct kemari_auth_key *k);
/*
 * Write a new random key to path, created with mode 0600; never replaces
 * an existing file (-EEXIST). 0, or a negative errno with one line.
 */
int kemari_auth__gen_key(const char *path);

/*
 * Whether a secondary may listen on addr: a loopback address (127.0.0.0/8)
 * always; any other, or one that is not IPV4:PORT, only with a key or when
 * insecure is set. 0, or -EPERM with one line.
 */
int kemari_auth__check_listen(const char *addr, bool have_key, bool insecure);
/* addr ("IPV4:PORT") is in 127.0.0.0/8. */
bool kemari_auth__loopback(const char *addr);

/*
 * A 32-byte key for another purpose, derived from the shared key:
 * HMAC-SHA256(key, label), so that e.g. the TLS pre-shared key (--tls) is
 * never the key the challenge-response uses. 0 or -EIO.
 */
int kemari_auth__derive(const struct kemari_auth_key *k, const char *label,
			uint8_t out[KEMARI_AUTH_KEY_LEN]);

/*
 * The exchange, on a fresh connection, each side waiting up to timeout_ms
 * per message. The primary sends its nonce, checks the secondary's proof,
 * then proves itself; the secondary answers with its nonce and proof and
 * checks the primary's. 0 when the peer proved it holds the same key;
 * -EACCES when it did not or refused ours (a REFUSE naming the reason is
 * sent to the peer where that helps it), -EPROTO for a message out of
 * place, or the transport's error. The message recorded names k->path.
 *
 * The secondary's first message may have been received already (the
 * engine looks at it to tell a keyed primary from one without a key):
 * pass it as first, or NULL to receive it here.
 */
int kemari_auth__primary(struct kemari_xport *x,
			 const struct kemari_auth_key *k, int timeout_ms);
int kemari_auth__secondary(struct kemari_xport *x,
			   const struct kemari_auth_key *k,
			   const struct kemari_msg *first, int timeout_ms);

#endif
