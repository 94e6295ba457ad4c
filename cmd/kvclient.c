// SPDX-License-Identifier: MIT
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "kemari/kemari.h"
#include "kvclient.h"

int kv_client__open(struct kv_client *c, const char *server, const char *id)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };

	memset(c, 0, sizeof(*c));
	c->fd = -1;
	if (kemari_parse_hostport(server, &c->ip, &c->port))
		return -EINVAL;
	if (strlen(id) == 0 || strlen(id) > 64)
		return -EINVAL;
	strcpy(c->id, id);
	c->resend_ms = 200;
	c->timeout_ms = 10000;
	c->fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (c->fd < 0)
		return -errno;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (c->ip != INADDR_LOOPBACK)
		sa.sin_addr.s_addr = htonl(INADDR_ANY);
	if (bind(c->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int err = -errno;

		close(c->fd);
		c->fd = -1;
		return err;
	}
	return 0;
}

void kv_client__close(struct kv_client *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
}

static int kv_client__send(struct kv_client *c, const void *buf, size_t len)
{
	struct sockaddr_in to = { .sin_family = AF_INET };

	to.sin_addr.s_addr = htonl(c->ip);
	to.sin_port = htons(c->port);
	if (sendto(c->fd, buf, len, 0, (struct sockaddr *)&to, sizeof(to)) <
		    0 &&
	    errno != ECONNREFUSED)
		return -errno;
	return 0;
}

/* Wait up to ms for one datagram; its length, 0 on timeout, or -errno. */
static ssize_t kv_client__wait(struct kv_client *c, char *buf, size_t cap,
			       int ms)
{
	struct pollfd p = { .fd = c->fd, .events = POLLIN };
	ssize_t n;
	int r = poll(&p, 1, ms);

	if (r <= 0)
		return r < 0 && errno != EINTR ? -errno : 0;
	n = recv(c->fd, buf, cap - 1, 0);
	if (n < 0)
		/* ICMP port unreachable while the service moves: retry. */
		return errno == ECONNREFUSED || errno == EINTR ? 0 : -errno;
	buf[n] = 0;
	return n;
}

#define KV_RESEND_MAX_MS 1000U

int kv_client__call_seq(struct kv_client *c, uint64_t seq, const char *cmd,
			char *reply, size_t cap)
{
	char req[512], rsp[4096], head[96];
	uint64_t start = kemari_now_ns(), last_send;
	/* Resends back off (doubling up to 1 s), as TCP's do: a server
	 * slower than resend_ms (a replica's pauses) must not be handed
	 * ever more copies of requests it is still answering. */
	unsigned int wait_ms = c->resend_ms;
	int len, hlen;

	len = snprintf(req, sizeof(req), "%s %" PRIu64 " %s", c->id, seq, cmd);
	hlen = snprintf(head, sizeof(head), "%s %" PRIu64 " ", c->id, seq);
	if (len < 0 || (size_t)len >= sizeof(req))
		return -E2BIG;
	for (;;) {
		int err = kv_client__send(c, req, (size_t)len);

		if (err)
			return err;
		last_send = kemari_now_ns();
		for (;;) {
			uint64_t now = kemari_now_ns();
			int64_t left = (int64_t)wait_ms -
				       (int64_t)((now - last_send) / 1000000);
			ssize_t n;

			if ((now - start) / 1000000 >= (uint64_t)c->timeout_ms)
				return -ETIMEDOUT;
			if (left <= 0)
				break;
			n = kv_client__wait(c, rsp, sizeof(rsp), (int)left);
			if (n < 0)
				return (int)n;
			if (n == 0)
				continue;
			/* Late replies to earlier seqs are skipped. */
			if (strncmp(rsp, head, (size_t)hlen))
				continue;
			snprintf(reply, cap, "%s", rsp + hlen);
			return 0;
		}
		c->resends++;
		wait_ms = KEMARI_MIN(wait_ms * 2, KV_RESEND_MAX_MS);
	}
}

int kv_client__call(struct kv_client *c, const char *cmd, char *reply,
		    size_t cap)
{
	return kv_client__call_seq(c, ++c->seq, cmd, reply, cap);
}

