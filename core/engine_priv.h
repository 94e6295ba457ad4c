/* SPDX-License-Identifier: MIT */
/* Engine internals shared by core/ files. */
#ifndef KEMARI_CORE_ENGINE_PRIV_H
#define KEMARI_CORE_ENGINE_PRIV_H

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>

#include "kemari/auth.h"
#include "kemari/buf.h"
#include "kemari/dirty.h"
#include "kemari/engine.h"
#include "kemari/fence.h"
#include "kemari/silence.h"
#include "kemari/wire.h"

struct kemari_epoch_stats {
	uint64_t epoch;
	uint64_t dirty_pages;
	uint64_t runs;
	uint64_t bytes;
	uint64_t harvest_us;
	uint64_t state_us;
	uint64_t push_us;
	uint64_t commit_ack_us;
	uint64_t pause_us;
	uint64_t spec_pages; /* pushed ahead of the tap, while the guest ran */
	uint64_t spec_wait_us; /* the tap waited for a speculative push */
};

struct kemari_metrics {
	/* Everything below is read by other threads (--metrics, --control)
	 * through kemari_engine__stats(): under lock. */
	pthread_mutex_t lock;
	uint32_t *pause_us; /* every epoch's pause, for quantiles */
	size_t n, cap;
	FILE *stats;
	uint64_t epoch;	 /* last committed */
	uint64_t epochs; /* completed here (secondary: committed) */
	uint64_t bytes, pages;
	uint64_t heartbeats_missed, takeovers;
	uint64_t own_pauses, own_pause_max_ms; /* engine__silence */
	struct kemari_hist pause, phase[KEMARI_NPHASES], dirty;
	uint64_t silence_rx_ns;	 /* the silence being counted began then */
	uint64_t silence_missed; /* ... and has missed this many so far */
};

struct kemari_engine {
	struct kemari_engine_cfg cfg;
	struct kemari_hv *hv;
	uint8_t *ram;
	uint64_t ram_size;
	uint64_t npages;
	uint64_t image_hash;

	struct kemari_xport *listener;
	struct kemari_xport *conn;
	struct kemari_auth_key key; /* valid when have_key */
	uint8_t tls_psk[KEMARI_AUTH_KEY_LEN]; /* --tls: derived from key */
	bool have_key;

	/* Fencing: fence.fd >= 0 when this side fences its output. */
	struct kemari_fence fence;
	bool fence_need_win;	/* the peer is lost: win before any output */
	atomic_bool fenced_out; /* lost the fence: release nothing more */
	char fence_why[640];	/* ... and why, for the run's one line */
	bool frozen;		/* --fault=freeze-after-ack done */

	/* Primary */
	pthread_mutex_t xlock;	 /* the connection and the epoch's page sets */
	atomic_bool tap_waiting; /* the speculator yields to a tap */
	pthread_t spec_thread;
	bool spec_running;
	/* Heartbeats on their own thread (primary__heartbeats), while the
	 * guest's loop last ticked within the wedge limit. */
	pthread_t hb_thread;
	atomic_bool hb_running;
	_Atomic uint64_t last_tick_ns;
	struct kemari_dirty dirty;     /* dirtied since the last push */
	struct kemari_dirty epoch_set; /* pushed in the open epoch */
	uint64_t spec_pages;
	uint64_t applied_next; /* the secondary applied every epoch below */
	struct kemari_run *runs;
	size_t runs_cap;
	struct kemari_buf cpu_state, dev_state;
	uint64_t epoch;	       /* last committed (primary: last acknowledged) */
	atomic_bool protected; /* a secondary holds our last epoch */
	atomic_int state;      /* enum kemari_state */
	uint64_t start_ns;
	bool paused_for_loss;
	bool crash_injected; /* --fault=guest-crash done */
	uint64_t restores;   /* --verify-restore: own state loaded back */
	uint64_t initial_epoch; /* this secondary's initial sync */
	atomic_bool switch_req;	/* kemari_engine__switchover() asked */
	bool switched;		/* ... and the secondary holds the last epoch */

	/* Re-protection (reprotect.c) */
	pthread_t repro_thread;
	bool repro_running;
	atomic_bool repro_quit;
	atomic_int repro; /* REPRO_IDLE, _COPYING, _READY */
	unsigned int repro_rounds;
	uint64_t repro_pages, repro_t0;

	/* Secondary */
	/*
	 * Receive buffers: RAM-sized, two banks of it over a one-sided
	 * transport (epoch N+1 lands in one while N is copied out of the
	 * other; see primary__push).
	 */
	uint8_t *shadow;
	uint64_t shadow_len;
	/* Both sides: the bank the open epoch's pages land in, 0 or 1; 0 at
	 * each connection's handshake, flipped at each acknowledged commit. */
	unsigned int bank;
	struct kemari_buf pend_runs, pend_cpu, pend_dev;
	uint64_t pend_pages; /* in pend_runs: at most npages */
	struct kemari_buf cpu_committed, dev_committed;
	bool have_commit;

