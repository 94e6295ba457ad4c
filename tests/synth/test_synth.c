// SPDX-License-Identifier: MIT
/*
 * The engine's failover over every transport usable natively, with the
 * synthetic guest (--hv=synth): no KVM needed, so these run on the host.
 *
 * Exact outcomes: the synthetic guest's whole state is its round counter;
 * each round writes K pages and releases one output record at its own
 * offset of the output file. After any failover the secondary verifies
 * every page of the working set against the restored round (a torn or
 * stale replica fails the takeover), then runs on to the last round. So
 * the output file must hold exactly rounds records, record i == i + 1:
 * nothing released was lost, nothing is missing or out of place.
 *
 * KEMARI_SYNTH_XPORTS="tcp;ofi --provider=tcp" picks the transports
 * (default: tcp, and ofi over its tcp provider and over shm, FI_EP_RDM,
 * when compiled in; ';' separates transports, except before "ofi_":
 * "ofi --provider=tcp;ofi_rxm" is one);
 * KEMARI_TEST_ADDR the address (169.254.77.1 for soft-RoCE; a secondary
 * without a key then gets --insecure).
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <criterion/parameterized.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "kemari/auth.h"
#include "kemari/buf.h"
#include "kemari/hv.h"
#include "kemari/kemari.h"
#include "kemari/xport.h"

#define ROUNDS 400
#define MAX_XPORTS 4

static char dir[256], out[300], plog[300], slog[300], peer[64];
static struct hproc pri, sec;
/* Every secondary's: --insecure when the test address is not loopback. */
static char sec_extra[32];

static void setup(void)
{
	const char *addr = getenv("KEMARI_TEST_ADDR");

	h_tmpdir(dir, sizeof(dir));
	snprintf(out, sizeof(out), "%s/out.bin", dir);
	snprintf(plog, sizeof(plog), "%s/primary.log", dir);
	snprintf(slog, sizeof(slog), "%s/secondary.log", dir);
	snprintf(peer, sizeof(peer), "%s:%u",
		 addr && *addr ? addr : "127.0.0.1", h_port());
	snprintf(sec_extra, sizeof(sec_extra), "%s",
		 kemari_auth__loopback(peer) ? "" : "--insecure");
	pri.pid = sec.pid = 0;
}

static void teardown(void)
{
	h_reap(&pri);
	h_reap(&sec);
	h_rmtree(dir);
}

TestSuite(synth, .init = setup, .fini = teardown, .timeout = 180);

/* Heartbeats patient enough for a loaded 2-core machine. */
#define COMMON                                                                 \
	"--hv=synth --mem=32M --no-progress --heartbeat-ms=20 --heartbeat-timeout-ms=%d --disk=%s %s"

static void start_pair(const char *xport, const char *pextra, int rounds)
{
	cr_assert(
		eq(int,
		   h_spawn(&sec, slog,
			   "@B/kemari-run --role=secondary --listen=%s " COMMON
			   " %s",
			   peer, h_ms(1000), out, xport, sec_extra),
		   0));
	if (h_wait_log(slog, "waiting for the primary", h_ms(20000))) {
		h_dump(slog);
		cr_fatal("secondary did not start");
	}
	cr_assert(eq(int,
		     h_spawn(&pri, plog,
			     "@B/kemari-run --role=primary --peer=%s " COMMON
			     " --guest-arg=pages=64 --guest-arg=rounds=%d %s",
			     peer, h_ms(1000), out, xport, rounds,
			     pextra ? pextra : ""),
		     0));
}

/* The output file holds exactly n records, record i == i + 1. */
static void check_output(int n)
{
	h_synth_check_output(out, n);
}

/* The round the secondary verified its replica at, from its log. */
static long long verified_round(void)
{
	return h_log_number(slog, "replica verified at round ");
}

