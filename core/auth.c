// SPDX-License-Identifier: MIT
/*
 * Authentication: mutual challenge-response with a shared 32-byte key,
 * over any transport's control messages (ISO/IEC 9798-4's three-pass
 * mutual authentication with HMAC-SHA256 as the keyed function):
 *
 *   P -> S  AUTH INIT       nP
 *   S -> P  AUTH CHALLENGE  nS, HMAC(K, "kemari secondary" | v | nP | nS)
 *   P -> S  AUTH PROOF      HMAC(K, "kemari primary" | v | nP | nS)
 *
 * Ordering rules. The primary checks the secondary's proof before it sends
 * its own or anything about its guest (HELLO comes after), so a secondary
 * without the key learns nothing it could replay. The secondary answers
 * anyone's INIT, but a proof that does not carry its own fresh nonce is
 * worthless elsewhere; only a correct PROOF lets the engine read HELLO,
 * register receive buffers or accept state. The role labels make either
 * side's proof useless as the other's (a reflected CHALLENGE fails), the
 * fresh nonces make an old one useless (a replayed PROOF fails), and the
 * version in the MAC makes a downgrade fail. Proofs are compared with
 * CRYPTO_memcmp (constant time).
 */
#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kemari/auth.h"
#include "kemari/kemari.h"
#include "kemari/wire.h"

static const char auth_label_primary[] = "kemari primary";
static const char auth_label_secondary[] = "kemari secondary";

/* --- keys ------------------------------------------------------------------ */

int kemari_auth__load_key(struct kemari_auth_key *k, const char *path)
{
	uint8_t buf[KEMARI_AUTH_KEY_LEN + 1];
	size_t got = 0;
	struct stat st;
	int fd, err = 0;

	memset(k, 0, sizeof(*k));
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return kemari_err(
			-errno,
			"--auth-key=%s: %s (make a key with kemari-run --gen-key=FILE)",
			path, strerror(errno));
	/* The mode of the file we read, not of whatever the path names now. */
	if (fstat(fd, &st)) {
		err = kemari_err(-errno, "--auth-key=%s: %s", path,
				 strerror(errno));
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		err = kemari_err(
			-EINVAL,
			"--auth-key=%s is not a regular file: give the key file kemari-run --gen-key=FILE made",
			path);
		goto out;
	}
	if (st.st_mode & (S_IRWXG | S_IRWXO)) {
		err = kemari_err(
			-EPERM,
			"--auth-key=%s is open to group or others (mode %04o): a key only its owner can read is a secret; run chmod 600 %s",
			path, (unsigned int)(st.st_mode & 07777), path);
		goto out;
	}
	while (got < sizeof(buf)) {
		ssize_t n = read(fd, buf + got, sizeof(buf) - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			err = kemari_err(-errno, "--auth-key=%s: %s", path,
					 strerror(errno));
			goto out;
		}
		if (!n)
			break;
		got += (size_t)n;
	}
	if (got != KEMARI_AUTH_KEY_LEN) {
		err = kemari_err(
			-EINVAL,
			"--auth-key=%s holds %s%zu bytes, but a key is exactly %d bytes: make one with kemari-run --gen-key=FILE",
			path, got > KEMARI_AUTH_KEY_LEN ? "more than " : "",
			got > KEMARI_AUTH_KEY_LEN ? (size_t)KEMARI_AUTH_KEY_LEN
						  : got,
			KEMARI_AUTH_KEY_LEN);
		goto out;
	}
	memcpy(k->bytes, buf, KEMARI_AUTH_KEY_LEN);
	snprintf(k->path, sizeof(k->path), "%s", path);
out:
	OPENSSL_cleanse(buf, sizeof(buf));
	close(fd);
	return err;
}

void kemari_auth__forget(struct kemari_auth_key *k)
{
	OPENSSL_cleanse(k, sizeof(*k));
}

static int auth__random(void *buf, size_t len)
{
	if (RAND_bytes(buf, (int)len) != 1)
		return kemari_err(
			-EIO,
			"cannot draw random bytes (libcrypto's RAND_bytes failed)");
	return 0;
}

int kemari_auth__gen_key(const char *path)
{
	uint8_t key[KEMARI_AUTH_KEY_LEN];
	size_t done = 0;
	int fd, err;

	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW,
		  0600);
	if (fd < 0 && errno == EEXIST)
		return kemari_err(
			-EEXIST,
			"--gen-key=%s: the file exists; not replacing it (remove it first, or choose another name)",
			path);
	if (fd < 0)
		return kemari_err(-errno, "--gen-key=%s: %s", path,
				  strerror(errno));
	/* Whatever the umask: the owner reads and writes, nobody else. */
	err = fchmod(fd, 0600) ? -errno : 0;
	err = err ?: auth__random(key, sizeof(key));
	while (!err && done < sizeof(key)) {
		ssize_t n = write(fd, key + done, sizeof(key) - done);

		if (n < 0 && errno != EINTR)
			err = -errno;
		else if (n > 0)
			done += (size_t)n;
	}
	if (!err && fsync(fd))
		err = -errno;
	OPENSSL_cleanse(key, sizeof(key));
	if (close(fd) && !err)
		err = -errno;
	if (err) {
		unlink(path);
		return kemari_err(err, "--gen-key=%s: %s", path,
				  kemari_last_error(err));
	}
	return 0;
}

