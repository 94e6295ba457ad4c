// SPDX-License-Identifier: MIT
/*
 * Primary: initial sync, then one epoch per tapped event:
 * pause -> harvest dirty pages -> capture state -> push -> commit -> ack ->
 * release the event -> resume. The event's output leaves only after the
 * secondary holds an epoch that contains the request that caused it.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "engine_priv.h"
#include "kemari/kemari.h"

#define SYNC_CHUNK_PAGES 1024 /* 4 MiB per push during the initial sync */
#define HANDSHAKE_MS 10000

static int primary__send(struct kemari_engine *e, uint16_t type, uint64_t epoch,
			 const void *p, uint32_t len)
{
	int err = kemari_xport__send(e->conn, type, epoch, p, len);

	if (!err)
		e->last_tx_ns = kemari_now_ns();
	return err;
}

/* The run list goes as control messages, chunked to the transport's size. */
static int primary__send_runs(struct kemari_engine *e, uint64_t epoch,
			      const struct kemari_run *runs, size_t n,
			      struct kemari_commit *c)
{
	size_t per = kemari_xport__max_msg(e->conn) / sizeof(*runs);

	c->nruns = n;
	c->npages = 0;
	c->runs_crc = kemari_crc32c(0, runs, n * sizeof(*runs));
	for (size_t i = 0; i < n; i++)
		c->npages += runs[i].npages;
	for (size_t off = 0; off < n; off += per) {
		size_t k = KEMARI_MIN(per, n - off);
		int err = primary__send(e, KEMARI_MSG_RUNS, epoch, runs + off,
					(uint32_t)(k * sizeof(*runs)));

		if (err)
			return err;
	}
	return 0;
}

/* vCPU and device state of the paused guest, into e->cpu/dev_state. */
static int primary__capture_state(struct kemari_engine *e)
{
	int err;

	kemari_buf__reset(&e->cpu_state);
	kemari_buf__reset(&e->dev_state);
	err = kemari_hv__save_cpu(e->hv, &e->cpu_state);
	err = err ?: kemari_hv__save_dev(e->hv, &e->dev_state);
	if (err)
		return err;
	if (e->cpu_state.len > kemari_xport__max_msg(e->conn) ||
	    e->dev_state.len > kemari_xport__max_msg(e->conn))
		return kemari_err(-EMSGSIZE, "vCPU/device state too large");
	return 0;
}

/*
 * --verify-restore: the state just saved, loaded back into this VM before
 * the guest resumes. Whatever the save misses (a register, an MSR, a
 * device's queue index) is then lost here, every epoch, on the primary,
 * where it shows as a guest that misbehaves long before a takeover would.
 */
static int primary__restore_own(struct kemari_engine *e)
{
	int err = kemari_hv__load_cpu(e->hv, e->cpu_state.data,
				       e->cpu_state.len);

	err = err
		      ?: kemari_hv__load_dev(e->hv, e->dev_state.data,
					      e->dev_state.len);
	if (err)
		return kemari_err(
			err,
			"--verify-restore: this VM refused its own saved state: %s",
			kemari_last_error(err));
	e->restores++;
	return 0;
}

/* The captured state as the epoch's CPU_STATE and DEV_STATE messages. */
static int primary__send_state(struct kemari_engine *e, uint64_t epoch)
{
	int err = primary__send(e, KEMARI_MSG_CPU_STATE, epoch,
				e->cpu_state.data, (uint32_t)e->cpu_state.len);

	return err
		       ?: primary__send(e, KEMARI_MSG_DEV_STATE, epoch,
					e->dev_state.data,
					(uint32_t)e->dev_state.len);
}

static void primary__note_applied(struct kemari_engine *e,
				  const struct kemari_msg *m)
{
	struct kemari_ack a;

	if (m->len != sizeof(a))
		return;
	memcpy(&a, m->payload, sizeof(a));
	if (a.applied_next > e->applied_next)
		e->applied_next = a.applied_next;
}

/*
 * Wait for the ack of epoch. The secondary is dead after timeout_ms of
 * silence; one that keeps sending heartbeats (while it applies a large
 * epoch, say) is alive and waited for, up to max(timeout_ms, 30 s) in all.
 */