/* After a takeover the new primary serves to the guest's last round. */
static void wait_secondary_done(void)
{
	int st = h_wait(&sec, h_ms(60000));

	if (st != 0 ||
	    (h_log_has(slog, "takeover: resumed") &&
	     !h_log_has(slog, "the guest powered off (status 0) after "))) {
		h_dump(plog);
		h_dump_tail(slog, 30);
		cr_fatal("the secondary ended with %d after the takeover, %s",
			 st, "its last lines above");
	}
}

ParameterizedTestParameters(synth, orderly_run_replicates_every_round)
{
	static struct h_xspec xs[MAX_XPORTS];

	return cr_make_param_array(struct h_xspec, xs,
				   h_synth_xports(xs, MAX_XPORTS));
}

ParameterizedTest(struct h_xspec *x, synth, orderly_run_replicates_every_round)
{
	char stats[300], extra[350], line[512];
	int epochs = 0;
	FILE *f;

	snprintf(stats, sizeof(stats), "%s/stats.json", dir);
	snprintf(extra, sizeof(extra), "--stats=%s", stats);
	start_pair(x->args, extra, ROUNDS);
	cr_assert(eq(int, h_wait(&pri, h_ms(60000)), 0));
	cr_assert(eq(int, h_wait(&sec, h_ms(20000)), 0));
	cr_assert(h_log_has(slog, "shut down in order at epoch 400"));
	cr_assert(h_log_has(
		plog, "the guest powered off (status 0) after 400 rounds"));
	check_output(ROUNDS);
	/* One epoch per event, each carrying the round's 64 pages. */
	f = fopen(stats, "r");
	cr_assert(f != NULL);
	while (fgets(line, sizeof(line), f)) {
		epochs++;
		cr_assert(strstr(line, "\"dirty_pages\":64,") != NULL, "%s",
			  line);
	}
	fclose(f);
	cr_assert(eq(int, epochs, ROUNDS));
}

struct phase_case {
	char xport[64];
	char fault[16];
	int committed; /* 1: epoch N is committed at the secondary */
};

ParameterizedTestParameters(synth, kill9_at_each_phase)
{
	static const char *const phases[] = { "before-push", "mid-push",
					      "after-push", "after-commit",
					      "after-ack" };
	static struct phase_case cases[MAX_XPORTS * 5];
	struct h_xspec xs[MAX_XPORTS];
	size_t nx = h_synth_xports(xs, MAX_XPORTS), n = 0;

	for (size_t i = 0; i < nx; i++)
		for (size_t p = 0; p < 5; p++, n++) {
			memcpy(cases[n].xport, xs[i].args,
			       sizeof(cases[n].xport));
			snprintf(cases[n].fault, sizeof(cases[n].fault), "%s",
				 phases[p]);
			cases[n].committed = p >= 3;
		}
	return cr_make_param_array(struct phase_case, cases, n);
}

/*
 * Epoch e carries round e - 1 (epoch 0 is the initial sync). Killed in
 * epoch 40: committed, the secondary restores round 39 with its event in
 * flight and re-issues it; not committed, it restores round 38.
 */
ParameterizedTest(struct phase_case *pc, synth, kill9_at_each_phase)
{
	const long long at = 40;
	char fault[64];

	snprintf(fault, sizeof(fault), "--fault=%s:%lld", pc->fault, at);
	start_pair(pc->xport, fault, ROUNDS);
	cr_assert(eq(int, h_wait(&pri, h_ms(60000)), 128 + SIGKILL), "%s %s",
		  pc->xport, pc->fault);
	wait_secondary_done();
	cr_assert(eq(i64, verified_round(), pc->committed ? at - 1 : at - 2),
		  "%s %s", pc->xport, pc->fault);
	check_output(ROUNDS);
}

struct random_case {
	char xport[64];
	int run;
	int speculate;
};

ParameterizedTestParameters(synth, kill9_at_random_moment)
{
	static struct random_case cases[MAX_XPORTS * 8];
	struct h_xspec xs[MAX_XPORTS];
	size_t nx = h_synth_xports(xs, MAX_XPORTS), n = 0;

	for (size_t i = 0; i < nx; i++)
		for (int r = 0; r < 8; r++, n++) {
			memcpy(cases[n].xport, xs[i].args,
			       sizeof(cases[n].xport));
			cases[n].run = r;
			cases[n].speculate = r % 2;
		}
	return cr_make_param_array(struct random_case, cases, n);
}

