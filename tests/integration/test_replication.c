// SPDX-License-Identifier: MIT
/*
 * Replication over a transport (tcp by default, KEMARI_TEST_TRANSPORT to pick
 * another): failover consistency under kill -9 at random moments and at each
 * protocol phase, secondary loss, refusals, and malformed streams.
 *
 * The consistency check: several clients INCR random keys, retrying each
 * request with the same seq until it is acknowledged; at the end every key
 * equals the number of acknowledged INCRs on it and the values handed out
 * for a key are exactly 1..final. Nothing acknowledged may be lost, nothing
 * applied twice.
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <criterion/parameterized.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "hload.h"
#include "kemari/dirty.h"
#include "kemari/fence.h"
#include "kemari/kemari.h"
#include "kemari/wire.h"
#include "kvclient.h"

static char dir[256], disk[300], plog[300], slog[300], server[64], peer[64],
	common[1024], xport[128];
static struct hproc pri, sec, third; /* third: re-protection's */

static const char *env_or(const char *k, const char *def)
{
	const char *v = getenv(k);

	return v && *v ? v : def;
}

static void setup(void)
{
	uint16_t port = h_port(), rport = h_port();

	h_tmpdir(dir, sizeof(dir));
	snprintf(disk, sizeof(disk), "%s/disk.img", dir);
	snprintf(plog, sizeof(plog), "%s/primary.log", dir);
	snprintf(slog, sizeof(slog), "%s/secondary.log", dir);
	snprintf(server, sizeof(server), "127.0.0.1:%u", port);
	snprintf(peer, sizeof(peer), "%s:%u",
		 env_or("KEMARI_TEST_ADDR", "127.0.0.1"), rport);
	snprintf(xport, sizeof(xport), "--transport=%s",
		 env_or("KEMARI_TEST_TRANSPORT", "tcp"));
	/* Emulated machines stall for longer than the default 200 ms. */
	snprintf(
		common, sizeof(common),
		"--mem=64M --disk=%s --disk-size=16M --net=udp:%s --no-progress %s %s",
		disk, server, xport, env_or("KEMARI_TEST_HB", ""));
	pri.pid = sec.pid = third.pid = 0;
}

static void teardown(void)
{
	h_reap(&pri);
	h_reap(&sec);
	h_reap(&third);
	h_rmtree(dir);
}

TestSuite(replication, .init = setup, .fini = teardown, .timeout = 300);

static void start_secondary(const char *extra)
{
	cr_assert(eq(
		int,
		h_spawn(&sec, slog,
			"@B/kemari-run --role=secondary --listen=%s --guest=@B/guests/kvstore.elf %s %s",
			peer, common, extra ? extra : ""),
		0));
	if (h_wait_log(slog, "waiting for the primary", h_ms(20000))) {
		h_dump(slog);
		cr_fatal("secondary did not start");
	}
}

static void start_primary(const char *extra)
{
	cr_assert(eq(
		int,
		h_spawn(&pri, plog,
			"@B/kemari-run --role=primary --peer=%s --guest=@B/guests/kvstore.elf %s %s",
			peer, common, extra ? extra : ""),
		0));
}

static void wait_ready(void)
{
	if (h_kv_ready(server, h_ms(30000))) {
		h_dump(plog);
		h_dump(slog);
		cr_fatal("kvstore not serving");
	}
}

/* The guest on that side stopped on a CPU exception (its own report) or
 * a triple fault (before the runtime had exception handlers). */
static bool guest_crashed(const char *log)
{
	return h_log_has(log, "guest stopped") ||
	       h_log_has(log, "panic: CPU exception");
}

static void load_start(struct h_load *l)
{
	h_load_start(l, server, 3, 4, h_ms(30000));
}

static void load_check(struct h_load *l)
{
	h_load_check(l, plog, slog);
}

static void wait_takeover(void)
{
	if (h_wait_log(slog, "takeover: resumed from epoch", h_ms(30000))) {
		int st;

		cr_log_info("exit %d of the diagnostics",
			    system("ss -tuanp; ps -ef | grep kemari"));
		h_dump(plog);
		/* Last, so that a shortened CI log still shows it. */
		h_dump(slog);
		st = h_wait(&sec, 0);
		cr_fatal("secondary did not take over (%s %d)",
			 st == -ETIMEDOUT ? "still running," : "exit status",
			 st);
	}
}

/*
 * After a takeover and its load: the new primary still runs and answers
 * one more request; if not, the end of its log says why.
 */
static void check_new_primary(void)
{
	if (!h_serving(&sec, slog, server, "the new primary"))
		cr_fatal("the new primary is not serving after the takeover");
}

/* Epoch the secondary resumed from, from its one-line takeover report. */
static long long resumed_epoch(void)
{
	return h_log_number(slog, "resumed from epoch ");
}

ParameterizedTestParameters(replication, kill9_at_random_moment)
{
	static int runs[64];
	int n = atoi(env_or("KEMARI_FAILOVER_RUNS", "20"));

	n = n < 1 ? 1 : n > 64 ? 64 : n;
	for (int i = 0; i < n; i++)
		runs[i] = i;
	return cr_make_param_array(int, runs, (size_t)n);
}