int kv_client__raw(struct kv_client *c, const void *buf, size_t len,
		   char *reply, size_t cap, int wait_ms)
{
	char rsp[4096];
	ssize_t n;
	int err = kv_client__send(c, buf, len);

	if (err)
		return err;
	n = kv_client__wait(c, rsp, sizeof(rsp), wait_ms);
	if (n < 0)
		return (int)n;
	if (n == 0)
		return -ETIMEDOUT;
	snprintf(reply, cap, "%s", rsp);
	return 0;
}

/* --- the exactly-once INCR load ------------------------------------------ */

struct kv_load_key {
	pthread_mutex_t lock;
	uint64_t acked;
	uint8_t *seen; /* seen[v] = times value v was returned */
	uint64_t seen_cap;
	uint64_t dup;
};

struct kv_load_state {
	const struct kv_load_cfg *cfg;
	struct kv_load_key *keys;
	pthread_mutex_t lock;
	uint64_t *lat;
	size_t nlat, lat_cap;
	uint64_t failed, resends, max_gap_us;
};

struct kv_load_thread {
	struct kv_load_state *st;
	unsigned int idx;
	pthread_t tid;
	int err;
};

static void kv_load__note_value(struct kv_load_key *k, uint64_t v)
{
	pthread_mutex_lock(&k->lock);
	k->acked++;
	if (v >= k->seen_cap) {
		uint64_t ncap = KEMARI_MAX(v + 1, k->seen_cap * 2);
		uint8_t *p = realloc(k->seen, ncap);

		if (p) {
			memset(p + k->seen_cap, 0, ncap - k->seen_cap);
			k->seen = p;
			k->seen_cap = ncap;
		}
	}
	if (v < k->seen_cap) {
		if (k->seen[v])
			k->dup++;
		if (k->seen[v] < 255)
			k->seen[v]++;
	}
	pthread_mutex_unlock(&k->lock);
}