/*
 * Rounds that take ~0.5 ms of guest time each, a kill somewhere in the
 * first second; every other run with speculation (a harvest thread racing
 * the guest's writes).
 */
ParameterizedTest(struct random_case *rc, synth, kill9_at_random_moment)
{
	const int rounds = 4000;
	unsigned int delay;
	char extra[128];

	srand((unsigned int)time(NULL) ^ (unsigned int)getpid());
	delay = 50 + (unsigned int)rand() % 900;
	snprintf(extra, sizeof(extra), "--guest-arg=think_us=500 %s",
		 rc->speculate ? "--speculate-us=100" : "");
	start_pair(rc->xport, extra, rounds);
	if (h_wait_log(plog, "the guest starts protected", h_ms(20000))) {
		h_dump(plog);
		cr_fatal("no initial sync");
	}
	usleep(delay * 1000);
	cr_assert(eq(int, h_wait(&pri, 0), -ETIMEDOUT),
		  "the primary ended before the kill");
	h_kill(&pri, SIGKILL);
	cr_log_info("%s run %d%s: primary killed %u ms into the run", rc->xport,
		    rc->run, rc->speculate ? " (speculating)" : "", delay);
	wait_secondary_done();
	cr_assert(verified_round() >= 0, "no verified takeover");
	check_output(rounds);
}

ParameterizedTestParameters(synth, guest_crash_is_taken_over)
{
	static struct h_xspec xs[MAX_XPORTS];

	return cr_make_param_array(struct h_xspec, xs,
				   h_synth_xports(xs, MAX_XPORTS));
}

/*
 * The primary's guest dies after the ack of epoch 40 while its VMM lives on:
 * a failure, not an orderly end. The primary says so at once (no heartbeat
 * wait), the secondary resumes from exactly epoch 40 (round 39 with its
 * event in flight) and runs every remaining round; each commit's replica is
 * checked page by page on the way (--verify-replica).
 */
ParameterizedTest(struct h_xspec *x, synth, guest_crash_is_taken_over)
{
	char extra[256];

	snprintf(extra, sizeof(extra),
		 "--fault=guest-crash:40 --verify-replica %s", x->args);
	cr_assert(
		eq(int,
		   h_spawn(&sec, slog,
			   "@B/kemari-run --role=secondary --listen=%s " COMMON
			   " --verify-replica %s",
			   peer, h_ms(60000), out, x->args, sec_extra),
		   0));
	if (h_wait_log(slog, "waiting for the primary", h_ms(20000))) {
		h_dump(slog);
		cr_fatal("secondary did not start");
	}
	cr_assert(eq(int,
		     h_spawn(&pri, plog,
			     "@B/kemari-run --role=primary --peer=%s " COMMON
			     " --guest-arg=pages=64 --guest-arg=rounds=%d",
			     peer, h_ms(60000), out, extra, ROUNDS),
		     0));
	if (h_wait(&pri, h_ms(60000)) != 1 ||
	    !h_log_has(plog, "synthetic guest crashed") ||
	    !h_log_has(plog, "the secondary takes over from epoch 40") ||
	    !h_log_has(plog, "every changed page was reported")) {
		h_dump(plog);
		h_dump(slog);
		cr_fatal("the primary did not end as its guest crashed (%s)",
			 x->args);
	}
	wait_secondary_done();
	/* The heartbeat timeout is a minute: only the FAILED message fits. */
	if (!h_log_has(slog, "its guest or VMM failed")) {
		h_dump(plog);
		h_dump(slog);
		cr_fatal("the secondary did not hear FAILED");
	}
	cr_assert(eq(i64, verified_round(), 39), "%s", x->args);
	cr_assert(h_log_has(slog, "the replica equalled the primary's RAM"));
	check_output(ROUNDS);
}

