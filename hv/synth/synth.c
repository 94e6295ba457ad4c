// SPDX-License-Identifier: MIT
/*
 * The synthetic hypervisor backend: no VM, one host thread plays a one-vCPU
 * guest running the dirtier's workload. Each round writes the round number
 * into K distinct pages of a W-page working set, then raises one output
 * event; releasing the event writes the round's record into the output file
 * (--disk), at the round's own offset, as a block write would.
 *
 * What it is for: measuring the engine and the transports natively on a
 * host where KVM is missing or emulated (perf/: `synth` cells), and failover
 * tests that need no KVM. Its dirty tracking is exact and O(dirty) (the
 * writer records what it wrote), so its harvest cost says nothing about
 * KVM's; everything after the harvest (state, push, commit, ack, apply,
 * takeover) is the real engine and the real transport.
 *
 * The whole guest state is the round counter and whether the round's event
 * is in flight, so a replica can be checked: at takeover the working set
 * must hold exactly what rounds 0..R wrote (reattach verifies every page),
 * and the event in flight is re-issued. Guest args: pages=K (16), ws=W
 * (max(4K, 1024), clamped to RAM), rounds=R (0: until stopped), think_us=T
 * (time the guest computes between events, 0), writer=N (testing, 0:
 * this side's records carry N in their top 16 bits, so that a test can
 * tell which side wrote each; not part of the guest's state).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "kemari/buf.h"
#include "kemari/hv.h"
#include "kemari/kemari.h"

extern const struct kemari_hv_ops kemari_hv_synth;

#define SYNTH_MAGIC 0x6b656d6172697379ULL /* "kemarisy" */
#define SYNTH_BASE_PFN 16ULL		  /* the working set starts here */
#define SYNTH_TAG_CPU 0x53435055	  /* "SCPU" */
#define SYNTH_TAG_DEV 0x53444556	  /* "SDEV" */

struct synth_cpu {
	uint64_t magic;
	uint64_t round; /* the round in progress (or next) */
	uint64_t pages, ws, rounds;
	/* The round's pages are written, its event not raised yet: a
	 * checkpoint taken at a tick while the guest thinks. */
	uint64_t wrote;
};

struct synth {
	struct kemari_hv hv;
	struct kemari_hv_hooks hooks;
	uint8_t *ram;
	uint64_t ram_size, npages;
	uint64_t pages, ws, rounds, think_ns;
	uint64_t writer; /* tag in this side's records (testing) */
	uint64_t round;
	bool pending; /* the round's event is tapped, not yet released */
	bool wrote;   /* the round's pages are written (pending or not) */
	bool loaded;
	int out_fd;
	const char *out_path;
	struct kemari_event ev;
	atomic_bool stop;
	bool crashed; /* --fault=guest-crash: dies at the next resume */
	/* The dirty log: the guest writes, then marks (see synth__round). */
	pthread_mutex_t lock;
	struct kemari_dirty dirty;
	bool tracking;
};

static struct synth *to_synth(struct kemari_hv *hv)
{
	return kemari_container_of(hv, struct synth, hv);
}

/* The value of "KEY=VALUE" when a names key, else NULL. */
static const char *synth__arg_value(const char *a, const char *key)
{
	size_t k = strlen(key);

	return strncmp(a, key, k) || a[k] != '=' ? NULL : a + k + 1;
}

static int synth__arg(const struct kemari_hv_cfg *cfg, const char *key,
		      uint64_t def, uint64_t *out)
{
	*out = def;
	for (unsigned int i = 0; i < cfg->nguest_args; i++) {
		const char *a = cfg->guest_args[i];
		const char *v = synth__arg_value(a, key);
		char *end;

		if (!v)
			continue;
		errno = 0;
		*out = strtoull(v, &end, 10);
		if (errno || *end || end == v)
			return kemari_err(
				-EINVAL,
				"synthetic guest: --guest-arg=%s: expected %s=NUMBER",
				a, key);
	}
	return 0;
}