static int primary__wait_ack(struct kemari_engine *e, uint64_t epoch,
			     unsigned int timeout_ms)
{
	const uint64_t limit = (uint64_t)timeout_ms * 1000000ULL;
	uint64_t t0 = kemari_now_ns();
	uint64_t cap =
		t0 + (uint64_t)KEMARI_MAX(timeout_ms, 30000u) * 1000000ULL;
	struct kemari_silence quiet;

	kemari_silence__heard(&quiet, t0);
	for (;;) {
		struct kemari_msg m;
		uint64_t now = kemari_now_ns();
		/* Without this side's own pauses (engine__silence). */
		uint64_t silent =
			engine__silence(e, &quiet, now, timeout_ms, false);
		int err;

		if (silent >= limit || now >= cap)
			return kemari_err(
				-ETIMEDOUT,
				"no acknowledgement of epoch %llu within %llu ms",
				(unsigned long long)epoch,
				(unsigned long long)((now - t0) / 1000000));
		/* Waits of a quarter of the timeout at most: a longer gap
		 * between two looks is a pause of this side's own. */
		err = kemari_xport__recv(
			e->conn, &m,
			(int)(KEMARI_MIN(limit - silent, limit / 4) / 1000000) +
				1);
		if (err == -ETIMEDOUT)
			continue;
		if (err)
			return err;
		e->last_rx_ns = kemari_now_ns();
		kemari_silence__heard(&quiet, e->last_rx_ns);
		switch (m.type) {
		case KEMARI_MSG_ACK:
			if (m.epoch != epoch)
				return kemari_err(
					-EPROTO,
					"secondary acknowledged epoch %llu, expected %llu",
					(unsigned long long)m.epoch,
					(unsigned long long)epoch);
			primary__note_applied(e, &m);
			return 0;
		case KEMARI_MSG_HEARTBEAT:
			break;
		case KEMARI_MSG_REFUSE:
			return kemari_err(-EPROTO, "secondary refused: %.*s",
					  (int)m.len, (const char *)m.payload);
		case KEMARI_MSG_BYE:
			return kemari_err(-ECONNRESET,
					  "the secondary shut down");
		default:
			return kemari_err(-EPROTO,
					  "unexpected %s from the secondary",
					  kemari_wire__type_name(m.type));
		}
	}
}

/* The secondary is gone: carry on unprotected (or hold, per policy). */
static void primary__lose_secondary(struct kemari_engine *e, int err)
{
	const char *why = kemari_last_error(err);

	if (e->cfg.on_secondary_loss == KEMARI_LOSS_PAUSE) {
		kemari_error(
			"secondary lost (%s); guest paused per --on-secondary-loss=pause: restart a secondary and the primary, or stop with SIGTERM",
			why);
		e->paused_for_loss = true;
	} else {
		kemari_warn("secondary lost (%s); continuing unprotected", why);
	}
	kemari_err_clear();
	e->protected = false;
	atomic_store(&e->state, KEMARI_STATE_UNPROTECTED);
	if (e->conn) {
		kemari_xport__close(e->conn);
		e->conn = NULL;
	}
	/*
	 * Output from here on is covered by no acknowledged commit: only
	 * after winning the fence, at once (a secondary that took over has
	 * won it first, and this side then stops without releasing more).
	 * A paused guest releases nothing and does not compete.
	 */
	if (e->fence.fd >= 0) {
		e->fence_need_win = true;
		if (!e->paused_for_loss)
			engine__fence_win(e, "primary");
	}
}

static void primary__progress(struct kemari_engine *e, uint64_t done,
			      uint64_t total, int *last_pct)
{
	int pct = (int)(done * 100 / total);
	int tty = isatty(STDERR_FILENO);
	char bar[41];

	if (!e->cfg.progress || pct == *last_pct ||
	    (!tty && pct % 25 && done != total))
		return;
	*last_pct = pct;
	for (int i = 0; i < 40; i++)
		bar[i] = i < pct * 40 / 100 ? '#' : ' ';
	bar[40] = 0;
	fprintf(stderr, "%sinitial sync [%s] %3d%% %llu/%llu MiB%s",
		tty ? "\r" : "", bar, pct,
		(unsigned long long)(done * KEMARI_PAGE_SIZE >> 20),
		(unsigned long long)(total * KEMARI_PAGE_SIZE >> 20),
		tty && done != total ? "" : "\n");
}