/* Captures the synthetic guest's state and RAM at its third event. */
struct snap {
	const struct kemari_hv_ops *ops;
	struct kemari_hv *hv;
	struct kemari_buf cpu, dev;
	uint8_t ram[1 << 20];
	int events;
};

static int snap_event(void *ctx, struct kemari_event *ev)
{
	struct snap *s = ctx;
	uint8_t *ram;
	uint64_t size;

	if (++s->events == 3) {
		cr_assert(eq(int, s->ops->save_cpu(s->hv, &s->cpu), 0));
		cr_assert(eq(int, s->ops->save_dev(s->hv, &s->dev), 0));
		s->ops->map_ram(s->hv, (void **)&ram, &size);
		memcpy(s->ram, ram, sizeof(s->ram));
	}
	return kemari_event__release(ev);
}

/* The oracle itself: a replica that is not the restored round's state is
 * refused at takeover, naming the page. */
Test(synth, torn_replica_is_refused)
{
	const struct kemari_hv_ops *ops = kemari_hv_find("synth");
	struct kemari_hv_cfg cfg = { .mem_size = 1 << 20, .ncpus = 1 };
	struct snap *s = calloc(1, sizeof(*s));
	struct kemari_hv *b;
	uint8_t *rb;
	uint64_t size;
	int err;

	cr_assert(ops != NULL && s != NULL);
	cfg.guest_args[cfg.nguest_args++] = "pages=8";
	cfg.guest_args[cfg.nguest_args++] = "rounds=5";
	cfg.hooks.ctx = s;
	cfg.hooks.event = snap_event;
	s->ops = ops;
	cr_assert(eq(int, ops->create(&s->hv, &cfg), 0));
	cr_assert(eq(int, ops->load_guest(s->hv, NULL), 0));
	cr_assert(eq(int, ops->run(s->hv), 0));
	cr_assert(eq(int, s->events, 5));
	/* The state and RAM at round 2's event restore and verify. */
	cr_assert(eq(int, ops->create(&b, &cfg), 0));
	ops->map_ram(b, (void **)&rb, &size);
	memcpy(rb, s->ram, sizeof(s->ram));
	cr_assert(eq(int, ops->load_cpu(b, s->cpu.data, s->cpu.len), 0));
	cr_assert(eq(int, ops->load_dev(b, s->dev.data, s->dev.len), 0));
	cr_assert(eq(int, ops->reattach(b), 0));
	/* Page 21 (the 6th of the working set) was written in round 0. */
	rb[21 * 4096] = 99;
	kemari_err_clear();
	err = ops->reattach(b);
	cr_assert(eq(int, err, -EIO));
	cr_assert(strstr(kemari_last_error(err),
			 "page 21 holds round 99, expected 1") != NULL,
		  "%s", kemari_last_error(err));
	/* And a replica one round behind (round 1's RAM, round 2's state). */
	memcpy(rb, s->ram, sizeof(s->ram));
	memset(rb + 32 * 4096, 0, 8); /* page 32: written in round 2 */
	kemari_err_clear();
	cr_assert(eq(int, ops->reattach(b), -EIO));
	kemari_buf__fini(&s->cpu);
	kemari_buf__fini(&s->dev);
	ops->destroy(s->hv);
	ops->destroy(b);
	free(s);
}

/*
 * The handshake carries the guest's TSC frequency: a secondary whose TSC
 * runs more than 250 ppm off, with no TSC scaling, refuses the primary
 * (the guest's clock would drift after a takeover); within 250 ppm it
 * protects. The two sides pose as hosts at the given frequencies.
 */