/*
 * A guest that crashes fails the run, wherever it runs. (Inside the
 * emulated test VM such crashes were the emulated machine's: with nested
 * paging its CPU now and then resumed a guest with the host kernel's RIP
 * and page tables, with or without replication. The VM runs kvm_amd with
 * npt=0 since, and nothing is run again for a crash: docs/testing.md.)
 * A primary whose guest dies does not end in order: the secondary takes
 * over (primary_guest_crash_is_taken_over).
 */
ParameterizedTest(int *run, replication, kill9_at_random_moment)
{
	struct h_load *l = calloc(1, sizeof(*l));
	unsigned int delay;

	cr_assert(l != NULL);
	srand((unsigned int)time(NULL) ^ (unsigned int)(*run * 7919));
	delay = 200 + (unsigned int)rand() % 1500;
	start_secondary(NULL);
	start_primary(NULL);
	wait_ready();
	load_start(l);
	usleep((useconds_t)h_ms((int)delay) * 1000);
	if (h_wait(&pri, 0) >= 0) {
		h_dump(plog);
		h_dump(slog);
		cr_fatal("run %d: the primary ended before the kill%s", *run,
			 guest_crashed(plog) ? ": its guest crashed (above)"
					     : "");
	}
	h_kill(&pri, SIGKILL);
	cr_log_info("run %d: primary killed after %u ms of load", *run, delay);
	wait_takeover();
	usleep((useconds_t)h_ms(500) * 1000);
	h_load_stop(l);
	if (l->err && guest_crashed(slog)) {
		h_dump(plog);
		h_dump(slog);
		cr_fatal("run %d: the secondary's guest crashed after the takeover (above)",
			 *run);
	}
	load_check(l);
	check_new_primary();
	if (h_log_has(slog, "error")) {
		h_dump(slog);
		cr_fatal("an error line in the secondary's log (above)");
	}
}

struct phase_case {
	char fault[16]; /* no pointers: parameters cross into a new process */
	int committed;	/* 1: epoch N is committed at the secondary */
};