int primary__handshake(struct kemari_engine *e)
{
	struct kemari_hello h, w;
	struct kemari_msg m;
	int err;

	e->bank = 0; /* a new connection: its first epoch lands in bank 0 */
	/* The secondary proves the key before it hears about our guest. */
	if (e->have_key) {
		err = kemari_auth__primary(e->conn, &e->key, HANDSHAKE_MS);
		if (err) {
			char why[512];

			snprintf(why, sizeof(why), "%s",
				 kemari_last_error(err));
			/* A secondary with --tls hangs up on a frame in the
			 * clear: say so, it is the likely cause. */
			return kemari_err_override(
				err,
				"authentication with the secondary at %s failed: %s%s",
				e->cfg.peer, why,
				err == -ECONNRESET && !e->cfg.tls
					? " (does the secondary use --tls? then give it here too)"
					: "");
		}
	}
	err = engine__handshake_hello(e, &h);
	err = err ?: primary__send(e, KEMARI_MSG_HELLO, 0, &h, sizeof(h));
	if (err)
		return err;
	err = kemari_xport__recv(e->conn, &m, HANDSHAKE_MS);
	if (err == -ETIMEDOUT)
		return kemari_err(
			err,
			"the secondary at %s did not answer the handshake within %d s",
			e->cfg.peer, HANDSHAKE_MS / 1000);
	if (err)
		return err;
	if (m.type == KEMARI_MSG_REFUSE)
		return kemari_err(-EPROTO, "the secondary refused: %.*s",
				  (int)m.len, (const char *)m.payload);
	if (m.type != KEMARI_MSG_WELCOME || m.len != sizeof(w))
		return kemari_err(
			-EPROTO,
			"the peer at %s is not a Kemari secondary (sent %s)",
			e->cfg.peer, kemari_wire__type_name(m.type));
	memcpy(&w, m.payload, sizeof(w));
	if (w.proto_version != h.proto_version || w.ram_size != h.ram_size ||
	    w.image_hash != h.image_hash ||
	    memcmp(w.disk_id, h.disk_id, sizeof(h.disk_id)) ||
	    w.fence_gen != h.fence_gen)
		return kemari_err(
			-EPROTO,
			"the secondary's handshake disagrees with ours");
	return kemari_xport__reg_src(e->conn, e->ram, e->ram_size);
}

/*
 * All of RAM into the secondary's receive buffers, in chunks, with
 * heartbeats (pushes are invisible to a one-sided receiver) and the
 * progress bar. Before the first run (the initial sync) or while the guest
 * runs (re-protection: pages it writes meanwhile are dirty again and go
 * out again before the commit).
 */
int primary__push_all(struct kemari_engine *e, bool initial)
{
	int last_pct = -1, err;

	for (uint64_t pfn = 0; pfn < e->npages; pfn += SYNC_CHUNK_PAGES) {
		struct kemari_run r = {
			.pfn = pfn,
			.npages = (uint32_t)KEMARI_MIN(
				(uint64_t)SYNC_CHUNK_PAGES, e->npages - pfn),
		};

		if (initial && pfn >= e->npages / 2)
			engine__fault(e, KEMARI_FAULT_SYNC, 0);
		if (atomic_load(&e->stop))
			return kemari_err(-ECANCELED, "stopped");
		err = primary__push(e, &r, 1);
		if (err)
			return err;
		primary__progress(e, pfn + r.npages, e->npages, &last_pct);
		err = primary__beat(e);
		if (err)
			return err;
	}
	return kemari_xport__flush(e->conn);
}

/* A heartbeat if the last message is a period old. */
int primary__beat(struct kemari_engine *e)
{
	if (kemari_now_ns() - e->last_tx_ns <
	    (uint64_t)e->cfg.heartbeat_ms * 1000000ULL)
		return 0;
	return primary__send(e, KEMARI_MSG_HEARTBEAT, e->epoch, NULL, 0);
}

/*
 * Epoch epoch as the first one of this secondary (the guest paused, its
 * pages already pushed): the run list is all of RAM, so the secondary
 * copies its whole receive buffers into the replica, then the state and
 * COMMIT with KEMARI_COMMIT_INITIAL. On the ack the guest is protected.
 */
int primary__commit_initial(struct kemari_engine *e, uint64_t epoch)
{
	struct kemari_run all = { .pfn = 0, .npages = (uint32_t)e->npages };
	struct kemari_commit c;
	int err = 0;

	if (e->cfg.verify_every)
		err = verify__primary(e, epoch, true);
	err = err ?: primary__send_runs(e, epoch, &all, 1, &c);
	err = err ?: primary__capture_state(e);
	err = err ?: primary__send_state(e, epoch);
	/* The commit must not overtake the pages it covers. */
	err = err ?: kemari_xport__flush(e->conn);
	if (err)
		return err;
	/* A new secondary: what an earlier one applied means nothing. */
	e->applied_next = 0;
	c.flags = KEMARI_COMMIT_INITIAL;
	err = primary__send(e, KEMARI_MSG_COMMIT, epoch, &c, sizeof(c));
	/* Applying all of RAM takes the secondary a while. */
	err = err
		      ?: primary__wait_ack(
				 e, epoch,
				 KEMARI_MAX(e->cfg.heartbeat_timeout_ms,
					    30000u));
	if (err)
		return err;
	e->bank ^= 1;
	e->epoch = e->initial_epoch = epoch;
	e->protected = true;
	atomic_store(&e->state, KEMARI_STATE_PROTECTED);
	e->last_rx_ns = kemari_now_ns();
	return 0;
}

