// SPDX-License-Identifier: MIT
/*
 * Authentication (core/auth.c): key files, the listen rule, and the
 * challenge-response over an in-memory transport (a SEQPACKET socketpair,
 * one control message per packet). The honest side of each exchange is the
 * real code; the dishonest one is played here, computing proofs with
 * libcrypto exactly as docs/protocol.md describes them.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kemari/auth.h"
#include "kemari/kemari.h"
#include "kemari/wire.h"

/* ---- an in-memory transport: control messages only ---------------------- */

struct sp_hdr {
	uint16_t type;
	uint16_t pad;
	uint32_t len;
	uint64_t epoch;
};

struct sp_x {
	struct kemari_xport x;
	int fd;
	uint8_t buf[sizeof(struct sp_hdr) + 4096];
};

static struct sp_x *to_sp(struct kemari_xport *x)
{
	return kemari_container_of(x, struct sp_x, x);
}

static int sp_send(struct kemari_xport *x, uint16_t type, uint64_t epoch,
		   const void *p, uint32_t len)
{
	struct sp_hdr h = { .type = type, .len = len, .epoch = epoch };
	uint8_t pkt[sizeof(h) + 4096];

	if (len > 4096)
		return -EMSGSIZE;
	memcpy(pkt, &h, sizeof(h));
	memcpy(pkt + sizeof(h), p, len);
	if (send(to_sp(x)->fd, pkt, sizeof(h) + len, MSG_NOSIGNAL) < 0)
		return -ECONNRESET;
	return 0;
}

static int sp_recv(struct kemari_xport *x, struct kemari_msg *m, int timeout_ms)
{
	struct sp_x *t = to_sp(x);
	struct pollfd p = { .fd = t->fd, .events = POLLIN };
	struct sp_hdr h;
	ssize_t n;

	if (poll(&p, 1, timeout_ms) == 0)
		return -ETIMEDOUT;
	n = recv(t->fd, t->buf, sizeof(t->buf), 0);
	if (n <= 0)
		return -ECONNRESET;
	if ((size_t)n < sizeof(h))
		return -EBADMSG;
	memcpy(&h, t->buf, sizeof(h));
	if (h.len != (size_t)n - sizeof(h))
		return -EBADMSG;
	m->type = h.type;
	m->epoch = h.epoch;
	m->len = h.len;
	m->payload = t->buf + sizeof(h);
	return 0;
}

static const struct kemari_xport_ops sp_ops = {
	.name = "socketpair",
	.send = sp_send,
	.recv = sp_recv,
};

static struct sp_x ends[2];

static void pair(void)
{
	int fds[2];

	cr_assert(eq(int, socketpair(AF_UNIX, SOCK_SEQPACKET, 0, fds), 0));
	for (int i = 0; i < 2; i++) {
		memset(&ends[i], 0, sizeof(ends[i]));
		ends[i].x.ops = &sp_ops;
		ends[i].fd = fds[i];
	}
}

static void unpair(void)
{
	close(ends[0].fd);
	close(ends[1].fd);
}

/* ---- keys --------------------------------------------------------------- */

static char dir[64];

static void mkdir_tmp(void)
{
	snprintf(dir, sizeof(dir), "/tmp/kemari-auth.XXXXXX");
	cr_assert(not(eq(ptr, mkdtemp(dir), NULL)));
}

static void rm_tmp(void)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd))
		fprintf(stderr, "could not remove %s\n", dir);
}

static void path_of(char *out, size_t n, const char *name)
{
	snprintf(out, n, "%s/%s", dir, name);
}

static void write_file(const char *path, const void *p, size_t n, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

	cr_assert(fd >= 0);
	cr_assert(eq(sz, (size_t)write(fd, p, n), n));
	cr_assert(eq(int, fchmod(fd, mode), 0));
	close(fd);
}

static void key_of(struct kemari_auth_key *k, uint8_t fill, const char *name)
{
	memset(k, 0, sizeof(*k));
	memset(k->bytes, fill, sizeof(k->bytes));
	snprintf(k->path, sizeof(k->path), "%s", name);
}

TestSuite(auth_key, .init = mkdir_tmp, .fini = rm_tmp);

