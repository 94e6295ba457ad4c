/* SPDX-License-Identifier: MIT */
/*
 * The Kemari engine: runs a guest standalone, as a protected primary, or as
 * a secondary that keeps the last committed epoch and takes over.
 */
#ifndef KEMARI_ENGINE_H
#define KEMARI_ENGINE_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "kemari/hv.h"
#include "kemari/xport.h"

enum kemari_role {
	KEMARI_ROLE_STANDALONE,
	KEMARI_ROLE_PRIMARY,
	KEMARI_ROLE_SECONDARY,
};

/* Protocol phases where --fault=PHASE:EPOCH simulates a primary crash. */
enum kemari_fault {
	KEMARI_FAULT_NONE,
	KEMARI_FAULT_SYNC,	   /* halfway through the initial sync */
	KEMARI_FAULT_BEFORE_PUSH,  /* paused, state captured, nothing sent */
	KEMARI_FAULT_MID_PUSH,	   /* half of the epoch's runs pushed */
	KEMARI_FAULT_AFTER_PUSH,   /* all data and state sent, no commit */
	KEMARI_FAULT_AFTER_COMMIT, /* commit sent, ack not yet received */
	KEMARI_FAULT_AFTER_ACK,	   /* acknowledged, event not released */
	/* Not a kill: the primary's guest dies (triple fault) right after
	 * the epoch's ack; the VMM lives on and must hand over. */
	KEMARI_FAULT_GUEST_CRASH,
	/* Not a kill: the primary stops itself (SIGSTOP) right after the
	 * epoch's ack, before releasing its output; SIGCONT resumes it. */
	KEMARI_FAULT_FREEZE_AFTER_ACK,
};

enum kemari_on_loss {
	KEMARI_LOSS_CONTINUE, /* log it and run unprotected */
	KEMARI_LOSS_PAUSE,    /* keep the guest paused until stopped */
};

struct kemari_engine_cfg {
	enum kemari_role role;
	const struct kemari_hv_ops *hv;
	struct kemari_hv_cfg hv_cfg; /* hooks are the engine's */
	const char *guest_path;
	const struct kemari_xport_ops *xport;
	struct kemari_xport_opts xport_opts;
	const char *peer;   /* the secondary's address (a secondary's: for
			     * re-protection once it took over) */
	const char *listen; /* secondary: address to listen on */
	/* The shared key file (--auth-key): both sides prove they hold it
	 * before anything else is exchanged (core/auth.c). NULL: no key. */
	const char *auth_key_path;
	/* Let a secondary without a key listen on a non-loopback address. */
	bool insecure;
	/* Encrypt the replication link (--tls: TLS 1.3, its pre-shared key
	 * derived from the --auth-key; transports with KEMARI_XPORT_CAP_TLS). */
	bool tls;
	/* The fence record beside the shared disk (--fence, default
	 * DISK.kemari; core/fence.c); NULL: no fencing. */
	const char *fence_path;
	unsigned int heartbeat_ms;
	unsigned int heartbeat_timeout_ms;
	enum kemari_on_loss on_secondary_loss;
	/* Serving alone (a primary whose secondary is lost, a secondary that
	 * took over), try to bring a new secondary in at peer every this
	 * many ms (core/reprotect.c); 0: never. */
	unsigned int reprotect_ms;
	const char *stats_path; /* JSON lines, one per epoch */
	enum kemari_fault fault;
	/* The first epoch the fault may fire in, or KEMARI_FAULT_ON_SIGNAL:
	 * the first epoch that begins after kemari_engine__arm_fault(). */
	uint64_t fault_epoch;
	/* Called at the fault point; expected not to return (cmd/ kills),
	 * except for KEMARI_FAULT_FREEZE_AFTER_ACK (cmd/ stops itself). */
	void (*fault_hook)(enum kemari_fault f, uint64_t epoch);
	bool progress; /* progress bar for the initial sync */
	/* Push dirty pages every N us while the guest runs (0: off). */
	unsigned int speculate_us;
	/* Baseline: copy all of RAM at every epoch (naive checkpointing). */
	bool full_copy;
	/* Testing: sleep stretch_pause_ms inside the paused window of every
	 * stretch_every-th epoch (0: never), as a slow host would. */
	unsigned int stretch_pause_ms;
	unsigned int stretch_every;
	/* Testing: check the replica page by page at every verify_every-th
	 * commit (verify.c); 0: never. */
	unsigned int verify_every;
	/* Testing (--verify-restore): after each acknowledged epoch the
	 * primary loads the state it has just saved back into its own VM
	 * before the guest resumes: state a save misses shows at once. */
	bool verify_restore;
};