/* Everything, before the guest runs its first instruction: epoch 0. */
static int primary__initial_sync(struct kemari_engine *e)
{
	uint64_t t0 = kemari_now_ns();
	int err;

	err = kemari_hv__dirty_start(e->hv);
	err = err ?: primary__push_all(e, true);
	err = err ?: primary__commit_initial(e, 0);
	if (err)
		return err;
	kemari_info(
		"initial sync: %llu MiB to %s in %llu ms; the guest starts protected",
		(unsigned long long)(e->ram_size >> 20), e->cfg.peer,
		(unsigned long long)((kemari_now_ns() - t0) / 1000000));
	return 0;
}

/*
 * Push runs into the bank of the open epoch. One-sided writes land in the
 * secondary's receive buffers at once, while it may still be copying the
 * last epoch out of them into its replica: so it keeps two banks, and epoch
 * N+1 lands in the one N does not use. It copies an epoch out before it
 * reads the next COMMIT, so its ACK of N+1 says N is in the replica and
 * N's bank is free for N+2: the primary never waits for the copy, and no
 * message says it ended (protocol version 7; before, an APPLIED message
 * after every epoch, waited for before the next push).
 */
int primary__push(struct kemari_engine *e, const struct kemari_run *runs,
		  size_t n)
{
	uint64_t off = kemari_xport__has(e->conn, KEMARI_XPORT_CAP_ONESIDED)
			       ? e->bank * e->ram_size
			       : 0;

	return kemari_xport__push(e->conn, runs, n, off);
}

/*
 * Push what was dirtied since the last push and add it to the open epoch.
 * Runs are computed from e->dirty; on return e->runs and *nruns describe
 * the pages just pushed (the epoch's whole list when nothing was pushed
 * before). With max_runs > 0 (--fault=mid-push) only the first max_runs
 * runs go out, flushed, and nothing is marked or cleared (a full push after
 * it sends them again): the fault then stops the primary inside the very
 * push every epoch makes.
 */
static int primary__push_pending(struct kemari_engine *e, long *nruns,
				 long max_runs)
{
	long n = kemari_dirty__runs(&e->dirty, &e->runs, &e->runs_cap, 0);
	int err;

	if (n < 0)
		return (int)n;
	if (max_runs > 0) {
		err = primary__push(e, e->runs,
				    (size_t)KEMARI_MIN(max_runs, n));
		return err ?: kemari_xport__flush(e->conn);
	}
	err = primary__push(e, e->runs, (size_t)n);
	if (err)
		return err;
	for (uint64_t i = 0; i < e->dirty.count; i++)
		kemari_dirty__mark(&e->epoch_set, e->dirty.pfns[i]);
	kemari_dirty__clear(&e->dirty);
	*nruns = n;
	return 0;
}

/* One epoch; the event is released by the caller. xlock held. */
static int primary__checkpoint(struct kemari_engine *e, uint64_t t0,
			       struct kemari_epoch_stats *s)
{
	uint64_t epoch = e->epoch + 1, t1, t2, t3;
	bool spec = e->epoch_set.count > 0;
	struct kemari_commit c;
	long n;
	int err;