bool kemari_auth__loopback(const char *addr)
{
	uint32_t ip;
	uint16_t port;

	return !kemari_parse_hostport(addr, &ip, &port) && ip >> 24 == 127;
}

int kemari_auth__check_listen(const char *addr, bool have_key, bool insecure)
{
	/* An address that is not plainly loopback counts as reachable. */
	if (have_key || insecure || kemari_auth__loopback(addr))
		return 0;
	return kemari_err(
		-EPERM,
		"refusing to listen on %s without --auth-key: any host that reaches it could connect as the primary; give both sides --auth-key=FILE (kemari-run --gen-key=FILE makes one), or pass --insecure on a network you trust",
		addr);
}

/* --- the exchange ----------------------------------------------------------- */

/* HMAC-SHA256(K, label NUL | version (LE) | nP | nS). */
static int auth__mac(const struct kemari_auth_key *k, const char *label,
		     const uint8_t *np, const uint8_t *ns,
		     uint8_t out[KEMARI_AUTH_MAC_LEN])
{
	uint8_t msg[32 + 4 + 2 * KEMARI_AUTH_NONCE_LEN];
	size_t n = strlen(label) + 1;
	uint32_t v = KEMARI_PROTO_VERSION;
	unsigned int len = 0;

	if (n > 32)
		return -EINVAL;
	memcpy(msg, label, n);
	for (int i = 0; i < 4; i++)
		msg[n++] = (uint8_t)(v >> (8 * i));
	memcpy(msg + n, np, KEMARI_AUTH_NONCE_LEN);
	n += KEMARI_AUTH_NONCE_LEN;
	memcpy(msg + n, ns, KEMARI_AUTH_NONCE_LEN);
	n += KEMARI_AUTH_NONCE_LEN;
	if (!HMAC(EVP_sha256(), k->bytes, KEMARI_AUTH_KEY_LEN, msg, n, out,
		  &len) ||
	    len != KEMARI_AUTH_MAC_LEN)
		return kemari_err(-EIO, "HMAC-SHA256 failed (libcrypto)");
	return 0;
}

int kemari_auth__derive(const struct kemari_auth_key *k, const char *label,
			uint8_t out[KEMARI_AUTH_KEY_LEN])
{
	unsigned int len = 0;

	if (!HMAC(EVP_sha256(), k->bytes, KEMARI_AUTH_KEY_LEN,
		  (const uint8_t *)label, strlen(label), out, &len) ||
	    len != KEMARI_AUTH_KEY_LEN)
		return kemari_err(-EIO, "HMAC-SHA256 failed (libcrypto)");
	return 0;
}

static bool auth__mac_ok(const uint8_t *a, const uint8_t *b)
{
	return CRYPTO_memcmp(a, b, KEMARI_AUTH_MAC_LEN) == 0;
}

/*
 * Tell the peer why, as far as it still listens. The caller records its
 * own line after this with kemari_err_override: a failed send must not
 * take its place.
 */
static void auth__refuse(struct kemari_xport *x, const char *why)
{
	kemari_xport__send(x, KEMARI_MSG_REFUSE, 0, why, (uint32_t)strlen(why));
}

/*
 * The next message, which must be AUTH of this step. -EACCES with `what`
 * for anything else; a REFUSE's reason goes to *refused (NULL: none).
 */
static int auth__expect(const struct kemari_msg *m, uint32_t step,
			struct kemari_auth *a, char *refused, size_t rlen)
{
	if (m->type == KEMARI_MSG_REFUSE) {
		snprintf(refused, rlen, "%.*s", (int)KEMARI_MIN(m->len, 200u),
			 (const char *)m->payload);
		/* One line: the peer's text is not ours to trust. */
		for (char *c = refused; *c; c++)
			if (*c < 0x20 || *c == 0x7f)
				*c = ' ';
		return -EACCES;
	}
	if (m->type != KEMARI_MSG_AUTH || m->len != sizeof(*a))
		return -EACCES;
	memcpy(a, m->payload, sizeof(*a));
	if (a->proto_version != KEMARI_PROTO_VERSION || a->step != step)
		return -EACCES;
	return 0;
}