/* A pair over tcp whose sides pose as hosts at these TSC frequencies. */
static void start_pair_at(const char *primary_khz, const char *secondary_khz)
{
	setenv("KEMARI_TEST_TSC_KHZ", secondary_khz, 1);
	cr_assert(
		eq(int,
		   h_spawn(&sec, slog,
			   "@B/kemari-run --role=secondary --listen=%s " COMMON
			   " %s",
			   peer, h_ms(1000), out, "--transport=tcp", sec_extra),
		   0));
	cr_assert(eq(int,
		     h_wait_log(slog, "waiting for the primary", h_ms(20000)),
		     0));
	setenv("KEMARI_TEST_TSC_KHZ", primary_khz, 1);
	cr_assert(eq(int,
		     h_spawn(&pri, plog,
			     "@B/kemari-run --role=primary --peer=%s " COMMON
			     " --guest-arg=pages=64 --guest-arg=rounds=20",
			     peer, h_ms(1000), out, "--transport=tcp"),
		     0));
	unsetenv("KEMARI_TEST_TSC_KHZ");
}

Test(synth, tsc_frequency_mismatch_is_refused)
{
	const char *want =
		"the guest's TSC runs at 2000600 kHz on the primary but 2000000 kHz here (more than 250 ppm apart)";

	start_pair_at("2000600", "2000000");
	cr_assert(eq(int, h_wait(&pri, h_ms(30000)), 1));
	if (!h_log_has(plog, want) || !h_log_has(slog, want)) {
		h_dump(plog);
		h_dump(slog);
		cr_fail("'%s' not in both logs", want);
	}
}

Test(synth, tsc_frequency_within_250ppm_is_protected)
{
	start_pair_at("2000400", "2000000");
	cr_assert(eq(int, h_wait(&pri, h_ms(60000)), 0));
	wait_secondary_done();
	check_output(20);
}

/* --- authentication (--auth-key) ------------------------------------------ */

/* kemari-run --gen-key=DIR/name: exit 0 and its one line. */
static void gen_key(char *path, size_t n, const char *name)
{
	char log[320];
	struct hproc g = { 0 };

	snprintf(path, n, "%s/%s", dir, name);
	snprintf(log, sizeof(log), "%s/gen-%s.log", dir, name);
	cr_assert(eq(int, h_spawn(&g, log, "@B/kemari-run --gen-key=%s", path),
		     0));
	cr_assert(eq(int, h_wait(&g, h_ms(10000)), 0));
	cr_assert(h_log_has(log, "wrote a new 32-byte key to "));
}

/* The log's only error line contains want. */
static void expect_one_error(const char *log, const char *want)
{
	if (h_count_lines(log, "error") != 1 || !h_log_has(log, want)) {
		h_dump(log);
		cr_fail("not exactly one error line, with '%s', in %s", want,
			log);
	}
}

/* A secondary on peer with these options (xport and key), listening. */
static void start_secondary(const char *opts)
{
	cr_assert(
		eq(int,
		   h_spawn(&sec, slog,
			   "@B/kemari-run --role=secondary --listen=%s " COMMON
			   " %s",
			   peer, h_ms(1000), out, opts, sec_extra),
		   0));
	if (h_wait_log(slog, "waiting for the primary", h_ms(20000))) {
		h_dump(slog);
		cr_fatal("secondary did not start");
	}
}

/* A primary to peer with these options, rounds rounds, its own log. */
static void start_primary(const char *log, const char *opts, int rounds)
{
	pri.pid = 0;
	cr_assert(eq(int,
		     h_spawn(&pri, log,
			     "@B/kemari-run --role=primary --peer=%s " COMMON
			     " --guest-arg=pages=64 --guest-arg=rounds=%d",
			     peer, h_ms(1000), out, opts, rounds),
		     0));
}

ParameterizedTestParameters(synth, same_key_replicates_and_fails_over)
{
	static struct h_xspec xs[MAX_XPORTS];

	return cr_make_param_array(struct h_xspec, xs,
				   h_synth_xports(xs, MAX_XPORTS));
}

