// SPDX-License-Identifier: MIT
/*
 * The rdma transport's one-line errors, end to end through kemari-run: a
 * peer nobody listens at, a listen address in use, and a locked-memory
 * limit too low to register the buffers. Run only with
 * KEMARI_TEST_TRANSPORT=rdma on a machine with an RDMA device (the
 * soft-RoCE test VM: make check-rdma); the no-device line is a unit test.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include "harness.h"

#ifndef CAP_IPC_LOCK
#define CAP_IPC_LOCK 14
#endif

static char dir[256], disk[300], log_a[300], log_b[300], common[600], addr[64];
static struct hproc p1, p2;

static void setup(void)
{
	const char *ip = getenv("KEMARI_TEST_ADDR");

	p1.pid = p2.pid = 0;
	h_tmpdir(dir, sizeof(dir));
	snprintf(disk, sizeof(disk), "%s/disk.img", dir);
	snprintf(log_a, sizeof(log_a), "%s/one.log", dir);
	snprintf(log_b, sizeof(log_b), "%s/two.log", dir);
	snprintf(addr, sizeof(addr), "%s:%u", ip && *ip ? ip : "169.254.77.1",
		 h_port());
	snprintf(
		common, sizeof(common),
		"--guest=@B/guests/kvstore.elf --mem=64M --disk=%s "
		"--net=udp:127.0.0.1:%u --no-progress --transport=rdma --insecure",
		disk, h_port());
}

static void teardown(void)
{
	h_reap(&p1);
	h_reap(&p2);
}

TestSuite(rdma_errors, .init = setup, .fini = teardown, .timeout = 120);

static void need_rdma(void)
{
	const char *tr = getenv("KEMARI_TEST_TRANSPORT");

	if (!tr || strcmp(tr, "rdma"))
		cr_skip_test(
			"needs KEMARI_TEST_TRANSPORT=rdma (make check-rdma)");
}

static void expect_line(const char *log, const char *needle)
{
	if (!h_log_has(log, needle)) {
		h_dump(log);
		cr_fail("no '%s' in %s", needle, log);
	}
}

Test(rdma_errors, nobody_listening_at_the_peer)
{
	char want[200];

	need_rdma();
	cr_assert(eq(int,
		     h_spawn(&p1, log_a,
			     "@B/kemari-run --role=primary --peer=%s "
			     "--connect-timeout-ms=%d %s",
			     addr, h_ms(1000), common),
		     0));
	cr_assert(eq(int, h_wait(&p1, h_ms(30000)), 1));
	snprintf(want, sizeof(want),
		 "error: cannot reach the secondary at %s: ", addr);
	expect_line(log_a, want);
	expect_line(log_a, "(start it first, or check --peer)");
}

Test(rdma_errors, listen_address_in_use)
{
	char want[200];

	need_rdma();
	cr_assert(eq(int,
		     h_spawn(&p1, log_a,
			     "@B/kemari-run --role=secondary --listen=%s %s",
			     addr, common),
		     0));
	if (h_wait_log(log_a, "waiting for the primary", h_ms(20000))) {
		h_dump(log_a);
		cr_fatal("first secondary did not start");
	}
	cr_assert(eq(int,
		     h_spawn(&p2, log_b,
			     "@B/kemari-run --role=secondary --listen=%s %s",
			     addr, common),
		     0));
	cr_assert(eq(int, h_wait(&p2, h_ms(20000)), 1));
	snprintf(want, sizeof(want),
		 "error: cannot listen on %s: address already in use (another "
		 "secondary?)",
		 addr);
	expect_line(log_b, want);
}

Test(rdma_errors, locked_memory_limit_too_low)
{
	struct rlimit rl = { .rlim_cur = 1 << 20, .rlim_max = 1 << 20 };

	need_rdma();
	if (getuid() != 0)
		cr_skip_test("needs root to give up CAP_IPC_LOCK");
	/* Children of this test process lose the capability that lifts the
	 * limit, and get 1 MiB of locked memory. */
	cr_assert(eq(int, prctl(PR_CAPBSET_DROP, CAP_IPC_LOCK, 0, 0, 0), 0));
	cr_assert(eq(int, setrlimit(RLIMIT_MEMLOCK, &rl), 0));
	cr_assert(eq(int,
		     h_spawn(&p1, log_a,
			     "@B/kemari-run --role=primary --peer=%s "
			     "--connect-timeout-ms=%d %s",
			     addr, h_ms(1000), common),
		     0));
	cr_assert(eq(int, h_wait(&p1, h_ms(30000)), 1));
	expect_line(log_a,
		    "the locked-memory limit RLIMIT_MEMLOCK is 1024 KiB");
	expect_line(log_a, "raise it (ulimit -l unlimited, or "
			   "LimitMEMLOCK=infinity in a systemd unit)");
}