int kemari_auth__primary(struct kemari_xport *x,
			 const struct kemari_auth_key *k, int timeout_ms)
{
	struct kemari_auth mine = { .proto_version = KEMARI_PROTO_VERSION,
				    .step = KEMARI_AUTH_INIT },
			   theirs;
	uint8_t want[KEMARI_AUTH_MAC_LEN];
	char refused[256] = "";
	struct kemari_msg m;
	int err;

	err = auth__random(mine.nonce, sizeof(mine.nonce));
	err = err ?: kemari_xport__send(x, KEMARI_MSG_AUTH, 0, &mine,
					sizeof(mine));
	if (err)
		return err;
	err = kemari_xport__recv(x, &m, timeout_ms);
	if (err == -ETIMEDOUT)
		return kemari_err(
			err,
			"the secondary sent no key challenge within %d s (--auth-key=%s)",
			timeout_ms / 1000, k->path);
	if (err == -ECONNRESET)
		return kemari_err(
			err,
			"the secondary closed the connection instead of answering with its key proof (--auth-key=%s): see its log",
			k->path);
	if (err)
		return err;
	err = auth__expect(&m, KEMARI_AUTH_CHALLENGE, &theirs, refused,
			   sizeof(refused));
	if (err && refused[0])
		return kemari_err(err,
				  "the secondary refused --auth-key=%s: %s",
				  k->path, refused);
	if (err) {
		auth__refuse(x, "authentication failed: expected the "
				"secondary's key challenge");
		return kemari_err_override(
			err,
			"the secondary answered --auth-key=%s with %s, not a key challenge: is it a Kemari secondary of this version?",
			k->path, kemari_wire__type_name(m.type));
	}
	err = auth__mac(k, auth_label_secondary, mine.nonce, theirs.nonce,
			want);
	if (err)
		return err;
	if (!auth__mac_ok(want, theirs.mac)) {
		auth__refuse(x, "authentication failed: the secondary's key "
				"proof does not match the primary's key");
		return kemari_err_override(
			-EACCES,
			"the secondary does not hold the key in --auth-key=%s: give both sides the same key file",
			k->path);
	}
	mine.step = KEMARI_AUTH_PROOF;
	err = auth__mac(k, auth_label_primary, mine.nonce, theirs.nonce,
			mine.mac);
	memcpy(mine.nonce, theirs.nonce, sizeof(mine.nonce));
	return err ?: kemari_xport__send(x, KEMARI_MSG_AUTH, 0, &mine,
					 sizeof(mine));
}

int kemari_auth__secondary(struct kemari_xport *x,
			   const struct kemari_auth_key *k,
			   const struct kemari_msg *first, int timeout_ms)
{
	struct kemari_auth init,
		chal = { .proto_version = KEMARI_PROTO_VERSION,
			 .step = KEMARI_AUTH_CHALLENGE },
		proof;
	uint8_t want[KEMARI_AUTH_MAC_LEN];
	char refused[256] = "";
	struct kemari_msg m;
	int err;

	if (first) {
		m = *first;
	} else {
		err = kemari_xport__recv(x, &m, timeout_ms);
		if (err == -ETIMEDOUT)
			return kemari_err(
				err,
				"the primary sent no key proof within %d s",
				timeout_ms / 1000);
		if (err)
			return err;
	}
	if (auth__expect(&m, KEMARI_AUTH_INIT, &init, refused,
			 sizeof(refused))) {
		auth__refuse(x, "authentication failed: expected the "
				"primary's key request first");
		return kemari_err_override(
			-EACCES,
			"the primary sent %s instead of a key request: this secondary requires --auth-key=%s on both sides",
			kemari_wire__type_name(m.type), k->path);
	}
	err = auth__random(chal.nonce, sizeof(chal.nonce));
	err = err
		      ?: auth__mac(k, auth_label_secondary, init.nonce,
				   chal.nonce, chal.mac);
	err = err ?: kemari_xport__send(x, KEMARI_MSG_AUTH, 0, &chal,
					sizeof(chal));
	if (err)
		return err;
	err = kemari_xport__recv(x, &m, timeout_ms);
	if (err == -ETIMEDOUT)
		return kemari_err(
			err,
			"authentication failed: the primary sent no key proof within %d s",
			timeout_ms / 1000);
	if (err == -ECONNRESET)
		return kemari_err(
			err,
			"authentication failed: the primary hung up before proving the key in --auth-key=%s",
			k->path);
	if (err)
		return err;
	err = auth__expect(&m, KEMARI_AUTH_PROOF, &proof, refused,
			   sizeof(refused));
	/* The primary found our proof wrong: its key is another. */
	if (err && refused[0])
		return kemari_err(
			err,
			"authentication failed: the primary's key differs from the one in --auth-key=%s; give both sides the same key file",
			k->path);
	if (!err) {
		err = auth__mac(k, auth_label_primary, init.nonce, chal.nonce,
				want);
		if (err)
			return err;
		err = auth__mac_ok(want, proof.mac) ? 0 : -EACCES;
	}
	if (err) {
		auth__refuse(x, "authentication failed: the primary's key "
				"proof does not match the secondary's key");
		return kemari_err_override(
			-EACCES,
			"authentication failed: the primary did not prove the key in --auth-key=%s",
			k->path);
	}
	return 0;
}