static int synth__parse(struct synth *s, const struct kemari_hv_cfg *cfg)
{
	static const char *const known[] = { "pages", "ws", "rounds",
					     "think_us", "writer" };
	uint64_t think_us, room = s->npages - SYNTH_BASE_PFN;
	int err;

	for (unsigned int i = 0; i < cfg->nguest_args; i++) {
		bool ok = false;

		for (unsigned int j = 0; j < KEMARI_ARRAY_SIZE(known); j++)
			ok |= synth__arg_value(cfg->guest_args[i], known[j]) !=
			      NULL;
		if (!ok)
			return kemari_err(
				-EINVAL,
				"synthetic guest: unknown --guest-arg=%s (it takes pages, ws, rounds, think_us, writer)",
				cfg->guest_args[i]);
	}
	err = synth__arg(cfg, "pages", 16, &s->pages);
	err = err ?: synth__arg(cfg, "ws", 0, &s->ws);
	err = err ?: synth__arg(cfg, "rounds", 0, &s->rounds);
	err = err ?: synth__arg(cfg, "think_us", 0, &think_us);
	err = err ?: synth__arg(cfg, "writer", 0, &s->writer);
	if (err)
		return err;
	if (s->writer > 0xffff)
		return kemari_err(-EINVAL,
				  "synthetic guest: writer=%llu: at most 65535",
				  (unsigned long long)s->writer);
	if (!s->ws)
		s->ws = KEMARI_MAX(4 * s->pages, 1024ULL);
	s->ws = KEMARI_MIN(s->ws, room);
	if (s->pages > s->ws)
		return kemari_err(
			-EINVAL,
			"synthetic guest: pages=%llu exceeds the working set of %llu pages (RAM %llu MiB): use a larger --mem",
			(unsigned long long)s->pages, (unsigned long long)s->ws,
			(unsigned long long)(s->ram_size >> 20));
	s->think_ns = think_us * 1000;
	return 0;
}