Test(auth_key, generated_key_loads_and_is_private)
{
	struct kemari_auth_key a, b;
	char p1[128], p2[128];
	struct stat st;

	path_of(p1, sizeof(p1), "k1");
	path_of(p2, sizeof(p2), "k2");
	umask(0); /* the file must still come out 0600 */
	cr_assert(eq(int, kemari_auth__gen_key(p1), 0));
	cr_assert(eq(int, kemari_auth__gen_key(p2), 0));
	cr_assert(eq(int, stat(p1, &st), 0));
	cr_assert(eq(u32, (uint32_t)(st.st_mode & 07777), 0600));
	cr_assert(eq(i64, (int64_t)st.st_size, KEMARI_AUTH_KEY_LEN));
	cr_assert(eq(int, kemari_auth__load_key(&a, p1), 0));
	cr_assert(eq(int, kemari_auth__load_key(&b, p2), 0));
	cr_assert(eq(str, a.path, p1));
	cr_assert(not(eq(int, memcmp(a.bytes, b.bytes, sizeof(a.bytes)), 0)),
		  "two generated keys are equal");
}

Test(auth_key, gen_key_never_replaces_a_file)
{
	char p[128];
	uint8_t old[KEMARI_AUTH_KEY_LEN], now[KEMARI_AUTH_KEY_LEN + 1];
	int fd, err;

	path_of(p, sizeof(p), "k");
	memset(old, 0x5a, sizeof(old));
	write_file(p, old, sizeof(old), 0600);
	kemari_err_clear();
	err = kemari_auth__gen_key(p);
	cr_assert(eq(int, err, -EEXIST));
	cr_assert(not(eq(ptr, strstr(kemari_last_error(err), "not replacing"),
			 NULL)),
		  "%s", kemari_last_error(err));
	fd = open(p, O_RDONLY);
	cr_assert(eq(sz, (size_t)read(fd, now, sizeof(now)), sizeof(old)));
	close(fd);
	cr_assert(eq(int, memcmp(old, now, sizeof(old)), 0));
}

Test(auth_key, exact_key_file_loads)
{
	struct kemari_auth_key k;
	uint8_t raw[KEMARI_AUTH_KEY_LEN];
	char p[128];

	for (unsigned int i = 0; i < sizeof(raw); i++)
		raw[i] = (uint8_t)(i * 7 + 1);
	path_of(p, sizeof(p), "k");
	write_file(p, raw, sizeof(raw), 0400);
	cr_assert(eq(int, kemari_auth__load_key(&k, p), 0));
	cr_assert(eq(int, memcmp(k.bytes, raw, sizeof(raw)), 0));
}

static void expect_load_fails(const char *name, const void *content, size_t n,
			      mode_t mode, int want, const char *needle)
{
	struct kemari_auth_key k;
	char p[128];
	int err;

	path_of(p, sizeof(p), name);
	write_file(p, content, n, mode);
	kemari_err_clear();
	err = kemari_auth__load_key(&k, p);
	cr_assert(eq(int, err, want), "%s: %s", name, kemari_last_error(err));
	cr_assert(not(eq(ptr, strstr(kemari_last_error(err), needle), NULL)),
		  "%s", kemari_last_error(err));
	cr_assert(not(eq(ptr, strstr(kemari_last_error(err), p), NULL)),
		  "the line does not name the file: %s",
		  kemari_last_error(err));
}

Test(auth_key, wrong_length_is_refused)
{
	uint8_t raw[80];

	memset(raw, 'a', sizeof(raw));
	expect_load_fails("short", raw, 31, 0600, -EINVAL, "holds 31 bytes");
	expect_load_fails("long", raw, 33, 0600, -EINVAL,
			  "holds more than 32 bytes");
	/* 64 hex digits are not the key: 32 raw bytes are. */
	expect_load_fails("hex", raw, 64, 0600, -EINVAL, "exactly 32 bytes");
	expect_load_fails("empty", raw, 0, 0600, -EINVAL, "holds 0 bytes");
}

Test(auth_key, readable_by_others_is_refused)
{
	uint8_t raw[KEMARI_AUTH_KEY_LEN] = { 1 };

	expect_load_fails("g", raw, sizeof(raw), 0640, -EPERM, "chmod 600");
	expect_load_fails("o", raw, sizeof(raw), 0604, -EPERM, "mode 0604");
	expect_load_fails("gw", raw, sizeof(raw), 0620, -EPERM, "chmod 600");
}