ParameterizedTestParameters(replication, kill9_at_each_phase)
{
	static struct phase_case cases[] = {
		{ "before-push", 0 },  { "mid-push", 0 },  { "after-push", 0 },
		{ "after-commit", 1 }, { "after-ack", 1 },
	};

	return cr_make_param_array(struct phase_case, cases,
				   sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct phase_case *pc, replication, kill9_at_each_phase)
{
	const long long at = 40;
	struct h_load l;
	char fault[64];

	snprintf(fault, sizeof(fault), "--fault=%s:%lld", pc->fault, at);
	start_secondary(NULL);
	start_primary(fault);
	wait_ready();
	load_start(&l);
	if (h_wait_log(plog, "fault injection: crashing at", h_ms(60000))) {
		h_dump(plog);
		cr_fatal("fault never fired");
	}
	cr_assert(eq(int, h_wait(&pri, h_ms(10000)), 128 + SIGKILL));
	wait_takeover();
	/* Before a commit arrives the epoch is discarded; after, it is kept. */
	cr_assert(eq(i64, resumed_epoch(), pc->committed ? at : at - 1), "%s",
		  pc->fault);
	usleep((useconds_t)h_ms(300) * 1000);
	load_check(&l);
	check_new_primary();
}

/*
 * The new primary serves on for seconds under load after a takeover, long
 * enough for its vCPU to fill KVM's dirty ring (nobody harvests it while
 * the guest runs unprotected, until a ring-full exit). Natively under PVM,
 * KVM logged past the ring's end there and our harvest then found an
 * unwritten entry where KVM's next one was due: the vCPU exited for a full
 * ring forever and the guest never answered again (make demo failed 4 of 4
 * on such a host); --dirty-track=auto now takes the bitmap there
 * (hv/kvm/vm.c).
 */
Test(replication, takeover_then_seconds_of_load_are_served)
{
	struct h_load l;

	start_secondary(NULL);
	start_primary(NULL);
	wait_ready();
	h_load_start(&l, server, 4, 8, h_ms(30000));
	usleep((useconds_t)h_ms(1000) * 1000);
	h_kill(&pri, SIGKILL);
	wait_takeover();
	usleep((useconds_t)h_ms(5000) * 1000);
	load_check(&l);
	check_new_primary();
}

Test(replication, kill9_during_initial_sync_then_new_primary)
{
	char reply[128];

	start_secondary(NULL);
	start_primary("--fault=sync");
	cr_assert(eq(int, h_wait(&pri, h_ms(30000)), 128 + SIGKILL));
	cr_assert(eq(int,
		     h_wait_log(slog,
				"nothing to take over; waiting for a primary",
				h_ms(10000)),
		     0));
	/* It neither took over nor bound the service address. */
	cr_assert(not(h_log_has(slog, "takeover")));
	cr_assert(eq(int, h_kv_ready(server, h_ms(1000)), -ETIMEDOUT));
	start_primary(NULL);
	wait_ready();
	cr_assert(eq(int, h_kv(server, "c", 1, "INCR z", reply, sizeof(reply)),
		     0));
	cr_assert(eq(str, reply, "OK 1"));
}

Test(replication, secondary_killed_primary_continues)
{
	char reply[128];

	start_secondary(NULL);
	start_primary("--stats=/dev/null");
	wait_ready();
	cr_assert(eq(int, h_kv(server, "c", 1, "INCR a", reply, sizeof(reply)),
		     0));
	h_kill(&sec, SIGKILL);
	h_wait(&sec, h_ms(5000));
	cr_assert(eq(int,
		     h_wait_log(plog, "continuing unprotected", h_ms(10000)),
		     0));
	cr_assert(eq(int, h_kv(server, "c", 2, "INCR a", reply, sizeof(reply)),
		     0));
	cr_assert(eq(str, reply, "OK 2"));
	h_kill(&pri, SIGTERM);
	cr_assert(eq(int, h_wait(&pri, h_ms(10000)), 0));
	cr_assert(h_log_has(plog, "pause summary: "));
}

/*
 * The whole life cycle under the kvstore load: kill -9 the primary; the
 * secondary takes over and, serving alone, brings in a third side started
 * only then at its --peer (pre-copy while the guest serves, one short
 * pause); kill -9 the second: the third takes over and serves. Every
 * acknowledged INCR is there exactly once.
 */
Test(replication, reprotect_life_cycle_under_load)
{
	struct h_load *l = calloc(1, sizeof(*l));
	char peer3[64], log3[300], extra[128];
	long long e1;

	cr_assert(l != NULL);
	snprintf(peer3, sizeof(peer3), "%s:%u",
		 env_or("KEMARI_TEST_ADDR", "127.0.0.1"), h_port());
	snprintf(log3, sizeof(log3), "%s/third.log", dir);
	snprintf(extra, sizeof(extra), "--peer=%s", peer3);
	start_secondary(extra);
	start_primary(NULL);
	wait_ready();
	load_start(l);
	usleep((useconds_t)h_ms(1000) * 1000);
	h_kill(&pri, SIGKILL);
	wait_takeover();
	e1 = resumed_epoch();
	if (h_wait_log(slog, "re-protection: no secondary at", h_ms(20000))) {
		h_dump(slog);
		cr_fatal("the new primary does not look for a secondary");
	}
	/* Its own --peer: where the second listened (closed by now). */
	cr_assert(eq(
		int,
		h_spawn(&third, log3,
			"@B/kemari-run --role=secondary --listen=%s --peer=%s --guest=@B/guests/kvstore.elf %s",
			peer3, peer, common),
		0));
	if (h_wait_log(slog, "re-protected: the secondary at", h_ms(90000))) {
		h_dump(slog);
		h_dump(log3);
		cr_fatal("the third side was never brought in");
	}
	cr_assert(eq(i64, h_log_number(slog, "holds epoch "), e1 + 1));
	{
		char line[1024];

		if (h_log_line(slog, "re-protected: ", line, sizeof(line)))
			cr_log_info("%s", strstr(line, "re-protected: "));
	}
	usleep((useconds_t)h_ms(1000) * 1000);
	h_kill(&sec, SIGKILL);
	if (h_wait_log(log3, "takeover: resumed from epoch", h_ms(30000))) {
		h_dump(slog);
		h_dump(log3);
		cr_fatal("the third side did not take over");
	}
	cr_assert(gt(i64, h_log_number(log3, "resumed from epoch "), e1));
	usleep((useconds_t)h_ms(500) * 1000);
	h_load_check(l, slog, log3);
	if (!h_serving(&third, log3, server, "the third side"))
		cr_fatal("the third side is not serving after its takeover");
	free(l);
}

static void switchover(const char *sock)
{
	if (h_ctl(dir, sock, "switchover")) {
		h_dump(plog);
		h_dump(slog);
		cr_fatal("kemari-ctl switchover failed");
	}
}

static void expect_line(const char *log, const char *needle, int ms)
{
	if (h_wait_log(log, needle, h_ms(ms))) {
		h_dump(plog);
		h_dump(slog);
		cr_fatal("no '%s' in %s", needle, log);
	}
}

/*
 * Planned switchovers under the kvstore load, there and back: each side
 * has --peer and --listen; the secondary takes over at once from the
 * primary's last epoch, the old primary becomes its secondary through
 * re-protection, and the second switchover hands the guest back. Every
 * acknowledged INCR exactly once; the clients' longest wait for a reply
 * (the gap a switchover costs them) is printed.
 */
Test(replication, switchover_there_and_back_under_load)
{
	struct h_load *l = calloc(1, sizeof(*l));
	char back[64], ctl_p[320], ctl_s[320], extra[512];
	/*
	 * No heartbeat may be lost on either side (asserted below), with
	 * kemari-run's own timeout (200 ms natively): CI once saw a 650 ms
	 * gap for the clients and a "primary lost" here, while the primary's
	 * heartbeats still came from the thread that waits on the guest's
	 * disk FLUSH; they have their own thread now (primary__heartbeats).
	 */
	cr_assert(l != NULL);
	snprintf(back, sizeof(back), "%s:%u",
		 env_or("KEMARI_TEST_ADDR", "127.0.0.1"), h_port());
	snprintf(ctl_p, sizeof(ctl_p), "%s/p.sock", dir);
	snprintf(ctl_s, sizeof(ctl_s), "%s/s.sock", dir);
	snprintf(extra, sizeof(extra), "--peer=%s --control=%s", back, ctl_s);
	start_secondary(extra);
	snprintf(extra, sizeof(extra), "--listen=%s --control=%s", back, ctl_p);
	start_primary(extra);
	wait_ready();
	load_start(l);
	usleep((useconds_t)h_ms(1000) * 1000);
	switchover(ctl_p);
	expect_line(slog, "takeover: resumed from epoch", 30000);
	cr_assert(h_log_has(slog, "the primary hands the guest over"));
	/* The old primary says so once the secondary hung up. */
	expect_line(plog, "serves the guest from epoch ", 20000);
	cr_assert(eq(i64, h_log_number(plog, "serves the guest from epoch "),
		     resumed_epoch()));
	expect_line(slog, "re-protected: the secondary at", 90000);
	usleep((useconds_t)h_ms(1000) * 1000);
	switchover(ctl_s);
	expect_line(plog, "takeover: resumed from epoch", 30000);
	expect_line(plog, "re-protected: the secondary at", 90000);
	usleep((useconds_t)h_ms(500) * 1000);
	h_load_check(l, plog, slog);
	cr_log_info(
		"switchover there and back: the clients' longest wait for a reply %.1f ms (p99 %.1f ms)",
		(double)l->res.max_gap_us / 1000,
		(double)l->res.lat_p99_us / 1000);
	if (h_log_has(slog, "primary lost") ||
	    h_log_has(plog, "primary lost")) {
		h_dump(plog);
		h_dump(slog);
		cr_fatal("a side lost its peer during a planned switchover");
	}
	if (!h_serving(&pri, plog, server, "the primary, switched back"))
		cr_fatal("the guest is not served after switching back");
	free(l);
}

Test(replication, orderly_primary_stop_is_not_a_failure)
{
	char cause[96];

	start_secondary(NULL);
	start_primary(NULL);
	wait_ready();
	h_kill(&pri, SIGTERM);
	cr_assert(eq(int, h_wait(&pri, h_ms(10000)), 0));
	cr_assert(eq(int, h_wait(&sec, h_ms(10000)), 0));
	cr_assert(h_log_has(slog, "the primary shut down in order"));
	cr_assert(not(h_log_has(slog, "takeover")));
	/* Its cause, with the sender (this test), in the primary's log. */
	snprintf(cause, sizeof(cause),
		 "kemari-run[primary]: stopping on SIGTERM from pid %d (",
		 (int)getpid());
	cr_assert(h_log_has(plog, cause), "'%s' not in the primary's log",
		  cause);
}

/*
 * The primary's guest dies (a real triple fault, injected by its VMM after
 * the ack of epoch 40) while kemari-run lives on: a failure. The secondary
 * is told at once, serves from exactly epoch 40, and no acknowledged update
 * is lost or applied twice. Afterwards it is still serving.
 */
Test(replication, primary_guest_crash_is_taken_over)
{
	struct h_load l;

	start_secondary(NULL);
	start_primary("--fault=guest-crash:40");
	wait_ready();
	load_start(&l);
	if (h_wait(&pri, h_ms(60000)) != 1) {
		h_dump(plog);
		cr_fatal("the primary did not end with status 1");
	}
	cr_assert(h_log_has(plog, "guest stopped: triple fault"));
	cr_assert(h_log_has(plog, "the secondary takes over from epoch 40"));
	wait_takeover();
	cr_assert(h_log_has(slog, "its guest or VMM failed"));
	cr_assert(eq(i64, resumed_epoch(), 40));
	usleep((useconds_t)h_ms(300) * 1000);
	load_check(&l);
	check_new_primary();
}

/* Spawn a pair on another guest image (both sides name the same one). */
static void start_pair_with(const char *guest, const char *args)
{
	cr_assert(eq(
		int,
		h_spawn(&sec, slog,
			"@B/kemari-run --role=secondary --listen=%s --guest=%s %s %s",
			peer, guest, common, args),
		0));
	if (h_wait_log(slog, "waiting for the primary", h_ms(20000))) {
		h_dump(slog);
		cr_fatal("secondary did not start");
	}
	cr_assert(eq(
		int,
		h_spawn(&pri, plog,
			"@B/kemari-run --role=primary --peer=%s --guest=%s %s %s",
			peer, guest, common, args),
		0));
}

/* A guest that panics is not powering off: the secondary takes over, and
 * (a deterministic bug) its guest panics the same way. */
Test(replication, primary_guest_panic_is_a_failure)
{
	start_pair_with("@B/guests/fault.elf", "");
	cr_assert(eq(int, h_wait(&pri, h_ms(60000)), 1));
	cr_assert(h_log_has(plog, "panic: CPU exception 14 (#PF)"));
	/* Its own exit port, with a status that is not a clean poweroff. */
	cr_assert(
		h_log_has(plog, "the guest powered off (status 1) at RIP 0x"));
	cr_assert(h_log_has(
		plog,
		"the guest ended with status 1, not a clean poweroff: the secondary takes over from epoch 0"));
	cr_assert(eq(int, h_wait(&sec, h_ms(60000)), 1));
	cr_assert(h_log_has(slog, "takeover: resumed from epoch 0"));
	cr_assert(h_log_has(slog, "guest(secondary): panic: CPU exception 14"));
}

/* The guest's own clean end (status 0) is orderly: nobody takes over. */
Test(replication, guest_poweroff_is_orderly)
{
	start_pair_with("@B/guests/dirtier.elf",
			"--guest-arg=rounds=30 --guest-arg=pages=4");
	cr_assert(eq(int, h_wait(&pri, h_ms(60000)), 0));
	cr_assert(eq(int, h_wait(&sec, h_ms(20000)), 0));
	cr_assert(
		h_log_has(plog, "the guest powered off (status 0) at RIP 0x"));
	cr_assert(
		h_log_has(slog, "the primary shut down in order at epoch 30"));
	cr_assert(not(h_log_has(slog, "takeover")));
}

static const char *primary_version; /* pose as this protocol version */

static void expect_refusal(const char *pextra, const char *sextra,
			   const char *needle)
{
	start_secondary(sextra);
	if (primary_version)
		setenv("KEMARI_TEST_PROTO_VERSION", primary_version, 1);
	cr_assert(eq(int,
		     h_spawn(&pri, plog,
			     "@B/kemari-run --role=primary --peer=%s %s %s",
			     peer, common, pextra),
		     0));
	cr_assert(eq(int, h_wait(&pri, h_ms(30000)), 1));
	if (!h_log_has(plog, needle) || !h_log_has(slog, needle)) {
		h_dump(plog);
		h_dump(slog);
		cr_fail("'%s' not in both logs", needle);
	}
}

Test(replication, ram_size_mismatch_refused)
{
	expect_refusal(
		"--guest=@B/guests/kvstore.elf --mem=128M", NULL,
		"guest RAM 128 MiB on the primary but 64 MiB here: use the same --mem");
}

Test(replication, image_mismatch_refused)
{
	expect_refusal("--guest=@B/guests/dirtier.elf", NULL,
		       "on the primary but ");
	cr_assert(h_log_has(plog, "guest image hash "));
}

Test(replication, protocol_version_mismatch_refused)
{
	char want[80];

	primary_version = "99";
	snprintf(want, sizeof(want),
		 "protocol version 99 on the primary but %d here",
		 KEMARI_PROTO_VERSION);
	expect_refusal("--guest=@B/guests/kvstore.elf", NULL, want);
}

/* --- hand-made streams ---------------------------------------------------- */

/* They are tcp frames on a plain socket; other transports have their own
 * wire (ofi: libfabric's connection protocol, RMA for pages). */
static void raw_streams_need_tcp(void)
{
	const char *t = env_or("KEMARI_TEST_TRANSPORT", "tcp");

	if (strcmp(t, "tcp"))
		cr_skip_test(
			"hand-made tcp streams do not apply to --transport=%s",
			t);
}

static int raw_connect(void)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	char host[64];
	char *colon;
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	snprintf(host, sizeof(host), "%s", peer);
	colon = strrchr(host, ':');
	*colon = 0;
	inet_pton(AF_INET, host, &sa.sin_addr);
	sa.sin_port = htons((uint16_t)atoi(colon + 1));
	cr_assert(eq(int, connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0));
	return fd;
}