/* As kill9_at_each_phase's after-commit case, both sides keyed. */
ParameterizedTest(struct h_xspec *x, synth, same_key_replicates_and_fails_over)
{
	char key[300], opts[400];

	gen_key(key, sizeof(key), "pair.key");
	snprintf(opts, sizeof(opts), "%s --auth-key=%s", x->args, key);
	start_pair(opts, "--fault=after-commit:40", ROUNDS);
	cr_assert(eq(int, h_wait(&pri, h_ms(60000)), 128 + SIGKILL), "%s",
		  x->args);
	wait_secondary_done();
	cr_assert(eq(i64, verified_round(), 39), "%s", x->args);
	check_output(ROUNDS);
}

ParameterizedTestParameters(synth,
			    wrong_key_is_refused_then_the_right_one_replicates)
{
	static struct h_xspec xs[MAX_XPORTS];

	return cr_make_param_array(struct h_xspec, xs,
				   h_synth_xports(xs, MAX_XPORTS));
}

/*
 * A primary with another key: it exits 1 with one line naming its key and
 * does not retry; the secondary logs one line naming its own and keeps
 * listening; the primary with the right key then replicates every round.
 */
ParameterizedTest(struct h_xspec *x, synth,
		  wrong_key_is_refused_then_the_right_one_replicates)
{
	char good[300], bad[300], sopts[400], popts[400], plog1[320];
	char want[700];

	gen_key(good, sizeof(good), "good.key");
	gen_key(bad, sizeof(bad), "bad.key");
	snprintf(sopts, sizeof(sopts), "%s --auth-key=%s", x->args, good);
	start_secondary(sopts);
	snprintf(plog1, sizeof(plog1), "%s/primary-bad.log", dir);
	snprintf(popts, sizeof(popts), "%s --auth-key=%s", x->args, bad);
	start_primary(plog1, popts, 100);
	cr_assert(eq(int, h_wait(&pri, h_ms(30000)), 1), "%s", x->args);
	snprintf(want, sizeof(want),
		 "error: authentication with the secondary at %s failed: the "
		 "secondary does not hold the key in --auth-key=%s: give both "
		 "sides the same key file",
		 peer, bad);
	expect_one_error(plog1, want);
	snprintf(want, sizeof(want),
		 "error: refusing the primary: authentication failed: the "
		 "primary's key differs from the one in --auth-key=%s",
		 good);
	if (h_wait_log(slog, want, h_ms(10000))) {
		h_dump(slog);
		cr_fatal("no '%s'", want);
	}
	expect_one_error(slog, want);
	cr_assert(eq(int, h_wait(&sec, 0), -ETIMEDOUT),
		  "the secondary stopped listening");

	snprintf(popts, sizeof(popts), "%s --auth-key=%s", x->args, good);
	start_primary(plog, popts, 100);
	cr_assert(eq(int, h_wait(&pri, h_ms(60000)), 0), "%s", x->args);
	cr_assert(eq(int, h_wait(&sec, h_ms(20000)), 0));
	cr_assert(h_log_has(slog, "shut down in order at epoch 100"));
	check_output(100);
}

struct mixed_case {
	char xport[64];
	int keyed_primary; /* 1: only the primary has a key, 0: only the secondary */
};

ParameterizedTestParameters(synth, key_on_one_side_only_is_refused)
{
	static struct mixed_case cases[MAX_XPORTS * 2];
	struct h_xspec xs[MAX_XPORTS];
	size_t nx = h_synth_xports(xs, MAX_XPORTS), n = 0;

	for (size_t i = 0; i < nx; i++)
		for (int k = 0; k < 2; k++, n++) {
			memcpy(cases[n].xport, xs[i].args,
			       sizeof(cases[n].xport));
			cases[n].keyed_primary = k;
		}
	return cr_make_param_array(struct mixed_case, cases, n);
}