Test(auth_key, missing_or_not_a_file_is_refused)
{
	struct kemari_auth_key k;
	char p[128];
	int err;

	path_of(p, sizeof(p), "none");
	kemari_err_clear();
	cr_assert(eq(int, kemari_auth__load_key(&k, p), -ENOENT));
	kemari_err_clear();
	err = kemari_auth__load_key(&k, dir);
	cr_assert(eq(int, err, -EINVAL));
	cr_assert(not(eq(ptr,
			 strstr(kemari_last_error(err), "not a regular file"),
			 NULL)));
}

Test(auth_listen, non_loopback_needs_a_key_or_insecure)
{
	int err;

	cr_assert(eq(int,
		     kemari_auth__check_listen("127.0.0.1:1", false, false),
		     0));
	cr_assert(eq(int,
		     kemari_auth__check_listen("127.3.2.1:1", false, false),
		     0));
	cr_assert(eq(int,
		     kemari_auth__check_listen("localhost:1", false, false),
		     0));
	kemari_err_clear();
	err = kemari_auth__check_listen("0.0.0.0:7400", false, false);
	cr_assert(eq(int, err, -EPERM));
	cr_assert(eq(str, (char *)kemari_last_error(err),
		     "refusing to listen on 0.0.0.0:7400 without --auth-key: "
		     "any host that reaches it could connect as the primary; "
		     "give both sides --auth-key=FILE (kemari-run "
		     "--gen-key=FILE makes one), or pass --insecure on a "
		     "network you trust"));
	kemari_err_clear();
	cr_assert(eq(int,
		     kemari_auth__check_listen("169.254.77.1:1", false, false),
		     -EPERM));
	kemari_err_clear();
	cr_assert(eq(int, kemari_auth__check_listen("host:1", false, false),
		     -EPERM));
	cr_assert(eq(int,
		     kemari_auth__check_listen("0.0.0.0:7400", true, false),
		     0));
	cr_assert(eq(int,
		     kemari_auth__check_listen("0.0.0.0:7400", false, true),
		     0));
}

/* ---- the exchange ------------------------------------------------------- */

struct side {
	struct kemari_xport *x;
	const struct kemari_auth_key *k;
	int err;
	char why[512];
	pthread_t tid;
};

static void *primary_thread(void *arg)
{
	struct side *s = arg;

	kemari_err_clear();
	s->err = kemari_auth__primary(s->x, s->k, 5000);
	snprintf(s->why, sizeof(s->why), "%s", kemari_last_error(s->err));
	return NULL;
}

static void *secondary_thread(void *arg)
{
	struct side *s = arg;

	kemari_err_clear();
	s->err = kemari_auth__secondary(s->x, s->k, NULL, 5000);
	snprintf(s->why, sizeof(s->why), "%s", kemari_last_error(s->err));
	return NULL;
}

static void start(struct side *s, void *(*fn)(void *), int end,
		  const struct kemari_auth_key *k)
{
	memset(s, 0, sizeof(*s));
	s->x = &ends[end].x;
	s->k = k;
	cr_assert(eq(int, pthread_create(&s->tid, NULL, fn, s), 0));
}

static void finish(struct side *s)
{
	pthread_join(s->tid, NULL);
}

TestSuite(auth, .init = pair, .fini = unpair, .timeout = 30);

Test(auth, same_key_passes_both_ways)
{
	struct kemari_auth_key k;
	struct side p, s;

	key_of(&k, 0x11, "/keys/same");
	start(&s, secondary_thread, 1, &k);
	start(&p, primary_thread, 0, &k);
	finish(&p);
	finish(&s);
	cr_assert(eq(int, p.err, 0), "%s", p.why);
	cr_assert(eq(int, s.err, 0), "%s", s.why);
}

Test(auth, wrong_key_fails_on_both_sides)
{
	struct kemari_auth_key kp, ks;
	struct side p, s;

	key_of(&kp, 0x11, "/keys/primary.key");
	key_of(&ks, 0x22, "/keys/secondary.key");
	start(&s, secondary_thread, 1, &ks);
	start(&p, primary_thread, 0, &kp);
	finish(&p);
	finish(&s);
	cr_assert(eq(int, p.err, -EACCES), "%s", p.why);
	cr_assert(eq(int, s.err, -EACCES), "%s", s.why);
	cr_assert(eq(str, p.why,
		     "the secondary does not hold the key in "
		     "--auth-key=/keys/primary.key: give both sides the same "
		     "key file"));
	cr_assert(eq(str, s.why,
		     "authentication failed: the primary's key differs from "
		     "the one in --auth-key=/keys/secondary.key; give both "
		     "sides the same key file"));
}