static void raw_frame(int fd, uint16_t type, const void *p, uint32_t len)
{
	struct kemari_wire_hdr h;

	kemari_wire__seal(&h, type, 0, p, len);
	cr_assert(eq(long, write(fd, &h, sizeof(h)), (long)sizeof(h)));
	if (len)
		cr_assert(eq(long, write(fd, p, len), (long)len));
}

/* A 16 MiB disk file at path, as a primary would create it. */
static void make_disk(const char *path)
{
	int fd = open(path, O_RDWR | O_CREAT, 0644);

	cr_assert(ge(int, fd, 0));
	cr_assert(eq(int, ftruncate(fd, 16 << 20), 0));
	close(fd);
}

static void raw_hello(int fd)
{
	struct kemari_hello h = { .proto_version = KEMARI_PROTO_VERSION,
				  .page_size = 4096,
				  .ram_size = 64ULL << 20,
				  .ncpus = 1 };
	char path[320];
	struct kemari_wire_hdr w;
	struct kemari_fence f;

	snprintf(path, sizeof(path), "%s/guests/kvstore.elf", h_build());
	cr_assert(eq(int, kemari_hash_file(path, &h.image_hash), 0));
	snprintf(h.hv, sizeof(h.hv), "kvm");
	/* The shared disk and its identity, as a primary creates them
	 * (version 5): the secondary never creates the disk. */
	make_disk(disk);
	snprintf(path, sizeof(path), "%s.kemari", disk);
	cr_assert(eq(int, kemari_fence__open(&f, path, true), 0));
	memcpy(h.disk_id, f.disk_id, sizeof(h.disk_id));
	h.fence_gen = f.gen;
	kemari_fence__close(&f);
	raw_frame(fd, KEMARI_MSG_HELLO, &h, sizeof(h));
	/* WELCOME */
	cr_assert(eq(long, read(fd, &w, sizeof(w)), (long)sizeof(w)));
	cr_assert(eq(u16, w.type, KEMARI_MSG_WELCOME));
	{
		char buf[256];

		cr_assert(eq(long, read(fd, buf, w.len), (long)w.len));
	}
}