	/* --verify-replica (verify.c) */
	uint32_t *verify_cur, *verify_prev; /* primary: page hashes */
	struct kemari_dirty verify_seen;    /* pushed since the last check */
	struct kemari_buf pend_verify;	    /* secondary: the epoch's */
	uint64_t verify_epochs, verify_missed, verify_bad;

	uint64_t last_rx_ns, last_tx_ns;
	struct kemari_silence peer_silence; /* since last_rx_ns */
	atomic_bool stop;
	atomic_bool summary_req;
	atomic_bool fault_armed; /* --fault=PHASE:SIGUSR2 got its signal */
	uint64_t fault_at;	 /* ... and fires from this epoch on */
	struct kemari_metrics metrics;
};

/* engine.c */
int engine__tick_common(struct kemari_engine *e);
uint64_t engine__grace(const struct kemari_engine *e, unsigned int timeout_ms);
void engine__own_pause(struct kemari_engine *e, uint64_t pause_ns);
uint64_t engine__silence(struct kemari_engine *e, struct kemari_silence *s,
			 uint64_t now_ns, unsigned int timeout_ms, bool say);
bool engine__fault_due(struct kemari_engine *e, enum kemari_fault f,
		       uint64_t epoch);
void engine__fault(struct kemari_engine *e, enum kemari_fault f,
		   uint64_t epoch);
int engine__run_guest(struct kemari_engine *e);
int engine__handshake_hello(struct kemari_engine *e, struct kemari_hello *h);
/* Release ev's output under the fence: won first when the peer is lost,
 * the generation re-checked and the lock held across the write. */
int engine__release(struct kemari_engine *e, struct kemari_event *ev);
/* Win the fence now (the peer is lost); on a loss, stop with nothing more
 * released. 0 or a negative errno with the one line. */
int engine__fence_win(struct kemari_engine *e, const char *who);

/* primary.c / secondary.c */
int primary__run(struct kemari_engine *e);
/*
 * Run the guest here as the side that serves: speculation and
 * re-protection threads as configured, then the last word to the
 * secondary (BYE or FAILED) if one holds the last epoch.
 */
int primary__serve(struct kemari_engine *e);
int primary__handshake(struct kemari_engine *e);
/* All of RAM pushed (initial: the initial sync, with its fault point). */
int primary__push(struct kemari_engine *e, const struct kemari_run *runs,
		  size_t n);
int primary__push_all(struct kemari_engine *e, bool initial);
int primary__beat(struct kemari_engine *e);
/* The guest paused, its pages pushed: epoch as this secondary's first. */
int primary__commit_initial(struct kemari_engine *e, uint64_t epoch);
int primary__event(void *ctx, struct kemari_event *ev);
int primary__tick(void *ctx);
int secondary__run(struct kemari_engine *e);

/* How serving one primary on e->conn ended (secondary.c). */
enum serve_end {
	SERVE_DROPPED,	/* connection unusable; nothing to take over */
	SERVE_TAKEOVER, /* primary failed after a commit */
	SERVE_BYE,	/* primary shut down in order */
	SERVE_STOP,	/* we were asked to stop */
};
/*
 * Handshake with the primary on e->conn, then apply its epochs into e->ram
 * until it goes (non-static for tests/fuzz/libfuzzer/fuzz_secondary.c).
 */
enum serve_end secondary__serve(struct kemari_engine *e);

/* reprotect.c: a new secondary brought in while the guest runs */
int reprotect__start(struct kemari_engine *e);
void reprotect__stop(struct kemari_engine *e);
/* The last round is due (the vCPU thread calls finish, guest paused). */
bool reprotect__ready(struct kemari_engine *e);
void reprotect__finish(struct kemari_engine *e);

/* verify.c: --verify-replica */
int verify__primary(struct kemari_engine *e, uint64_t epoch, bool initial);
int verify__stash(struct kemari_engine *e, const struct kemari_msg *m);
void verify__secondary(struct kemari_engine *e, const struct kemari_run *runs,
		       size_t nruns);
/* As the side that sent the checks (primary) or compared them. */
void verify__report(struct kemari_engine *e, bool primary);
void verify__fini(struct kemari_engine *e);

/* metrics.c */
int metrics__open(struct kemari_metrics *m, const char *path);
void metrics__close(struct kemari_metrics *m);
void metrics__record(struct kemari_metrics *m,
		     const struct kemari_epoch_stats *s);
void metrics__summary(struct kemari_metrics *m, FILE *f);
int metrics__quantile(struct kemari_metrics *m, double q, uint64_t *out);
/* Secondary: epoch committed here. */
void metrics__committed(struct kemari_engine *e, uint64_t epoch);
/* Secondary: the guest resumed here from the last committed epoch. */
void metrics__takeover(struct kemari_engine *e);
/* At a tick: count heartbeat periods the peer has been silent beyond the
 * first (its last message arrived at e->last_rx_ns). */
void metrics__silence(struct kemari_engine *e, uint64_t now_ns);
void metrics__own_pause(struct kemari_engine *e, uint64_t pause_ns);

#endif