static void *kv_load__thread(void *arg)
{
	struct kv_load_thread *t = arg;
	struct kv_load_state *st = t->st;
	const struct kv_load_cfg *cfg = st->cfg;
	unsigned int rng = t->idx * 2654435761u + 12345;
	struct kv_client c;
	char id[80], cmd[160], reply[256];

	snprintf(id, sizeof(id), "%s-c%u", cfg->prefix, t->idx);
	t->err = kv_client__open(&c, cfg->server, id);
	if (t->err)
		return NULL;
	c.timeout_ms = cfg->timeout_ms;
	c.resend_ms = 100;
	for (unsigned int i = 0;
	     cfg->ops_per_client ? i < cfg->ops_per_client
				 : !(cfg->stop_flag && *cfg->stop_flag);
	     i++) {
		unsigned int k;
		uint64_t t0, dt;
		long long v;
		int err;

		rng = rng * 1103515245u + 12345u;
		k = (rng >> 8) % cfg->keys;
		snprintf(cmd, sizeof(cmd), "INCR %s-k%u", cfg->prefix, k);
		t0 = kemari_now_ns();
		err = kv_client__call(&c, cmd, reply, sizeof(reply));
		dt = (kemari_now_ns() - t0) / 1000;
		if (err) {
			pthread_mutex_lock(&st->lock);
			st->failed++;
			pthread_mutex_unlock(&st->lock);
			break;
		}
		if (sscanf(reply, "OK %lld", &v) != 1 || v <= 0) {
			fprintf(stderr,
				"kv-load: unexpected reply '%s' to '%s'\n",
				reply, cmd);
			pthread_mutex_lock(&st->lock);
			st->failed++;
			pthread_mutex_unlock(&st->lock);
			continue;
		}
		kv_load__note_value(&st->keys[k], (uint64_t)v);
		pthread_mutex_lock(&st->lock);
		if (st->nlat == st->lat_cap) {
			size_t ncap = st->lat_cap ? st->lat_cap * 2 : 4096;
			uint64_t *p = realloc(st->lat, ncap * sizeof(*p));

			if (p) {
				st->lat = p;
				st->lat_cap = ncap;
			}
		}
		if (st->nlat < st->lat_cap)
			st->lat[st->nlat++] = dt;
		st->max_gap_us = KEMARI_MAX(st->max_gap_us, dt);
		pthread_mutex_unlock(&st->lock);
	}
	pthread_mutex_lock(&st->lock);
	st->resends += c.resends;
	pthread_mutex_unlock(&st->lock);
	kv_client__close(&c);
	return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static uint64_t pct(const uint64_t *v, size_t n, double q)
{
	size_t i;

	if (!n)
		return 0;
	i = (size_t)(q * (double)n + 0.999999);
	i = i ? i - 1 : 0;
	return v[i < n ? i : n - 1];
}

int kv_load__run(const struct kv_load_cfg *cfg, struct kv_load_result *res)
{
	struct kv_load_state st = { .cfg = cfg };
	struct kv_load_thread *th;
	struct kv_client c;
	char id[80], cmd[160], reply[256];
	int err = 0;

	memset(res, 0, sizeof(*res));
	if (!cfg->clients || !cfg->keys)
		return -EINVAL;
	st.keys = calloc(cfg->keys, sizeof(*st.keys));
	th = calloc(cfg->clients, sizeof(*th));
	if (!st.keys || !th) {
		free(st.keys);
		free(th);
		return -ENOMEM;
	}
	pthread_mutex_init(&st.lock, NULL);
	for (unsigned int k = 0; k < cfg->keys; k++)
		pthread_mutex_init(&st.keys[k].lock, NULL);
	for (unsigned int i = 0; i < cfg->clients; i++) {
		th[i].st = &st;
		th[i].idx = i;
		pthread_create(&th[i].tid, NULL, kv_load__thread, &th[i]);
	}
	for (unsigned int i = 0; i < cfg->clients; i++) {
		pthread_join(th[i].tid, NULL);
		if (th[i].err && !err)
			err = th[i].err;
	}

	/* Verify: each key's final value equals its acknowledged INCRs, and
	 * the values handed out were exactly 1..final, each once. */
	snprintf(id, sizeof(id), "%s-verify", cfg->prefix);
	if (!err)
		err = kv_client__open(&c, cfg->server, id);
	if (!err) {
		c.timeout_ms = cfg->timeout_ms;
		for (unsigned int k = 0; k < cfg->keys && !err; k++) {
			struct kv_load_key *key = &st.keys[k];
			long long final = 0;

			snprintf(cmd, sizeof(cmd), "GET %s-k%u", cfg->prefix,
				 k);
			err = kv_client__call(&c, cmd, reply, sizeof(reply));
			if (err)
				break;
			if (!strcmp(reply, "NOTFOUND"))
				final = 0;
			else if (sscanf(reply, "OK %lld", &final) != 1) {
				err = -EPROTO;
				break;
			}
			res->acked += key->acked;
			res->final_sum += (uint64_t) final;
			res->duplicated += key->dup;
			/* Handed out but not in the final state: lost. */
			for (uint64_t v = (uint64_t) final + 1;
			     v < key->seen_cap; v++)
				if (key->seen[v])
					res->lost++;
			/* In the final state but never handed out: applied
			 * twice (or a request that timed out). */
			for (uint64_t v = 1; v <= (uint64_t) final; v++)
				if (v >= key->seen_cap || !key->seen[v])
					res->phantom++;
		}
		kv_client__close(&c);
	}
	qsort(st.lat, st.nlat, sizeof(uint64_t), cmp_u64);
	res->lat_p50_us = pct(st.lat, st.nlat, 0.5);
	res->lat_p99_us = pct(st.lat, st.nlat, 0.99);
	res->lat_max_us = pct(st.lat, st.nlat, 1.0);
	res->failed = st.failed;
	res->resends = st.resends;
	res->max_gap_us = st.max_gap_us;
	for (unsigned int k = 0; k < cfg->keys; k++) {
		free(st.keys[k].seen);
		pthread_mutex_destroy(&st.keys[k].lock);
	}
	pthread_mutex_destroy(&st.lock);
	free(st.keys);
	free(st.lat);
	free(th);
	return err;
}