static void secondary_survives(const char *needle)
{
	char reply[64];

	if (h_wait_log(slog, needle, h_ms(10000))) {
		h_dump(slog);
		cr_fatal("no '%s'", needle);
	}
	cr_assert(not(h_log_has(slog, "takeover")));
	cr_assert(eq(int, h_kv_ready(server, h_ms(500)), -ETIMEDOUT));
	/* Still a working secondary: a real primary syncs and serves. */
	start_primary(NULL);
	wait_ready();
	cr_assert(eq(int, h_kv(server, "c", 1, "INCR q", reply, sizeof(reply)),
		     0));
	cr_assert(eq(str, reply, "OK 1"));
}

Test(replication, garbage_stream_refused)
{
	int fd;

	raw_streams_need_tcp();
	start_secondary(NULL);
	fd = raw_connect();
	cr_assert(eq(long,
		     write(fd, "GET / HTTP/1.0\r\n\r\n_padding_padding", 34),
		     34L));
	secondary_survives("bad frame magic 0x20544547 (not a Kemari peer");
	close(fd);
}

Test(replication, out_of_bounds_run_refused)
{
	struct kemari_run r = { .pfn = (64ULL << 20) / 4096 - 1, .npages = 2 };
	int fd;

	raw_streams_need_tcp();
	start_secondary(NULL);
	fd = raw_connect();
	raw_hello(fd);
	raw_frame(fd, KEMARI_MSG_PAGES, &r, sizeof(r));
	secondary_survives(
		"malformed replication stream: replication stream: run of 2 pages at page 16383 is outside the 16384-page guest RAM");
	close(fd);
}

