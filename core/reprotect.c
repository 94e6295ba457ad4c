// SPDX-License-Identifier: MIT
/*
 * Re-protection: a side that serves alone (a primary that lost its
 * secondary, or a secondary that took over) brings a new secondary in at
 * --peer while the guest runs, the way live migration moves a VM:
 *
 *   1. connect and handshake, tried every --reprotect-ms until one listens;
 *   2. dirty tracking re-armed, then all of RAM pushed while the guest runs
 *      (a page it writes after the re-arm is dirty again);
 *   3. rounds of what the guest dirtied meanwhile, until the rest is small
 *      or stops shrinking;
 *   4. the last round in one pause, on the vCPU thread at its next tap or
 *      tick (where pausing is allowed): the rest pushed, the state, and a
 *      COMMIT flagged KEMARI_COMMIT_INITIAL at the next epoch of our own
 *      count. On its ack the guest is protected again.
 *
 * While the guest is unprotected this thread owns e->conn and e->dirty:
 * the tap, the tick and the speculation thread look at them only when
 * e->protected. From REPRO_READY on the vCPU thread owns them.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "engine_priv.h"
#include "kemari/kemari.h"

/* The last round goes in the pause once this little is left (4 MiB)... */
#define REPRO_SMALL_PAGES 1024
/* ... or once a round no longer shrinks it by a tenth, or after this many. */
#define REPRO_MAX_ROUNDS 30

enum { REPRO_IDLE, REPRO_COPYING, REPRO_READY };