	s->epoch = epoch;
	s->spec_pages = e->spec_pages;
	if (e->cfg.full_copy)
		kemari_dirty__mark_all(&e->dirty);
	err = kemari_hv__collect_dirty(e->hv, &e->dirty);
	if (!err && e->cfg.verify_every)
		err = verify__primary(e, epoch, false);
	if (err)
		return err;
	t1 = kemari_now_ns();
	err = primary__capture_state(e);
	if (err)
		return err;
	t2 = kemari_now_ns();
	engine__fault(e, KEMARI_FAULT_BEFORE_PUSH, epoch);
	if (engine__fault_due(e, KEMARI_FAULT_MID_PUSH, epoch) &&
	    e->dirty.count > 0) {
		/* Half of the epoch's runs (at least one), then the fault. */
		long all = kemari_dirty__runs(&e->dirty, &e->runs,
					      &e->runs_cap, 0);

		if (all < 0)
			return (int)all;
		err = primary__push_pending(e, &n, (all + 1) / 2);
		if (err)
			return err;
		engine__fault(e, KEMARI_FAULT_MID_PUSH, epoch);
	}
	err = primary__push_pending(e, &n, 0);
	if (err)
		return err;
	/* Without speculation the pages just pushed are the whole epoch. */
	if (spec) {
		n = kemari_dirty__runs(&e->epoch_set, &e->runs, &e->runs_cap,
				       0);
		if (n < 0)
			return (int)n;
	}
	s->dirty_pages = e->epoch_set.count;
	s->runs = (uint64_t)n;
	s->bytes = s->dirty_pages * KEMARI_PAGE_SIZE;
	err = primary__send_runs(e, epoch, e->runs, (size_t)n, &c);
	err = err ?: primary__send_state(e, epoch);
	/* The commit must not overtake the pages it covers. */
	err = err ?: kemari_xport__flush(e->conn);
	if (err)
		return err;
	t3 = kemari_now_ns();
	engine__fault(e, KEMARI_FAULT_AFTER_PUSH, epoch);
	c.flags = 0;
	err = primary__send(e, KEMARI_MSG_COMMIT, epoch, &c, sizeof(c));
	if (err)
		return err;
	engine__fault(e, KEMARI_FAULT_AFTER_COMMIT, epoch);
	/*
	 * The first epoch's ack may still wait for the secondary to finish
	 * applying the initial sync (all of RAM): as long as that one may
	 * take. After it, an ack later than the heartbeat timeout is a lost
	 * secondary.
	 */
	err = primary__wait_ack(
		e, epoch,
		epoch == e->initial_epoch + 1
			? KEMARI_MAX(e->cfg.heartbeat_timeout_ms, 30000u)
			: e->cfg.heartbeat_timeout_ms);
	if (err)
		return err;
	e->bank ^= 1;
	e->epoch = epoch;
	kemari_dirty__clear(&e->epoch_set);
	e->spec_pages = 0;
	s->harvest_us = (t1 - t0) / 1000;
	s->state_us = (t2 - t1) / 1000;
	s->push_us = (t3 - t2) / 1000;
	s->commit_ack_us = (kemari_now_ns() - t3) / 1000;
	engine__fault(e, KEMARI_FAULT_AFTER_ACK, epoch);
	if (!e->frozen && e->cfg.fault_hook &&
	    engine__fault_due(e, KEMARI_FAULT_FREEZE_AFTER_ACK, epoch)) {
		kemari_warn(
			"fault injection: freezing (SIGSTOP) after the ack of epoch %llu, before its output",
			(unsigned long long)epoch);
		e->frozen = true;
		e->cfg.fault_hook(KEMARI_FAULT_FREEZE_AFTER_ACK, epoch);
	}
	if (e->cfg.verify_restore) {
		err = primary__restore_own(e);
		if (err)
			return err;
	}
	if (!e->crash_injected &&
	    engine__fault_due(e, KEMARI_FAULT_GUEST_CRASH, epoch)) {
		kemari_warn(
			"fault injection: the guest dies after epoch %llu was acknowledged",
			(unsigned long long)epoch);
		e->crash_injected = true;
		return kemari_hv__crash(e->hv);
	}
	return 0;
}

/*
 * Testing: a pause as long as a slow or overloaded host makes one, inside
 * the paused window (--stretch-pause), to show what a long pause does to
 * the guest.
 */