Test(replication, bad_checksum_refused)
{
	struct kemari_wire_hdr h;
	uint32_t junk = 7;
	int fd;

	raw_streams_need_tcp();
	start_secondary(NULL);
	fd = raw_connect();
	raw_hello(fd);
	kemari_wire__seal(&h, KEMARI_MSG_HEARTBEAT, 0, &junk, sizeof(junk));
	h.crc ^= 1;
	cr_assert(eq(long, write(fd, &h, sizeof(h)), (long)sizeof(h)));
	cr_assert(eq(long, write(fd, &junk, 4), 4L));
	secondary_survives("checksum mismatch in a HEARTBEAT frame");
	close(fd);
}

Test(replication, truncated_stream_is_not_taken_over)
{
	struct kemari_run r = { .pfn = 0, .npages = 4 };
	char page[4096] = { 1 };
	int fd;

	raw_streams_need_tcp();
	start_secondary(NULL);
	fd = raw_connect();
	raw_hello(fd);
	raw_frame(fd, KEMARI_MSG_PAGES, &r, sizeof(r));
	cr_assert(eq(long, write(fd, page, sizeof(page)), 4096L));
	close(fd); /* three pages and the commit never come */
	secondary_survives("primary lost before the initial sync completed");
}

Test(replication, silent_primary_detected_by_heartbeat)
{
	struct h_load l;

	start_secondary(NULL);
	start_primary(NULL);
	wait_ready();
	load_start(&l);
	usleep((useconds_t)h_ms(300) * 1000);
	/* A hung host: no crash, no closed connection, just silence. */
	h_kill(&pri, SIGSTOP);
	if (h_wait_log(slog, "primary lost at epoch", h_ms(20000))) {
		h_dump(slog);
		cr_fatal("silence not detected");
	}
	cr_assert(h_log_has(slog, "no heartbeat for"));
	/* Fence it (it still holds the service address on this host). */
	h_kill(&pri, SIGKILL);
	wait_takeover();
	load_check(&l);
	check_new_primary();
}

/* The heartbeat timeout both sides run with (KEMARI_TEST_HB, else 200). */
static int hb_timeout_ms(void)
{
	const char *hb = strstr(env_or("KEMARI_TEST_HB", ""),
				"--heartbeat-timeout-ms=");

	return hb ? atoi(strchr(hb, '=') + 1) : 200;
}

/*
 * A stall of the host under both sides (both processes stopped at once,
 * three times, each for twice the heartbeat timeout, as a loaded host or
 * its own hypervisor does to them; CI saw 650 ms natively) is no failure:
 * each side finds each pause its own and says so (engine__own_pause),
 * neither takes over nor goes on alone, and the pair stays protected: a
 * kill -9 after it is taken over with every acknowledged update exactly
 * once. Without the own-pause accounting the first stall split the pair.
 */