/* The peer, played by the test: the next message must be AUTH at step. */
static void peer_expect(int end, uint32_t step, struct kemari_auth *a)
{
	struct kemari_msg m;

	cr_assert(eq(int, sp_recv(&ends[end].x, &m, 5000), 0));
	cr_assert(eq(u16, m.type, KEMARI_MSG_AUTH));
	cr_assert(eq(u32, m.len, sizeof(*a)));
	memcpy(a, m.payload, sizeof(*a));
	cr_assert(eq(u32, a->proto_version, KEMARI_PROTO_VERSION));
	cr_assert(eq(u32, a->step, step));
}

static void peer_send(int end, const struct kemari_auth *a)
{
	cr_assert(eq(int,
		     sp_send(&ends[end].x, KEMARI_MSG_AUTH, 0, a, sizeof(*a)),
		     0));
}

/* The peer's next message is a REFUSE. */
static void peer_refused(int end)
{
	struct kemari_msg m;

	cr_assert(eq(int, sp_recv(&ends[end].x, &m, 5000), 0));
	cr_assert(eq(u16, m.type, KEMARI_MSG_REFUSE));
}

/* docs/protocol.md: HMAC-SHA256(K, label NUL | version LE | nP | nS). */
static void proof(const struct kemari_auth_key *k, const char *label,
		  const uint8_t *np, const uint8_t *ns, uint8_t *out)
{
	uint8_t msg[128];
	size_t n = strlen(label) + 1;
	uint32_t v = KEMARI_PROTO_VERSION;
	unsigned int len;

	memcpy(msg, label, n);
	memcpy(msg + n, &v, 4); /* x86-64: little-endian */
	memcpy(msg + n + 4, np, 32);
	memcpy(msg + n + 36, ns, 32);
	cr_assert(not(eq(ptr,
			 HMAC(EVP_sha256(), k->bytes, sizeof(k->bytes), msg,
			      n + 68, out, &len),
			 NULL)));
}

/* A primary that follows the documented formula is accepted, once. */
Test(auth, documented_proof_passes_and_its_replay_fails)
{
	struct kemari_auth_key k;
	struct kemari_auth init = { .proto_version = KEMARI_PROTO_VERSION,
				    .step = KEMARI_AUTH_INIT },
			   chal, pr;
	struct side s;
	uint8_t want[32];

	key_of(&k, 0x33, "/keys/k");
	memset(init.nonce, 0xab, sizeof(init.nonce));
	start(&s, secondary_thread, 1, &k);
	peer_send(0, &init);
	peer_expect(0, KEMARI_AUTH_CHALLENGE, &chal);
	/* The secondary's proof is the documented one, too. */
	proof(&k, "kemari secondary", init.nonce, chal.nonce, want);
	cr_assert(eq(int, memcmp(want, chal.mac, 32), 0));
	pr = init;
	pr.step = KEMARI_AUTH_PROOF;
	proof(&k, "kemari primary", init.nonce, chal.nonce, pr.mac);
	peer_send(0, &pr);
	finish(&s);
	cr_assert(eq(int, s.err, 0), "%s", s.why);

	/* The same INIT and PROOF again: the secondary's nonce is new. */
	start(&s, secondary_thread, 1, &k);
	peer_send(0, &init);
	peer_expect(0, KEMARI_AUTH_CHALLENGE, &chal);
	peer_send(0, &pr);
	finish(&s);
	cr_assert(eq(int, s.err, -EACCES), "%s", s.why);
	cr_assert(eq(str, s.why,
		     "authentication failed: the primary did not prove the "
		     "key in --auth-key=/keys/k"));
	peer_refused(0);
}