static void primary__stretch(struct kemari_engine *e)
{
	struct timespec ts;

	if (!e->cfg.stretch_pause_ms || !e->cfg.stretch_every ||
	    (e->epoch + 1) % e->cfg.stretch_every)
		return;
	ts.tv_sec = e->cfg.stretch_pause_ms / 1000;
	ts.tv_nsec = (long)(e->cfg.stretch_pause_ms % 1000) * 1000000L;
	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

/*
 * Speculation: while the guest runs, push what it dirtied, so the tap only
 * sends what changed since. Dirty tracking is re-armed (harvest clears it)
 * before a page is read for sending, so a page written after that is dirty
 * again and goes out again at the tap: the shadow may hold torn copies
 * mid-epoch, never at a commit.
 */
static void *primary__speculate(void *arg)
{
	struct kemari_engine *e = arg;
	struct timespec ts = { 0, (long)e->cfg.speculate_us * 1000L };

	while (!atomic_load(&e->stop) && e->spec_running) {
		long n;
		int err;

		nanosleep(&ts, NULL);
		if (atomic_load(&e->tap_waiting) ||
		    pthread_mutex_trylock(&e->xlock))
			continue;
		if (e->protected && !atomic_load(&e->tap_waiting)) {
			uint64_t before = e->epoch_set.count;

			err = kemari_hv__collect_dirty(e->hv, &e->dirty);
			err = err ?: primary__push_pending(e, &n, 0);
			/* A failure here shows again at the tap or tick. */
			if (!err)
				e->spec_pages += e->epoch_set.count - before;
		}
		pthread_mutex_unlock(&e->xlock);
	}
	return NULL;
}

/*
 * Heartbeats on their own thread. The guest's loop (the tick, on vCPU 0's
 * thread) beats too, but that thread also serves the guest's released
 * output, and a released disk FLUSH is an fdatasync that a host busy
 * writing back (CI, right after building) held for over 200 ms: the
 * secondary heard nothing for its whole timeout and took over from a
 * primary that was only waiting for its disk (CI stop 22's and a fresh
 * run's kill9_at_random_moment). This thread keeps the beat while that
 * loop is slow, not while it is wedged: once the loop has not ticked for
 * ten heartbeat timeouts it stops beating, and the secondary takes over
 * from a primary whose guest no longer runs.
 *
 * It also says this side's own pauses: it only sleeps a period and beats
 * (never waiting for a lock or the guest), so a gap between two of its
 * wakes longer than the grace is its process or host stalled. The guest's
 * loop counts such a gap against its own silences without saying it: it
 * also waits for its disk or a big epoch, which is not a pause.
 */
static void *primary__heartbeats(void *arg)
{
	struct kemari_engine *e = arg;
	const uint64_t period = (uint64_t)e->cfg.heartbeat_ms * 1000000ULL;
	const uint64_t wedged =
		(uint64_t)e->cfg.heartbeat_timeout_ms * 10000000ULL;
	const uint64_t grace = engine__grace(e, e->cfg.heartbeat_timeout_ms);
	struct timespec ts = { (time_t)(period / 1000000000ULL),
			       (long)(period % 1000000000ULL) };
	uint64_t woke = kemari_now_ns();
	bool said = false;

	while (!atomic_load(&e->stop) && atomic_load(&e->hb_running)) {
		uint64_t idle, now;

		nanosleep(&ts, NULL);
		now = kemari_now_ns();
		if (now - woke > grace)
			engine__own_pause(e, now - woke);
		woke = now;
		if (!atomic_load(&e->protected) ||
		    atomic_load(&e->fenced_out) || atomic_load(&e->tap_waiting))
			continue;
		idle = kemari_now_ns() - atomic_load(&e->last_tick_ns);
		if (idle > wedged) {
			if (!said)
				kemari_warn(
					"the guest's loop has not run for %llu ms: no more heartbeats, so that the secondary takes over",
					(unsigned long long)(idle / 1000000));
			said = true;
			continue;
		}
		said = false;
		if (pthread_mutex_trylock(&e->xlock))
			continue; /* an epoch's traffic keeps the peer's timer */
		/* A failure shows again at the tick, which handles it;
		 * after a switchover's last epoch only its end speaks. */
		if (atomic_load(&e->protected) && !e->switched)
			(void)primary__beat(e);
		pthread_mutex_unlock(&e->xlock);
	}
	return NULL;
}

/* Hold a guest whose protection is gone, per --on-secondary-loss=pause. */
static int primary__hold(struct kemari_engine *e)
{
	while (!atomic_load(&e->stop))
		usleep(20000);
	return 0;
}

/*
 * Planned switchover, on the vCPU thread at a tap or tick: one more epoch,
 * committed as usual; then the VM stops here and the tapped event stays
 * unreleased (the secondary re-issues it, as after any takeover at that
 * point). True when the secondary holds that epoch; on a failure the
 * secondary counts as lost and the guest runs on here.
 */
static bool primary__switch(struct kemari_engine *e)
{
	struct kemari_epoch_stats s = { 0 };
	uint64_t t0 = kemari_now_ns();
	int err;

	atomic_store(&e->switch_req, false);
	pthread_mutex_lock(&e->xlock);
	err = kemari_hv__pause(e->hv);
	if (err) {
		pthread_mutex_unlock(&e->xlock);
		kemari_warn("switchover: cannot pause the guest: %s",
			    kemari_last_error(err));
		kemari_err_clear();
		return false;
	}
	err = primary__checkpoint(e, t0, &s);
	if (err) {
		kemari_warn("switchover failed: %s", kemari_last_error(err));
		primary__lose_secondary(e, err);
		pthread_mutex_unlock(&e->xlock);
		kemari_hv__resume(e->hv);
		return false;
	}
	s.pause_us = (kemari_now_ns() - t0) / 1000;
	metrics__record(&e->metrics, &s);
	e->switched = true;
	pthread_mutex_unlock(&e->xlock);
	/* Stopped before the parked vCPUs are let go: none runs again. */
	kemari_hv__stop(e->hv);
	kemari_hv__resume(e->hv);
	return true;
}

/* A switchover asked for is done now (true: the guest stops here). */
static bool primary__switching(struct kemari_engine *e)
{
	return e->switched || (e->protected && atomic_load(&e->switch_req) &&
			       primary__switch(e));
}

/*
 * Re-protection's last round (reprotect.c), on the vCPU thread: the guest
 * paused and left paused for the caller to resume. 0, or pause's error.
 */
static int primary__last_round(struct kemari_engine *e)
{
	int err;

	pthread_mutex_lock(&e->xlock);
	err = kemari_hv__pause(e->hv);
	if (!err)
		reprotect__finish(e);
	pthread_mutex_unlock(&e->xlock);
	return err;
}

int primary__event(void *ctx, struct kemari_event *ev)
{
	struct kemari_engine *e = ctx;
	struct kemari_epoch_stats s = { 0 };
	uint64_t t0, t_lock;
	int err;

	if (primary__switching(e))
		return -ECANCELED; /* the guest stops here, nothing released */
	if (e->paused_for_loss)
		return primary__hold(e);
	if (!e->protected && reprotect__ready(e)) {
		/* A new secondary waits for the last round: in this pause. */
		err = primary__last_round(e);
		err = err ?: engine__release(e, ev);
		kemari_hv__resume(e->hv);
		return err;
	}
	if (!e->protected)
		return engine__release(e, ev);
	t0 = kemari_now_ns();
	atomic_store(&e->tap_waiting, true);
	pthread_mutex_lock(&e->xlock);
	atomic_store(&e->tap_waiting, false);
	/* A speculative push in flight finishes first: its own phase. */
	t_lock = kemari_now_ns();
	s.spec_wait_us = (t_lock - t0) / 1000;
	err = kemari_hv__pause(e->hv);
	if (err) {
		pthread_mutex_unlock(&e->xlock);
		return err;
	}
	primary__stretch(e);
	err = primary__checkpoint(e, t_lock, &s);
	if (err) {
		primary__lose_secondary(e, err);
		pthread_mutex_unlock(&e->xlock);
		if (e->paused_for_loss) {
			kemari_hv__resume(e->hv);
			return primary__hold(e);
		}
	} else {
		s.pause_us = (kemari_now_ns() - t0) / 1000;
		pthread_mutex_unlock(&e->xlock);
		metrics__record(&e->metrics, &s);
	}
	err = engine__release(e, ev);
	kemari_hv__resume(e->hv);
	return err;
}

int primary__tick(void *ctx)
{
	struct kemari_engine *e = ctx;
	struct kemari_msg m;
	int err = 0;

	atomic_store(&e->last_tick_ns, kemari_now_ns());
	engine__tick_common(e);
	if (primary__switching(e))
		return -ECANCELED;
	if (!e->protected && reprotect__ready(e)) {
		/* An idle guest taps nothing: the last round goes here. */
		err = primary__last_round(e);
		if (!err)
			kemari_hv__resume(e->hv);
		return err;
	}
	if (!e->protected)
		return 0;
	/* Busy speculating: that traffic keeps the peer's timer alive. */
	if (pthread_mutex_trylock(&e->xlock))
		return 0;
	if (!e->protected) {
		pthread_mutex_unlock(&e->xlock);
		return 0;
	}
	/* After the lock: an epoch may have just sent (a time taken before
	 * would be older than last_tx_ns and send a needless heartbeat). */
	err = primary__beat(e);
	while (!err) {
		err = kemari_xport__recv(e->conn, &m, 0);
		if (err == -ETIMEDOUT) {
			err = 0;
			break;
		}
		if (err)
			break;
		e->last_rx_ns = kemari_now_ns();
		if (m.type == KEMARI_MSG_BYE)
			err = kemari_err(-ECONNRESET,
					 "the secondary shut down");
		else if (m.type != KEMARI_MSG_HEARTBEAT)
			err = kemari_err(-EPROTO,
					 "unexpected %s from the secondary",
					 kemari_wire__type_name(m.type));
	}
	metrics__silence(e, kemari_now_ns());
	/* This side's own pauses do not count (engine__silence). */
	if (!err && engine__silence(e, NULL, kemari_now_ns(),
				    e->cfg.heartbeat_timeout_ms, false) >
			    (uint64_t)e->cfg.heartbeat_timeout_ms * 1000000ULL)
		err = kemari_err(-ETIMEDOUT,
				 "no heartbeat from the secondary for %u ms",
				 e->cfg.heartbeat_timeout_ms);
	if (err)
		primary__lose_secondary(e, err);
	pthread_mutex_unlock(&e->xlock);
	if (err && e->paused_for_loss)
		return primary__hold(e);
	if (atomic_load(&e->fenced_out))
		return kemari_err_override(-ESTALE, "%s", e->fence_why);
	return 0;
}

/*
 * The guest stopped running here. Only an end someone chose is orderly: the
 * operator's stop (SIGINT, SIGTERM) or the guest's own clean poweroff
 * (status 0). A guest that died (triple fault, panic, KVM internal error,
 * failed VM entry) or a VMM that failed is a failure like a dead host: the
 * secondary holds the last acknowledged state and must serve from it, even
 * if a deterministic guest bug then strikes there too.
 */
/*
 * The last word (BYE or FAILED), then wait up to a second for the
 * secondary to hang up: it closes as soon as it has read it. Closing at
 * once could overtake the message on a transport that sends in the
 * background (ofi's tcp provider flushed it: the secondary then saw only
 * a lost connection, not why).
 */
static void primary__last_word(struct kemari_engine *e, uint16_t type)
{
	uint64_t until = kemari_now_ns() + 1000000000ULL;
	struct kemari_msg m;

	if (!e->conn || primary__send(e, type, e->epoch, NULL, 0) ||
	    kemari_xport__flush(e->conn))
		return;
	while (kemari_now_ns() < until &&
	       kemari_xport__recv(e->conn, &m, 100) != -ECONNRESET)
		;
}

static void primary__hand_over(struct kemari_engine *e, int status)
{
	if (atomic_load(&e->stop) || status == 0) {
		primary__last_word(e, KEMARI_MSG_BYE);
		return;
	}
	/* The cause itself is the run's error, which cmd/ prints. */
	if (status > 0)
		kemari_warn(
			"the guest ended with status %d, not a clean poweroff: the secondary takes over from epoch %llu",
			status, (unsigned long long)e->epoch);
	else
		kemari_warn(
			"the guest or the VMM failed: the secondary takes over from epoch %llu",
			(unsigned long long)e->epoch);
	/* If this does not arrive, the heartbeat timeout does the same. */
	primary__last_word(e, KEMARI_MSG_FAILED);
}

int primary__run(struct kemari_engine *e)
{
	int status, err;

	err = kemari_dirty__init(&e->dirty, e->npages);
	err = err ?: kemari_dirty__init(&e->epoch_set, e->npages);
	if (err)
		return err;
	err = kemari_xport__connect(e->cfg.xport, &e->conn, e->cfg.peer,
				    &e->cfg.xport_opts);
	if (err)
		return err;
	e->last_rx_ns = e->last_tx_ns = kemari_now_ns();
	err = primary__handshake(e);
	err = err ?: primary__initial_sync(e);
	if (err) {
		kemari_err(err, "initial sync failed");
		return err;
	}
	status = primary__serve(e);
	if (e->cfg.verify_restore)
		kemari_info(
			"restore check: the guest ran on its own restored state after each of %llu epochs",
			(unsigned long long)e->restores);
	return status;
}

/*
 * After the switchover's last epoch, the VM stopped and its disk flushed:
 * the service address let go, then SWITCHOVER. The secondary takes over
 * from that epoch at once; this side waits as its secondary (--listen,
 * kemari_engine__run) or ends.
 */
static int primary__switch_out(struct kemari_engine *e)
{
	int err = kemari_hv__detach(e->hv);

	if (err) {
		kemari_warn("switchover: %s", kemari_last_error(err));
		kemari_err_clear();
	}
	primary__last_word(e, KEMARI_MSG_SWITCHOVER);
	kemari_err_clear();
	kemari_xport__close(e->conn);
	e->conn = NULL;
	e->protected = false;
	atomic_store(&e->state, KEMARI_STATE_UNPROTECTED);
	kemari_info("switchover: the secondary at %s serves the guest from epoch %llu; %s%s",
		    e->cfg.peer, (unsigned long long)e->epoch,
		    e->cfg.listen ? "this side waits as its secondary on "
				  : "this side ends",
		    e->cfg.listen ? e->cfg.listen : "");
	return 0;
}

int primary__serve(struct kemari_engine *e)
{
	int status, err;

	if (e->cfg.speculate_us) {
		e->spec_running = true;
		if (pthread_create(&e->spec_thread, NULL, primary__speculate,
				   e))
			e->spec_running = false;
	}
	atomic_store(&e->last_tick_ns, kemari_now_ns());
	atomic_store(&e->hb_running, true);
	if (pthread_create(&e->hb_thread, NULL, primary__heartbeats, e))
		atomic_store(&e->hb_running, false);
	err = reprotect__start(e);
	if (err)
		kemari_warn("%s: serving without re-protection",
			    kemari_last_error(err));
	status = engine__run_guest(e);
	reprotect__stop(e);
	if (atomic_exchange(&e->hb_running, false))
		pthread_join(e->hb_thread, NULL);
	if (e->spec_running) {
		e->spec_running = false;
		pthread_join(e->spec_thread, NULL);
	}
	verify__report(e, true);
	if (e->switched)
		return primary__switch_out(e);
	/* Fenced out: the secondary serves; say nothing to it. */
	if (e->protected && !atomic_load(&e->fenced_out)) {
		char why[1024];

		/* The run's own error is what cmd/ prints, not one the last
		 * word ran into (rdma and ofi clear and record theirs). */
		snprintf(why, sizeof(why), "%s",
			 status < 0 ? kemari_last_error(status) : "");
		primary__hand_over(e, status);
		if (status < 0)
			kemari_err_override(status, "%s", why);
	}
	return status;
}