/* Both sides name the missing key in one line; the secondary listens on. */
ParameterizedTest(struct mixed_case *mc, synth, key_on_one_side_only_is_refused)
{
	char key[300], keyed[400], want[700];

	gen_key(key, sizeof(key), "one.key");
	snprintf(keyed, sizeof(keyed), "%s --auth-key=%s", mc->xport, key);
	start_secondary(mc->keyed_primary ? mc->xport : keyed);
	start_primary(plog, mc->keyed_primary ? keyed : mc->xport, 20);
	cr_assert(eq(int, h_wait(&pri, h_ms(30000)), 1), "%s", mc->xport);
	if (mc->keyed_primary) {
		snprintf(want, sizeof(want),
			 "error: authentication with the secondary at %s "
			 "failed: the secondary refused --auth-key=%s: the "
			 "primary authenticates with --auth-key but this "
			 "secondary has none",
			 peer, key);
		expect_one_error(plog, want);
		snprintf(want, sizeof(want), "%s",
			 "error: refusing the primary: the primary "
			 "authenticates with --auth-key but this secondary has "
			 "none: give both sides the same --auth-key=FILE");
	} else {
		expect_one_error(plog,
				 "error: the secondary refused: the primary "
				 "sent no key proof but this secondary "
				 "requires one: start the primary with the "
				 "same --auth-key=FILE");
		snprintf(want, sizeof(want),
			 "error: refusing the primary: it sent no key proof "
			 "but this secondary requires one (--auth-key=%s)",
			 key);
	}
	if (h_wait_log(slog, want, h_ms(10000))) {
		h_dump(slog);
		cr_fatal("no '%s'", want);
	}
	expect_one_error(slog, want);
	cr_assert(eq(int, h_wait(&sec, 0), -ETIMEDOUT),
		  "the secondary stopped listening");
}

/*
 * Listening on a non-loopback address without a key is refused, with one
 * line, before anything is set up; --insecure (or a key) allows it, and a
 * primary over loopback then replicates every round.
 */
Test(synth, non_loopback_listen_needs_a_key_or_insecure)
{
	char any[64], want[300], key[300];
	uint16_t port = h_port();

	snprintf(any, sizeof(any), "0.0.0.0:%u", port);
	snprintf(peer, sizeof(peer), "127.0.0.1:%u", port);
	cr_assert(
		eq(int,
		   h_spawn(&sec, slog,
			   "@B/kemari-run --role=secondary --listen=%s " COMMON,
			   any, h_ms(1000), out, "--transport=tcp"),
		   0));
	cr_assert(eq(int, h_wait(&sec, h_ms(10000)), 1));
	snprintf(want, sizeof(want),
		 "error: refusing to listen on %s without --auth-key: any host "
		 "that reaches it could connect as the primary; give both "
		 "sides --auth-key=FILE (kemari-run --gen-key=FILE makes one), "
		 "or pass --insecure on a network you trust",
		 any);
	expect_one_error(slog, want);

	/* With a key: it listens. */
	gen_key(key, sizeof(key), "any.key");
	unlink(slog);
	sec.pid = 0;
	cr_assert(
		eq(int,
		   h_spawn(&sec, slog,
			   "@B/kemari-run --role=secondary --listen=%s " COMMON
			   " --auth-key=%s",
			   any, h_ms(1000), out, "--transport=tcp", key),
		   0));
	cr_assert(eq(int,
		     h_wait_log(slog, "waiting for the primary", h_ms(20000)),
		     0));
	h_kill(&sec, SIGTERM);
	cr_assert(eq(int, h_wait(&sec, h_ms(10000)), 0));
	snprintf(want, sizeof(want),
		 "kemari-run[secondary]: stopping on SIGTERM from pid %d (",
		 (int)getpid());
	cr_assert(h_log_has(slog, want), "no '%s'", want);

	/* With --insecure: it listens, says so, and serves a primary. */
	unlink(slog);
	sec.pid = 0;
	cr_assert(
		eq(int,
		   h_spawn(&sec, slog,
			   "@B/kemari-run --role=secondary --listen=%s " COMMON
			   " --insecure",
			   any, h_ms(1000), out, "--transport=tcp"),
		   0));
	cr_assert(eq(int,
		     h_wait_log(slog, "waiting for the primary", h_ms(20000)),
		     0));
	snprintf(want, sizeof(want),
		 "warning: listening on %s without --auth-key (--insecure)",
		 any);
	cr_assert(h_log_has(slog, want));
	start_primary(plog, "--transport=tcp", 20);
	cr_assert(eq(int, h_wait(&pri, h_ms(60000)), 0));
	cr_assert(eq(int, h_wait(&sec, h_ms(20000)), 0));
	check_output(20);
}