static void reprotect__nap(unsigned int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

/* Give up on this secondary: unprotected as before, tried again later. */
static void reprotect__drop(struct kemari_engine *e, int err)
{
	kemari_warn(
		"re-protection through %s failed: %s; the guest stays unprotected, trying again",
		e->cfg.peer, kemari_last_error(err));
	kemari_err_clear();
	if (e->conn) {
		kemari_xport__close(e->conn);
		e->conn = NULL;
	}
	atomic_store(&e->state, KEMARI_STATE_UNPROTECTED);
	atomic_store(&e->repro, REPRO_IDLE);
}

/* Push what e->dirty holds and empty it. */
static int reprotect__push_dirty(struct kemari_engine *e)
{
	long n = kemari_dirty__runs(&e->dirty, &e->runs, &e->runs_cap, 0);
	int err;

	if (n < 0)
		return (int)n;
	err = n ? primary__push(e, e->runs, (size_t)n) : 0;
	if (!err)
		kemari_dirty__clear(&e->dirty);
	return err;
}

/* Steps 2 and 3, the guest running; e->dirty keeps the rest. */
static int reprotect__precopy(struct kemari_engine *e)
{
	uint64_t prev = e->npages;
	int err;

	kemari_dirty__clear(&e->dirty);
	err = kemari_hv__dirty_start(e->hv);
	err = err ?: primary__push_all(e, false);
	e->repro_pages = e->npages;
	for (e->repro_rounds = 1; !err; e->repro_rounds++) {
		err = kemari_hv__collect_dirty(e->hv, &e->dirty);
		if (err || e->dirty.count <= REPRO_SMALL_PAGES ||
		    e->dirty.count * 10 > prev * 9 ||
		    e->repro_rounds >= REPRO_MAX_ROUNDS)
			break;
		prev = e->dirty.count;
		e->repro_pages += prev;
		err = reprotect__push_dirty(e);
		err = err ?: kemari_xport__flush(e->conn);
		err = err ?: primary__beat(e);
		if (!err && atomic_load(&e->repro_quit))
			err = kemari_err(-ECANCELED, "stopped");
	}
	return err;
}

/* Steps 1 to 3; 0 when the last round waits for the vCPU thread. */
static int reprotect__bring_in(struct kemari_engine *e, char *last,
			       size_t last_size)
{
	struct kemari_xport_opts o = e->cfg.xport_opts;
	struct kemari_xport *conn;
	int err;

	/* Under xlock: a secondary lost just now is closed and forgotten. */
	pthread_mutex_lock(&e->xlock);
	err = e->protected || e->conn ? -EBUSY : 0;
	pthread_mutex_unlock(&e->xlock);
	if (err)
		return err;
	o.connect_timeout_ms = KEMARI_MIN(e->cfg.reprotect_ms, 1000u);
	err = kemari_xport__connect(e->cfg.xport, &conn, e->cfg.peer, &o);
	if (err) {
		const char *why = kemari_last_error(err);

		/* Once per cause: the retries are quiet. */
		if (strcmp(why, last)) {
			kemari_info(
				"re-protection: no secondary at %s yet (%s); trying every %u ms",
				e->cfg.peer, why, e->cfg.reprotect_ms);
			snprintf(last, last_size, "%s", why);
		}
		kemari_err_clear();
		return err;
	}
	last[0] = 0;
	atomic_store(&e->repro, REPRO_COPYING);
	pthread_mutex_lock(&e->xlock);
	e->conn = conn;
	pthread_mutex_unlock(&e->xlock);
	e->repro_t0 = e->last_rx_ns = e->last_tx_ns = kemari_now_ns();
	atomic_store(&e->state, KEMARI_STATE_SYNCING);
	kemari_info(
		"re-protection: a secondary at %s; copying the guest's %llu MiB to it while the guest runs",
		e->cfg.peer, (unsigned long long)(e->ram_size >> 20));
	err = primary__handshake(e);
	err = err ?: reprotect__precopy(e);
	if (err) {
		reprotect__drop(e, err);
		return err;
	}
	atomic_store(&e->repro, REPRO_READY);
	return 0;
}

static void *reprotect__thread(void *arg)
{
	struct kemari_engine *e = arg;
	char last[512] = "";
	uint64_t next = 0;

	while (!atomic_load(&e->repro_quit) && !atomic_load(&e->stop)) {
		uint64_t now = kemari_now_ns();

		if (e->protected || e->paused_for_loss ||
		    atomic_load(&e->fenced_out) ||
		    atomic_load(&e->repro) != REPRO_IDLE || now < next) {
			reprotect__nap(20);
			continue;
		}
		next = now + (uint64_t)e->cfg.reprotect_ms * 1000000ULL;
		reprotect__bring_in(e, last, sizeof(last));
	}
	return NULL;
}

bool reprotect__ready(struct kemari_engine *e)
{
	return atomic_load(&e->repro) == REPRO_READY;
}

/*
 * Step 4, on the vCPU thread with the guest paused and xlock held: the
 * rest, the state and the initial commit. On a failure the guest simply
 * stays unprotected (the thread tries again); nothing is lost here.
 */
void reprotect__finish(struct kemari_engine *e)
{
	uint64_t t0 = kemari_now_ns(), left;
	int err;

	err = kemari_hv__collect_dirty(e->hv, &e->dirty);
	left = e->dirty.count;
	err = err ?: reprotect__push_dirty(e);
	err = err ?: primary__commit_initial(e, e->epoch + 1);
	if (err) {
		reprotect__drop(e, err);
		return;
	}
	kemari_dirty__clear(&e->epoch_set);
	e->spec_pages = 0;
	e->repro_pages += left;
	kemari_info(
		"re-protected: the secondary at %s holds epoch %llu; %u pre-copy rounds, %llu MiB sent in %.1f s, the last round %llu pages in a %.1f ms pause",
		e->cfg.peer, (unsigned long long)e->epoch, e->repro_rounds,
		(unsigned long long)(e->repro_pages * KEMARI_PAGE_SIZE >> 20),
		(double)(kemari_now_ns() - e->repro_t0) / 1e9,
		(unsigned long long)left, (double)(kemari_now_ns() - t0) / 1e6);
	atomic_store(&e->repro, REPRO_IDLE);
}

int reprotect__start(struct kemari_engine *e)
{
	int err;

	if (!e->cfg.peer || !e->cfg.reprotect_ms || e->repro_running)
		return 0;
	if (!e->dirty.bitmap) {
		err = kemari_dirty__init(&e->dirty, e->npages);
		err = err ?: kemari_dirty__init(&e->epoch_set, e->npages);
		if (err)
			return err;
	}
	atomic_store(&e->repro_quit, false);
	err = pthread_create(&e->repro_thread, NULL, reprotect__thread, e);
	if (err)
		return kemari_err(-err, "cannot start the re-protection thread");
	e->repro_running = true;
	return 0;
}

void reprotect__stop(struct kemari_engine *e)
{
	if (!e->repro_running)
		return;
	atomic_store(&e->repro_quit, true);
	pthread_join(e->repro_thread, NULL);
	e->repro_running = false;
	atomic_store(&e->repro, REPRO_IDLE);
	/* A secondary half brought in: it holds no commit, nothing to say. */
	if (!e->protected && e->conn) {
		kemari_xport__close(e->conn);
		e->conn = NULL;
	}
}