#define KEMARI_FAULT_ON_SIGNAL UINT64_MAX

struct kemari_engine;

int kemari_engine__create(struct kemari_engine **out,
			  const struct kemari_engine_cfg *cfg);
/*
 * Run the role to its end: returns the guest's exit status (>= 0) when it
 * shut down or was stopped, or a negative errno with kemari_last_error().
 */
int kemari_engine__run(struct kemari_engine *e);
/* Request an orderly stop (guest paused, disk flushed); signal-safe. */
void kemari_engine__stop(struct kemari_engine *e);
/*
 * Planned switchover (a primary with a secondary): at the next epoch
 * boundary the guest's last epoch is committed and the secondary told to
 * take over from it at once; this side then waits as the new secondary on
 * its --listen, or ends (0) without one. Thread-safe. 0 when requested,
 * -ENOTCONN when no secondary holds the guest, -EALREADY when under way.
 */
int kemari_engine__switchover(struct kemari_engine *e);
/* Ask for the pause-time summary at the next tick; signal-safe. */
void kemari_engine__request_summary(struct kemari_engine *e);
/* Arm a --fault=PHASE:SIGUSR2 for the next epoch; signal-safe. */
void kemari_engine__arm_fault(struct kemari_engine *e);
/* Print "epochs N, pause p50 X us, p99 Y us, max Z us" to f. */
void kemari_engine__summary(struct kemari_engine *e, FILE *f);

/* Where the protection of the guest stands (--metrics, --control). */
enum kemari_state {
	KEMARI_STATE_SYNCING,	/* waiting for the peer, or the initial sync */
	KEMARI_STATE_PROTECTED, /* a secondary holds the last epoch */
	KEMARI_STATE_UNPROTECTED, /* standalone, or the secondary is lost */
	KEMARI_STATE_TAKEN_OVER,  /* secondary: the guest runs here now */
};
const char *kemari_state__name(enum kemari_state s);

/* A histogram: count per bucket (not cumulative), the last one +Inf. */
#define KEMARI_HIST_BUCKETS 15
struct kemari_hist {
	uint64_t bucket[KEMARI_HIST_BUCKETS];
	uint64_t count;
	uint64_t sum; /* in the unit of the bounds */
};
/* Upper bounds of the buckets but the last: microseconds, pages. */
extern const uint64_t kemari_hist_us_bounds[KEMARI_HIST_BUCKETS - 1];
extern const uint64_t kemari_hist_pages_bounds[KEMARI_HIST_BUCKETS - 1];

enum kemari_phase {
	KEMARI_PHASE_HARVEST,	 /* collecting the dirty pages */
	KEMARI_PHASE_STATE,	 /* saving vCPU and device state */
	KEMARI_PHASE_PUSH,	 /* pushing pages and state */
	KEMARI_PHASE_COMMIT_ACK, /* the commit round trip */
	KEMARI_NPHASES,
};
const char *kemari_phase__name(enum kemari_phase p);

/* A consistent snapshot of the engine's counters. */
struct kemari_engine_stats {
	enum kemari_role role;
	enum kemari_state state;
	const char *peer; /* --peer or --listen; NULL standalone */
	bool peer_connected;
	uint64_t epoch;		    /* last committed (primary: acknowledged) */
	uint64_t epochs;	    /* epochs completed by this process */
	uint64_t bytes, pages;	    /* pushed (primary) in those epochs */
	uint64_t heartbeats_missed; /* heartbeat periods the peer was silent */
	uint64_t takeovers;
	/* This side's own pauses: no look at its peer for longer than half
	 * the heartbeat timeout (its process or host stalled): not counted as
	 * the peer's silence (kemari/silence.h). */
	uint64_t own_pauses, own_pause_max_ms;
	uint64_t ram_bytes;
	unsigned int ncpus;
	uint64_t uptime_ms;
	uint64_t last_pause_us, p50_pause_us, p99_pause_us; /* 0: no epoch */
	struct kemari_hist pause_us;			    /* per epoch */
	struct kemari_hist phase_us[KEMARI_NPHASES];
	struct kemari_hist dirty_pages; /* per epoch */
};
/* Fill s; thread-safe (any thread, while e exists). 0 or -ENOMEM. */
int kemari_engine__stats(struct kemari_engine *e,
			 struct kemari_engine_stats *s);
void kemari_engine__destroy(struct kemari_engine *e);

int kemari_fault__parse(const char *s, enum kemari_fault *f, uint64_t *epoch);
const char *kemari_fault__name(enum kemari_fault f);

#endif