/* --tls (tcp): the same failover as above through TLS 1.3. */
Test(synth, tls_pair_replicates_and_fails_over)
{
	char key[300], opts[400];

	gen_key(key, sizeof(key), "tls.key");
	snprintf(opts, sizeof(opts), "--transport=tcp --auth-key=%s --tls",
		 key);
	start_pair(opts, "--fault=after-commit:40", ROUNDS);
	cr_assert(eq(int, h_wait(&pri, h_ms(60000)), 128 + SIGKILL));
	wait_secondary_done();
	cr_assert(eq(i64, verified_round(), 39));
	check_output(ROUNDS);
	if (h_count_lines(slog, "error") != 0)
		h_dump(slog);
	cr_assert(eq(int, h_count_lines(slog, "error"), 0));
}

/*
 * --tls on the secondary only: the primary's first frame is refused by the
 * TLS handshake (one line on each side), the secondary keeps listening and
 * then replicates a primary with --tls; --tls without a key, or over a
 * transport that does not encrypt, is refused at start with one line.
 */
Test(synth, tls_on_one_side_only_is_refused)
{
	char key[300], sopts[400], popts[400], plog1[320], want[120];

	gen_key(key, sizeof(key), "tls1.key");
	snprintf(sopts, sizeof(sopts), "--transport=tcp --auth-key=%s --tls",
		 key);
	start_secondary(sopts);
	snprintf(plog1, sizeof(plog1), "%s/primary-clear.log", dir);
	snprintf(popts, sizeof(popts), "--transport=tcp --auth-key=%s", key);
	start_primary(plog1, popts, 100);
	cr_assert(eq(int, h_wait(&pri, h_ms(30000)), 1));
	expect_one_error(plog1, "(does the secondary use --tls? then give it "
				"here too)");
	if (h_wait_log(slog, "both sides need --tls and the same --auth-key",
		       h_ms(10000))) {
		h_dump(slog);
		cr_fatal("no TLS refusal on the secondary");
	}
	/* The secondary names the primary's address: the test address. */
	snprintf(want, sizeof(want), "TLS handshake with %.*s:",
		 (int)(strrchr(peer, ':') - peer), peer);
	expect_one_error(slog, want);
	cr_assert(eq(int, h_wait(&sec, 0), -ETIMEDOUT),
		  "the secondary stopped listening");
	snprintf(popts, sizeof(popts), "--transport=tcp --auth-key=%s --tls",
		 key);
	start_primary(plog, popts, 100);
	cr_assert(eq(int, h_wait(&pri, h_ms(60000)), 0));
	cr_assert(eq(int, h_wait(&sec, h_ms(30000)), 0));
	check_output(100);
}

Test(synth, tls_needs_a_key_and_tcp)
{
	char key[300], plog1[320];

	snprintf(plog1, sizeof(plog1), "%s/primary-nokey.log", dir);
	snprintf(peer, sizeof(peer), "127.0.0.1:%u", h_port());
	start_primary(plog1, "--transport=tcp --tls", 10);
	cr_assert(not(eq(int, h_wait(&pri, h_ms(20000)), 0)));
	expect_one_error(plog1, "--tls needs --auth-key=FILE on both sides");
	if (!kemari_xport_find("ofi"))
		return;
	gen_key(key, sizeof(key), "tls2.key");
	snprintf(plog1, sizeof(plog1), "%s/primary-ofi.log", dir);
	{
		char o[400];

		snprintf(o, sizeof(o),
			 "--transport=ofi --provider=tcp --auth-key=%s --tls",
			 key);
		start_primary(plog1, o, 10);
	}
	cr_assert(not(eq(int, h_wait(&pri, h_ms(20000)), 0)));
	expect_one_error(plog1, "--tls: the ofi transport does not encrypt");
}