static int synth__create(struct kemari_hv **out,
			 const struct kemari_hv_cfg *cfg)
{
	struct synth *s;
	int err;

	if (cfg->net)
		return kemari_err(
			-EINVAL,
			"the synthetic guest has no net device: drop --net (its output event is the --disk write)");
	if (cfg->ncpus != 1)
		return kemari_err(
			-EINVAL,
			"the synthetic guest has one vCPU: drop --cpus");
	if (cfg->mem_size < (SYNTH_BASE_PFN + 64) * KEMARI_PAGE_SIZE ||
	    cfg->mem_size % KEMARI_PAGE_SIZE)
		return kemari_err(
			-EINVAL,
			"synthetic guest: --mem must be a multiple of 4K and at least 320K");
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->hv.ops = &kemari_hv_synth;
	s->hooks = cfg->hooks;
	s->ram_size = cfg->mem_size;
	s->npages = cfg->mem_size / KEMARI_PAGE_SIZE;
	s->out_fd = -1;
	s->out_path = cfg->disk_path;
	pthread_mutex_init(&s->lock, NULL);
	err = synth__parse(s, cfg);
	if (err)
		goto err_free;
	/* Populated up front, like RAM a VM has touched: page faults of a
	 * first write are not what the benchmark measures. */
	s->ram =
		mmap(NULL, s->ram_size, PROT_READ | PROT_WRITE,
		     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_POPULATE,
		     -1, 0);
	if (s->ram == MAP_FAILED) {
		err = kemari_err(-ENOMEM,
				 "cannot map %llu MiB of synthetic guest RAM",
				 (unsigned long long)(s->ram_size >> 20));
		goto err_free;
	}
	err = kemari_dirty__init(&s->dirty, s->npages);
	if (err)
		goto err_unmap;
	/* A secondary opens it at open_disk and never creates it. */
	if (s->out_path && !cfg->defer_disk) {
		s->out_fd =
			open(s->out_path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
		if (s->out_fd < 0) {
			err = kemari_err(-errno,
					 "synthetic guest: output file %s: %s",
					 s->out_path, strerror(errno));
			goto err_dirty;
		}
	}
	*out = &s->hv;
	return 0;

err_dirty:
	kemari_dirty__fini(&s->dirty);
err_unmap:
	munmap(s->ram, s->ram_size);
err_free:
	pthread_mutex_destroy(&s->lock);
	free(s);
	return err;
}

static void synth__destroy(struct kemari_hv *hv)
{
	struct synth *s;

	if (!hv)
		return;
	s = to_synth(hv);
	if (s->out_fd >= 0)
		close(s->out_fd);
	kemari_dirty__fini(&s->dirty);
	munmap(s->ram, s->ram_size);
	pthread_mutex_destroy(&s->lock);
	free(s);
}

static int synth__load_guest(struct kemari_hv *hv, const char *path)
{
	struct synth *s = to_synth(hv);

	(void)path; /* the workload is built in */
	s->round = 0;
	s->pending = s->wrote = false;
	s->loaded = true;
	return 0;
}

static int synth__map_ram(struct kemari_hv *hv, void **base, uint64_t *size)
{
	struct synth *s = to_synth(hv);

	*base = s->ram;
	*size = s->ram_size;
	return 0;
}

/* The w-th page write of the workload (w = round * K + i) goes here. */
static uint64_t synth__pfn(const struct synth *s, uint64_t w)
{
	return SYNTH_BASE_PFN + w % s->ws;
}

/*
 * Write the round into its K pages, then mark them. Marking after the
 * write keeps a concurrent harvest safe (the speculation thread): a page
 * collected and read between the write and its mark is marked again and
 * goes out again, never lost.
 */
static void synth__round(struct synth *s)
{
	uint64_t w0 = s->round * s->pages;

	for (uint64_t i = 0; i < s->pages; i++) {
		uint64_t pfn = synth__pfn(s, w0 + i);
		uint64_t *p = (uint64_t *)(s->ram + pfn * KEMARI_PAGE_SIZE);

		p[0] = s->round + 1;
		p[1] = pfn ^ SYNTH_MAGIC;
	}
	pthread_mutex_lock(&s->lock);
	if (s->tracking)
		for (uint64_t i = 0; i < s->pages; i++)
			kemari_dirty__mark(&s->dirty, synth__pfn(s, w0 + i));
	pthread_mutex_unlock(&s->lock);
}

/* The event's output: the round's record at its own offset (idempotent). */
static int synth__release(struct kemari_event *ev)
{
	struct synth *s = kemari_container_of(ev, struct synth, ev);
	uint64_t rec = (s->round + 1) | s->writer << 48;

	if (!s->pending)
		return kemari_err(-EINVAL,
				  "internal: synthetic event released twice");
	if (s->out_fd >= 0 &&
	    pwrite(s->out_fd, &rec, sizeof(rec),
		   (off_t)(s->round * sizeof(rec))) != (ssize_t)sizeof(rec))
		return kemari_err(
			errno ? -errno : -EIO,
			"synthetic guest: writing round %llu to %s: %s",
			(unsigned long long)s->round, s->out_path,
			strerror(errno ? errno : EIO));
	s->pending = s->wrote = false;
	s->round++;
	return 0;
}

static void synth__think(struct synth *s, uint64_t *next_tick)
{
	uint64_t until = kemari_now_ns() + s->think_ns;

	for (;;) {
		uint64_t now = kemari_now_ns();
		uint64_t tick = s->hooks.tick_ms * 1000000ULL;
		struct timespec ts;
		uint64_t d;

		if (now >= *next_tick) {
			/* A failing tick is reported again by the engine at
			 * the next event; the guest goes on. */
			if (s->hooks.tick)
				s->hooks.tick(s->hooks.ctx);
			*next_tick = now + (tick ? tick : 20000000ULL);
		}
		if (now >= until || atomic_load(&s->stop))
			return;
		d = KEMARI_MIN(until, *next_tick) - now;
		ts.tv_sec = (time_t)(d / 1000000000ULL);
		ts.tv_nsec = (long)(d % 1000000000ULL);
		nanosleep(&ts, NULL);
	}
}

/* The synthetic guest serves nothing but its output file, shared. */
static int synth__detach(struct kemari_hv *hv)
{
	(void)hv;
	return 0;
}

static int synth__run(struct kemari_hv *hv)
{
	struct synth *s = to_synth(hv);
	uint64_t next_tick = 0;
	int err;

	if (!s->loaded)
		return kemari_err(-EINVAL,
				  "internal: no guest loaded or restored");
	/* Run again after a switchover (hv.h: detach): a stop is the
	 * engine's to check before it calls run. */
	atomic_store(&s->stop, false);
	s->ev.kind = KEMARI_EV_BLOCK;
	s->ev.release = synth__release;
	while (!atomic_load(&s->stop)) {
		if (s->pending) {
			/* Restored with its event in flight: re-issue it. */
			err = synth__release(&s->ev);
			if (err)
				return err;
		}
		if (s->rounds && s->round >= s->rounds) {
			/* Its own end, as the freestanding guests' exit port
			 * (no RIP: a host thread plays the vCPU). */
			kemari_info(
				"the guest powered off (status 0) after %llu rounds",
				(unsigned long long)s->round);
			return 0;
		}
		synth__round(s);
		s->wrote = true;
		synth__think(s, &next_tick);
		s->pending = true;
		err = s->hooks.event(s->hooks.ctx, &s->ev);
		if (err)
			return err;
		if (s->crashed)
			return kemari_err(
				-EFAULT,
				"synthetic guest crashed in round %llu (fault injection)",
				(unsigned long long)s->round);
		if (s->pending)
			return kemari_err(
				-EPROTO,
				"internal: the engine did not release the event of round %llu",
				(unsigned long long)s->round);
	}
	return 0;
}

static void synth__stop(struct kemari_hv *hv)
{
	atomic_store(&to_synth(hv)->stop, true);
}

/* The one vCPU is the thread in the event hook: nothing else runs. */
static int synth__pause(struct kemari_hv *hv)
{
	(void)hv;
	return 0;
}

static int synth__resume(struct kemari_hv *hv)
{
	(void)hv;
	return 0;
}

static int synth__dirty_start(struct kemari_hv *hv)
{
	struct synth *s = to_synth(hv);

	pthread_mutex_lock(&s->lock);
	kemari_dirty__clear(&s->dirty);
	s->tracking = true;
	pthread_mutex_unlock(&s->lock);
	return 0;
}

static int synth__collect_dirty(struct kemari_hv *hv, struct kemari_dirty *d)
{
	struct synth *s = to_synth(hv);

	pthread_mutex_lock(&s->lock);
	for (uint64_t i = 0; i < s->dirty.count; i++)
		kemari_dirty__mark(d, s->dirty.pfns[i]);
	kemari_dirty__clear(&s->dirty);
	pthread_mutex_unlock(&s->lock);
	return 0;
}

static int synth__save_cpu(struct kemari_hv *hv, struct kemari_buf *out)
{
	struct synth *s = to_synth(hv);
	struct synth_cpu c = {
		.magic = SYNTH_MAGIC,
		.round = s->round,
		.pages = s->pages,
		.ws = s->ws,
		.rounds = s->rounds,
		.wrote = s->wrote,
	};

	return kemari_tlv__put(out, SYNTH_TAG_CPU, &c, sizeof(c));
}

/* The one TLV element a state blob holds, of exactly size bytes. */
static int synth__state_get(const void *blob, size_t len, uint32_t want,
			    void *out, size_t size, const char *what)
{
	struct kemari_tlv_iter it = { blob, len };
	const void *val;
	uint32_t tag, n;

	if (kemari_tlv__next(&it, &tag, &val, &n) != 1 || tag != want ||
	    n != size)
		return kemari_err(-EBADMSG, "synthetic guest: malformed %s",
				  what);
	memcpy(out, val, size);
	return 0;
}

static int synth__load_cpu(struct kemari_hv *hv, const void *blob, size_t len)
{
	struct synth *s = to_synth(hv);
	struct synth_cpu c;
	int err = synth__state_get(blob, len, SYNTH_TAG_CPU, &c, sizeof(c),
				   "vCPU state");

	if (err)
		return err;
	if (c.magic != SYNTH_MAGIC || !c.pages || c.pages > c.ws ||
	    c.ws > s->npages - SYNTH_BASE_PFN)
		return kemari_err(
			-EBADMSG,
			"synthetic guest: vCPU state does not fit this guest (RAM %llu MiB)",
			(unsigned long long)(s->ram_size >> 20));
	s->round = c.round;
	s->pages = c.pages;
	s->ws = c.ws;
	s->rounds = c.rounds;
	s->wrote = c.wrote != 0;
	return 0;
}

static int synth__save_dev(struct kemari_hv *hv, struct kemari_buf *out)
{
	uint64_t pending = to_synth(hv)->pending;

	return kemari_tlv__put(out, SYNTH_TAG_DEV, &pending, sizeof(pending));
}

static int synth__load_dev(struct kemari_hv *hv, const void *blob, size_t len)
{
	uint64_t pending = 0;
	int err = synth__state_get(blob, len, SYNTH_TAG_DEV, &pending,
				   sizeof(pending), "device state");

	if (!err)
		to_synth(hv)->pending = pending != 0;
	return err;
}

/*
 * The value page j of the working set must hold after the writes
 * 0..total-1: the round of the last write that went to it, plus one (0
 * when none did).
 */
static uint64_t synth__expect(const struct synth *s, uint64_t j, uint64_t total)
{
	uint64_t w;

	if (total <= j)
		return 0;
	w = j + s->ws * ((total - 1 - j) / s->ws);
	return w / s->pages + 1;
}

/* The secondary's output file, after the handshake: never created. */
static int synth__open_disk(struct kemari_hv *hv)
{
	struct synth *s = to_synth(hv);
	int fd;

	if (!s->out_path)
		return 0;
	fd = open(s->out_path, O_RDWR | O_CLOEXEC);
	if (fd < 0 && errno == ENOENT)
		return kemari_err(
			-ENOENT,
			"disk %s does not exist here: a secondary never creates it; give it the primary's shared disk",
			s->out_path);
	if (fd < 0)
		return kemari_err(-errno, "synthetic guest: output file %s: %s",
				  s->out_path, strerror(errno));
	if (s->out_fd >= 0)
		close(s->out_fd);
	s->out_fd = fd;
	return 0;
}

/* Takeover: the replica must be exactly the state of the restored round. */
static int synth__reattach(struct kemari_hv *hv)
{
	struct synth *s = to_synth(hv);
	uint64_t total =
		(s->round + (s->pending || s->wrote ? 1 : 0)) * s->pages;

	if (s->out_path && s->out_fd < 0) {
		s->out_fd = open(s->out_path, O_RDWR | O_CLOEXEC);
		if (s->out_fd < 0)
			return kemari_err(-errno,
					  "synthetic guest: output file %s: %s",
					  s->out_path, strerror(errno));
	}

	for (uint64_t j = 0; j < s->ws; j++) {
		uint64_t pfn = SYNTH_BASE_PFN + j;
		const uint64_t *p =
			(const uint64_t *)(s->ram + pfn * KEMARI_PAGE_SIZE);
		uint64_t want = synth__expect(s, j, total);

		if (p[0] != want || (want && p[1] != (pfn ^ SYNTH_MAGIC)))
			return kemari_err(
				-EIO,
				"synthetic guest: page %llu holds round %llu, expected %llu: the replica is not the committed state",
				(unsigned long long)pfn,
				(unsigned long long)p[0],
				(unsigned long long)want);
	}
	kemari_info(
		"synthetic guest: replica verified at round %llu (%llu pages of the working set)%s",
		(unsigned long long)s->round, (unsigned long long)s->ws,
		s->pending ? "; re-issuing its event" : "");
	s->loaded = true;
	return 0;
}

static int synth__flush(struct kemari_hv *hv)
{
	struct synth *s = to_synth(hv);

	if (s->out_fd >= 0 && fdatasync(s->out_fd))
		return kemari_err(-errno, "synthetic guest: syncing %s: %s",
				  s->out_path, strerror(errno));
	return 0;
}

static int synth__guest_stat(struct kemari_hv *hv, unsigned int i,
			     uint64_t *val)
{
	if (i != 0)
		return -EINVAL;
	*val = to_synth(hv)->round;
	return 0;
}

static int synth__crash(struct kemari_hv *hv)
{
	to_synth(hv)->crashed = true;
	return 0;
}

const struct kemari_hv_ops kemari_hv_synth = {
	.name = "synth",
	.create = synth__create,
	.destroy = synth__destroy,
	.load_guest = synth__load_guest,
	.map_ram = synth__map_ram,
	.run = synth__run,
	.stop = synth__stop,
	.pause = synth__pause,
	.resume = synth__resume,
	.dirty_start = synth__dirty_start,
	.collect_dirty = synth__collect_dirty,
	.save_cpu = synth__save_cpu,
	.load_cpu = synth__load_cpu,
	.save_dev = synth__save_dev,
	.load_dev = synth__load_dev,
	.reattach = synth__reattach,
	.detach = synth__detach,
	.open_disk = synth__open_disk,
	.flush = synth__flush,
	.guest_stat = synth__guest_stat,
	.crash = synth__crash,
	.tsc_khz = kemari_hv__no_tsc_khz,
};