/* Without the key, the secondary's own proof sent back is no proof. */
Test(auth, reflected_challenge_fails_at_the_secondary)
{
	struct kemari_auth_key k;
	struct kemari_auth init = { .proto_version = KEMARI_PROTO_VERSION,
				    .step = KEMARI_AUTH_INIT },
			   chal;
	struct side s;

	key_of(&k, 0x44, "/keys/k");
	memset(init.nonce, 0x01, sizeof(init.nonce));
	/* As it came: a CHALLENGE where a PROOF belongs. */
	start(&s, secondary_thread, 1, &k);
	peer_send(0, &init);
	peer_expect(0, KEMARI_AUTH_CHALLENGE, &chal);
	peer_send(0, &chal);
	finish(&s);
	cr_assert(eq(int, s.err, -EACCES), "%s", s.why);
	peer_refused(0);

	/* Relabelled as a PROOF: the role label in the MAC differs. */
	start(&s, secondary_thread, 1, &k);
	peer_send(0, &init);
	peer_expect(0, KEMARI_AUTH_CHALLENGE, &chal);
	chal.step = KEMARI_AUTH_PROOF;
	peer_send(0, &chal);
	finish(&s);
	cr_assert(eq(int, s.err, -EACCES), "%s", s.why);
	peer_refused(0);
}

/* A secondary without the key can only send the primary's INIT back. */
Test(auth, reflected_init_fails_at_the_primary)
{
	struct kemari_auth_key k;
	struct kemari_auth init;
	struct side p;

	key_of(&k, 0x55, "/keys/p.key");
	start(&p, primary_thread, 0, &k);
	peer_expect(1, KEMARI_AUTH_INIT, &init);
	init.step = KEMARI_AUTH_CHALLENGE; /* its nonce, no valid MAC */
	peer_send(1, &init);
	finish(&p);
	cr_assert(eq(int, p.err, -EACCES), "%s", p.why);
	cr_assert(eq(str, p.why,
		     "the secondary does not hold the key in "
		     "--auth-key=/keys/p.key: give both sides the same key "
		     "file"));
	/* And the primary said nothing more than its nonce and a REFUSE. */
	peer_refused(1);
}

/* The secondary's verdict on a refusal: the primary's key differs. */
Test(auth, refusals_name_the_key_on_both_sides)
{
	struct kemari_auth_key k;
	struct kemari_auth init;
	const char *why = "this secondary has no --auth-key";
	struct side p;

	key_of(&k, 0x66, "/keys/p.key");
	start(&p, primary_thread, 0, &k);
	peer_expect(1, KEMARI_AUTH_INIT, &init);
	cr_assert(eq(int,
		     sp_send(&ends[1].x, KEMARI_MSG_REFUSE, 0, why,
			     (uint32_t)strlen(why)),
		     0));
	finish(&p);
	cr_assert(eq(int, p.err, -EACCES), "%s", p.why);
	cr_assert(eq(str, p.why,
		     "the secondary refused --auth-key=/keys/p.key: this "
		     "secondary has no --auth-key"));
}

/* A HELLO where the key request belongs: refused, with a REFUSE. */
Test(auth, secondary_refuses_a_primary_without_proof)
{
	struct kemari_auth_key k;
	struct kemari_hello h = { .proto_version = KEMARI_PROTO_VERSION };
	struct kemari_msg first = { .type = KEMARI_MSG_HELLO,
				    .len = sizeof(h),
				    .payload = &h };
	int err;

	key_of(&k, 0x77, "/keys/s.key");
	kemari_err_clear();
	err = kemari_auth__secondary(&ends[1].x, &k, &first, 1000);
	cr_assert(eq(int, err, -EACCES));
	cr_assert(
		eq(str, (char *)kemari_last_error(err),
		   "the primary sent HELLO instead of a key request: this "
		   "secondary requires --auth-key=/keys/s.key on both sides"));
	peer_refused(0);
}

Test(auth, silence_times_out)
{
	struct kemari_auth_key k;
	struct kemari_auth init;
	int err;

	key_of(&k, 0x88, "/keys/k");
	kemari_err_clear();
	err = kemari_auth__secondary(&ends[1].x, &k, NULL, 50);
	cr_assert(eq(int, err, -ETIMEDOUT));
	kemari_err_clear();
	err = kemari_auth__primary(&ends[0].x, &k, 50);
	cr_assert(eq(int, err, -ETIMEDOUT));
	peer_expect(1, KEMARI_AUTH_INIT, &init);
}