/* Both sides still together: neither lost the other, took over or ended. */
static void expect_no_split(const char *over)
{
	static const char *const split[] = { "primary lost", "secondary lost",
					     "won the fence", "takeover" };

	for (size_t i = 0; i < sizeof(split) / sizeof(split[0]); i++)
		if (h_log_has(plog, split[i]) || h_log_has(slog, split[i])) {
			h_dump(plog);
			h_dump(slog);
			cr_fatal("the pair split over %s: '%s' (above)", over,
				 split[i]);
		}
	cr_assert(h_wait(&pri, 0) < 0 && h_wait(&sec, 0) < 0,
		  "a side ended during %s", over);
}

Test(replication, host_stall_under_both_sides_is_not_a_failure)
{
	struct h_load *l = calloc(1, sizeof(*l));
	const int stall_ms = 2 * hb_timeout_ms(), stalls = 3;

	cr_assert(l != NULL);
	start_secondary(NULL);
	start_primary(NULL);
	wait_ready();
	load_start(l);
	usleep((useconds_t)h_ms(500) * 1000);
	for (int i = 0; i < stalls; i++) {
		h_kill(&pri, SIGSTOP);
		h_kill(&sec, SIGSTOP);
		usleep((useconds_t)stall_ms * 1000);
		h_kill(&sec, SIGCONT);
		h_kill(&pri, SIGCONT);
		usleep((useconds_t)h_ms(500) * 1000);
	}
	expect_no_split("stalls of both sides");
	/* Each side says each stall, whatever it heard first after it
	 * (CI once saw neither say it: a message that ended the pause hid
	 * it). Other stalls of the host may add lines, never remove one. */
	if (h_count_lines(plog, "its own pause") < stalls ||
	    h_count_lines(slog, "its own pause") < stalls) {
		h_dump(plog);
		h_dump(slog);
		cr_fatal(
			"%d stalls, but the primary said %d own pauses and the secondary %d (above)",
			stalls, h_count_lines(plog, "its own pause"),
			h_count_lines(slog, "its own pause"));
	}
	h_kill(&pri, SIGKILL);
	wait_takeover();
	usleep((useconds_t)h_ms(500) * 1000);
	load_check(l);
	check_new_primary();
	free(l);
}

/*
 * A primary whose disk is slow to flush (each FLUSH twice the heartbeat
 * timeout late, KEMARI_TEST_SLOW_FLUSH, as a host busy writing back makes
 * it: a fresh CI run saw the secondary declare "no heartbeat for 200 ms"
 * and take over from a primary that logged nothing) is alive: its
 * heartbeats go on from their own thread while the guest's loop waits for
 * the disk, the secondary does not take over, and a kill -9 afterwards is
 * taken over exactly once.
 */
Test(replication, slow_disk_flush_is_not_a_failure)
{
	struct h_load *l = calloc(1, sizeof(*l));
	const int slow_ms = 2 * hb_timeout_ms();
	char ms[16];

	cr_assert(l != NULL);
	snprintf(ms, sizeof(ms), "%d", slow_ms);
	start_secondary(NULL);
	setenv("KEMARI_TEST_SLOW_FLUSH", ms, 1);
	start_primary(NULL);
	unsetenv("KEMARI_TEST_SLOW_FLUSH");
	wait_ready();
	load_start(l);
	/* Four flushes' worth of load, each FLUSH slow_ms late. */
	usleep((useconds_t)(4 * slow_ms) * 1000);
	expect_no_split("slow disk flushes on the primary");
	h_kill(&pri, SIGKILL);
	wait_takeover();
	usleep((useconds_t)h_ms(500) * 1000);
	load_check(l);
	cr_assert(gt(u64, l->res.acked, 2), "too few updates to tell");
	check_new_primary();
	free(l);
}

Test(replication, silent_secondary_detected_by_heartbeat)
{
	char reply[64];

	start_secondary(NULL);
	start_primary(NULL);
	wait_ready();
	h_kill(&sec, SIGSTOP);
	cr_assert(eq(int, h_kv(server, "c", 1, "INCR s", reply, sizeof(reply)),
		     0));
	cr_assert(eq(str, reply, "OK 1"));
	cr_assert(eq(int,
		     h_wait_log(plog, "continuing unprotected", h_ms(20000)),
		     0));
	cr_assert(h_log_has(plog, "secondary lost"));
	h_kill(&sec, SIGKILL);
}

Test(replication, two_vcpus_fail_over)
{
	struct h_load l;

	start_secondary("--cpus=2");
	start_primary("--cpus=2");
	wait_ready();
	load_start(&l);
	usleep((useconds_t)h_ms(800) * 1000);
	h_kill(&pri, SIGKILL);
	wait_takeover();
	usleep((useconds_t)h_ms(300) * 1000);
	load_check(&l);
	check_new_primary();
}

Test(replication, speculation_and_bitmap_tracking_fail_over)
{
	struct h_load l;

	start_secondary("--dirty-track=bitmap");
	start_primary("--dirty-track=bitmap --speculate-us=500");
	wait_ready();
	load_start(&l);
	usleep((useconds_t)h_ms(800) * 1000);
	h_kill(&pri, SIGKILL);
	wait_takeover();
	usleep((useconds_t)h_ms(300) * 1000);
	load_check(&l);
	check_new_primary();
}

Test(replication, secondary_loss_with_pause_policy_holds_the_guest)
{
	char reply[64];

	start_secondary(NULL);
	start_primary("--on-secondary-loss=pause");
	wait_ready();
	cr_assert(eq(int, h_kv(server, "c", 1, "INCR p", reply, sizeof(reply)),
		     0));
	h_kill(&sec, SIGKILL);
	cr_assert(eq(int,
		     h_wait_log(plog,
				"guest paused per --on-secondary-loss=pause",
				h_ms(20000)),
		     0));
	/* Nothing leaves the unprotected guest any more. */
	cr_assert(eq(int, h_kv_ready(server, h_ms(1500)), -ETIMEDOUT));
	h_kill(&pri, SIGTERM);
	cr_assert(eq(int, h_wait(&pri, h_ms(10000)), 0));
}

/* --- the secondary's disk --------------------------------------------------- */

/*
 * The primary (on disk.img) is refused with one line on each side naming
 * needle; the secondary keeps listening, and its --disk (sdisk, if not
 * NULL) is still missing: nobody created it.
 */
static void expect_disk_refusal(const char *sextra, const char *pextra,
				const char *needle, const char *sdisk)
{
	int st;

	start_secondary(sextra);
	if (sdisk)
		cr_assert(eq(int, access(sdisk, F_OK), -1),
			  "the secondary created %s at start", sdisk);
	start_primary(pextra);
	st = h_wait(&pri, h_ms(30000));
	if (st != 1 || h_count_lines(plog, needle) != 1 ||
	    h_count_lines(slog, needle) != 1) {
		h_dump(plog);
		h_dump(slog);
		cr_fatal("primary exit %d; '%s' not once in each log", st,
			 needle);
	}
	cr_assert(eq(int, h_count_lines(plog, "the secondary refused: "), 1));
	cr_assert(eq(int, h_count_lines(slog, "refusing the primary: "), 1));
	if (sdisk)
		cr_assert(eq(int, access(sdisk, F_OK), -1), "%s was created",
			  sdisk);
	cr_assert(eq(int, h_wait(&sec, 0), -ETIMEDOUT), "the secondary ended");
}

/*
 * A secondary whose --disk does not exist does not create it when it
 * starts (the VMM defers the disk to the handshake), and refuses a primary
 * that connects: one line on each side; it keeps listening.
 */
Test(replication, secondary_never_creates_a_missing_disk)
{
	char missing[320], sextra[400], needle[400];

	snprintf(missing, sizeof(missing), "%s/missing.img", dir);
	snprintf(sextra, sizeof(sextra), "--disk=%s", missing);
	snprintf(needle, sizeof(needle),
		 "disk %s does not exist here: a secondary never creates it",
		 missing);
	expect_disk_refusal(sextra, NULL, needle, missing);
}

/* The same without fence records: the VMM's own open refuses it. */
Test(replication, unfenced_secondary_never_creates_a_missing_disk)
{
	char missing[320], sextra[400], needle[400];

	snprintf(missing, sizeof(missing), "%s/missing.img", dir);
	snprintf(sextra, sizeof(sextra), "--disk=%s --fence=none", missing);
	snprintf(needle, sizeof(needle),
		 "disk %s does not exist here: a secondary never creates it",
		 missing);
	expect_disk_refusal(sextra, "--fence=none", needle, missing);
}

/*
 * A secondary on another disk (its own fence record, another identity)
 * refuses a primary on disk.img with one line on each side, then serves
 * a primary on its disk: the disk the VMM opened at that handshake is the
 * one the guest uses after the takeover.
 */
Test(replication, secondary_refuses_another_disk_then_takes_over_on_its_own)
{
	char other[320], fence[330], sextra[400], reply[64];
	struct kemari_fence f;

	snprintf(other, sizeof(other), "%s/other.img", dir);
	snprintf(fence, sizeof(fence), "%s.kemari", other);
	make_disk(other);
	cr_assert(eq(int, kemari_fence__open(&f, fence, true), 0));
	kemari_fence__close(&f);
	snprintf(sextra, sizeof(sextra), "--disk=%s", other);
	expect_disk_refusal(sextra, NULL, "disk identity ", NULL);
	cr_assert(h_log_has(slog, "both sides must use the same shared disk"));
	h_reap(&pri);
	start_primary(sextra);
	wait_ready();
	cr_assert(eq(int, h_kv(server, "c", 1, "INCR d", reply, sizeof(reply)),
		     0));
	cr_assert(eq(str, reply, "OK 1"));
	h_kill(&pri, SIGKILL);
	wait_takeover();
	cr_assert(eq(int, h_kv(server, "c", 2, "INCR d", reply, sizeof(reply)),
		     0));
	cr_assert(eq(str, reply, "OK 2"));
}
