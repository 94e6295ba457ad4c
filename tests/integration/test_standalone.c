// SPDX-License-Identifier: MIT
/*
 * The built-in KVM VMM and the guests, standalone: boot, block and net round
 * trips, the kvstore protocol end to end, durability across kill -9, dirty
 * tracking of backend writes, and each one-line error.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../../hv/kvm/kvm.h"
#include "harness.h"
#include "kemari/hv.h"
#include "kemari/kemari.h"
#include "kvclient.h"

extern const struct kemari_hv_ops kemari_hv_kvm;

static char dir[256], disk[300], log_[300], server[64], netarg[80];
static struct hproc vm;

static void setup(void)
{
	uint16_t port = h_port();

	h_tmpdir(dir, sizeof(dir));
	snprintf(disk, sizeof(disk), "%s/disk.img", dir);
	snprintf(log_, sizeof(log_), "%s/vm.log", dir);
	snprintf(server, sizeof(server), "127.0.0.1:%u", port);
	snprintf(netarg, sizeof(netarg), "udp:%s", server);
	vm.pid = 0;
}

static void teardown(void)
{
	h_reap(&vm);
	h_rmtree(dir);
}

static void start_kvstore(const char *extra)
{
	cr_assert(eq(
		int,
		h_spawn(&vm, log_,
			"@B/kemari-run --guest=@B/guests/kvstore.elf --mem=64M --disk=%s --net=%s %s",
			disk, netarg, extra ? extra : "--disk-size=16M"),
		0));
	if (h_kv_ready(server, h_ms(20000))) {
		h_dump(log_);
		cr_fatal("kvstore did not answer PING");
	}
}

/* One request of client "t" with seq, expecting exactly want. */
static void expect(uint64_t seq, const char *cmd, const char *want)
{
	char reply[512];
	int err = h_kv(server, "t", seq, cmd, reply, sizeof(reply));

	cr_assert(eq(int, err, 0), "no reply to '%s'", cmd);
	cr_assert(eq(str, reply, (char *)want), "'%s' -> '%s'", cmd, reply);
}

TestSuite(standalone, .init = setup, .fini = teardown, .timeout = 120);

Test(standalone, kvstore_net_round_trip)
{
	start_kvstore(NULL);
	expect(1, "PING", "OK PONG");
	cr_assert(h_log_has(log_, "guest: kvstore: ready, 0 records replayed"));
}

Test(standalone, kvstore_protocol_end_to_end)
{
	char long_key[70], key64[65], cmd[200], reply[256];
	struct kv_client c;

	start_kvstore(NULL);
	expect(1, "PING", "OK PONG");
	expect(2, "GET a", "NOTFOUND");
	expect(3, "SET a hello", "OK");
	expect(4, "GET a", "OK hello");
	expect(5, "INCR a", "ERR not-integer");
	expect(6, "GET a", "OK hello");
	expect(7, "INCR n", "OK 1");
	/* A repeated seq gets the cached reply and is not applied again. */
	expect(7, "INCR n", "OK 1");
	expect(8, "GET n", "OK 1");
	expect(5, "GET n", "ERR stale");
	expect(9, "SET m 9223372036854775806", "OK");
	expect(10, "INCR m", "OK 9223372036854775807");
	expect(11, "INCR m", "ERR overflow");
	expect(12, "GET m", "OK 9223372036854775807");
	expect(13, "SET neg -5", "OK");
	expect(14, "INCR neg", "OK -4");
	expect(15, "DEL a", "OK");
	expect(16, "DEL a", "NOTFOUND");
	expect(17, "GET a", "NOTFOUND");
	expect(18, "FROB a", "ERR unknown-command");
	expect(19, "GET", "ERR arity");
	expect(20, "SET a", "ERR arity");
	expect(21, "GET a b", "ERR arity");
	memset(long_key, 'k', 65);
	long_key[65] = 0;
	snprintf(cmd, sizeof(cmd), "SET %s v", long_key);
	expect(22, cmd, "ERR bad-token");
	memset(key64, 'k', 64);
	key64[64] = 0;
	snprintf(cmd, sizeof(cmd), "SET %s v64", key64);
	expect(23, cmd, "OK");
	snprintf(cmd, sizeof(cmd), "GET %s", key64);
	expect(24, cmd, "OK v64");

	/* Undecodable datagrams are dropped or answered, never fatal. */
	cr_assert(eq(int, kv_client__open(&c, server, "raw"), 0));
	cr_assert(eq(int,
		     kv_client__raw(&c, "", 0, reply, sizeof(reply), h_ms(500)),
		     -ETIMEDOUT));
	cr_assert(eq(int,
		     kv_client__raw(&c, "\x01\x02\xff", 3, reply, sizeof(reply),
				    h_ms(500)),
		     -ETIMEDOUT));
	cr_assert(eq(int,
		     kv_client__raw(&c, "x y PING", 8, reply, sizeof(reply),
				    h_ms(5000)),
		     0));
	cr_assert(eq(str, reply, "x y ERR bad-seq"));
	kv_client__close(&c);
	expect(25, "PING", "OK PONG");
}

Test(standalone, kvstore_durable_across_kill9)
{
	start_kvstore(NULL);
	expect(1, "SET x durable", "OK");
	expect(2, "INCR y", "OK 1");
	expect(3, "INCR y", "OK 2");
	expect(4, "INCR y", "OK 3");
	h_kill(&vm, SIGKILL);
	cr_assert(eq(int, h_wait(&vm, h_ms(5000)), 128 + SIGKILL));

	start_kvstore(NULL);
	cr_assert(h_log_has(
		log_, "guest: kvstore: ready, 4 records replayed, 2 keys"));
	/* The exactly-once table survived too: a retry is not re-applied. */
	expect(4, "INCR y", "OK 3");
	expect(3, "INCR y", "ERR stale");
	expect(5, "GET x", "OK durable");
	expect(6, "GET y", "OK 3");
}

Test(standalone, kvstore_log_compacts_on_a_small_disk)
{
	char cmd[64];

	start_kvstore("--disk-size=64K");
	for (int i = 1; i <= 300; i++) {
		char want[32];

		snprintf(want, sizeof(want), "OK %d", i);
		expect((uint64_t)i, "INCR c", want);
	}
	h_kill(&vm, SIGKILL);
	h_wait(&vm, h_ms(5000));
	start_kvstore("--disk-size=64K");
	snprintf(cmd, sizeof(cmd), "GET c");
	expect(301, cmd, "OK 300");
}

Test(standalone, sigterm_stops_cleanly)
{
	start_kvstore(NULL);
	expect(1, "SET k v", "OK");
	h_kill(&vm, SIGTERM);
	cr_assert(eq(int, h_wait(&vm, h_ms(10000)), 0));
}

/* --- in-process: the hypervisor ops directly ----------------------------- */

static struct kemari_hv *hv_boot_mode(const char *guest, const char *arg,
				      int mode)
{
	struct kemari_hv_cfg cfg = {
		.mem_size = 64ULL << 20,
		.ncpus = 1,
		.disk_path = disk,
		.disk_size = 1 << 20,
		.dirty_track = mode,
	};
	struct kemari_hv *hv;
	char path[300];

	if (arg)
		cfg.guest_args[cfg.nguest_args++] = arg;
	snprintf(path, sizeof(path), "%s/guests/%s", h_build(), guest);
	cr_assert(eq(int, kemari_hv_kvm.create(&hv, &cfg), 0), "%s",
		  kemari_last_error(-1));
	cr_assert(eq(int, kemari_hv__load_guest(hv, path), 0), "%s",
		  kemari_last_error(-1));
	return hv;
}

static struct kemari_hv *hv_boot(const char *guest, const char *arg)
{
	return hv_boot_mode(guest, arg, KEMARI_DIRTY_AUTO);
}

Test(standalone, dirtier_counts_rounds)
{
	struct kemari_hv *hv = hv_boot("dirtier.elf", "rounds=50");
	uint64_t rounds = 0;

	cr_assert(eq(int, kemari_hv__run(hv), 0));
	cr_assert(eq(int, kemari_hv__guest_stat(hv, 0, &rounds), 0));
	cr_assert(eq(u64, rounds, 50));
	kemari_hv__destroy(hv);
}

Test(standalone, block_round_trip_with_flush)
{
	struct kemari_hv *hv = hv_boot("blkcheck.elf", "seed=7");
	uint8_t sect[8 * 512];
	int fd;

	cr_assert(eq(int, kemari_hv__run(hv), 0));
	kemari_hv__destroy(hv);
	fd = open(disk, O_RDONLY);
	cr_assert(ge(int, fd, 0));
	cr_assert(eq(long, pread(fd, sect, sizeof(sect), 8 * 512),
		     (long)sizeof(sect)));
	close(fd);
	for (unsigned int i = 0; i < sizeof(sect); i++)
		cr_assert(eq(u8, sect[i], (uint8_t)(7 * 131 + i * 7)),
			  "byte %u", i);
}

static void backend_writes_dirty(int mode)
{
	struct kemari_hv *hv = hv_boot_mode("blkcheck.elf", NULL, mode);
	struct kvm_vm *kvm = kemari_container_of(hv, struct kvm_vm, hv);
	uint64_t rbuf = 0, pfn, last = (64ULL << 20) / 4096 - 1;
	struct kemari_dirty d;

	cr_assert(eq(int, kvm->dirty_ring, mode == KEMARI_DIRTY_RING));
	cr_assert(eq(int, kemari_hv__dirty_start(hv), 0));
	cr_assert(eq(int, kemari_hv__run(hv), 0));
	cr_assert(eq(int, kemari_hv__guest_stat(hv, 1, &rbuf), 0));
	pfn = rbuf / 4096;
	cr_assert(gt(u64, pfn, 256));
	/* The guest only reads that buffer: the block backend wrote it, and
	 * the VMM's own record is what holds it. */
	cr_assert(kvm_vm__pending(kvm, pfn));
	cr_assert(eq(int, kemari_dirty__init(&d, last + 1), 0));
	cr_assert(eq(int, kemari_hv__collect_dirty(hv, &d), 0));
	cr_assert(kemari_dirty__test(&d, pfn));
	cr_assert(not(kemari_dirty__test(&d, last)));
	/* The guest's own writes (its stack, its write buffer) are there. */
	cr_assert(gt(u64, d.count, 2));
	/* Collected means cleared. */
	kemari_dirty__clear(&d);
	cr_assert(eq(int, kemari_hv__collect_dirty(hv, &d), 0));
	cr_assert(not(kemari_dirty__test(&d, pfn)));
	cr_assert(eq(u64, d.count, 0));
	kemari_dirty__fini(&d);
	kemari_hv__destroy(hv);
}

Test(standalone, backend_writes_are_tracked_dirty_bitmap)
{
	backend_writes_dirty(KEMARI_DIRTY_BITMAP);
}

Test(standalone, backend_writes_are_tracked_dirty_ring)
{
	backend_writes_dirty(KEMARI_DIRTY_RING);
}

/* --- one-line errors --------------------------------------------------- */

static void expect_error(const char *args, const char *needle)
{
	cr_assert(eq(int, h_spawn(&vm, log_, "@B/kemari-run %s", args), 0));
	cr_assert(eq(int, h_wait(&vm, h_ms(20000)), 1), "%s", args);
	if (!h_log_has(log_, needle)) {
		h_dump(log_);
		cr_fail("no '%s' in the log of: %s", needle, args);
	}
}

Test(standalone, error_kvm_missing)
{
	setenv("KEMARI_KVM_DEV", "/nonexistent/kvm", 1);
	expect_error("--guest=@B/guests/kvstore.elf",
		     "error: /nonexistent/kvm is missing: load the kvm module");
}

Test(standalone, error_not_a_kvm_device)
{
	setenv("KEMARI_KVM_DEV", "/dev/null", 1);
	expect_error("--guest=@B/guests/kvstore.elf",
		     "error: /dev/null is not a KVM device");
}

Test(standalone, error_kvm_not_permitted)
{
	if (getuid() != 0 || access("/dev/kvm", F_OK))
		cr_skip_test("needs root and /dev/kvm to drop privileges");
	cr_assert(eq(int,
		     h_spawn_as_nobody(
			     &vm, log_,
			     "@B/kemari-run --guest=@B/guests/kvstore.elf"),
		     0));
	cr_assert(eq(int, h_wait(&vm, h_ms(20000)), 1));
	cr_assert(h_log_has(
		log_,
		"error: /dev/kvm: permission denied: run as root or add yourself to the 'kvm' group"));
}

Test(standalone, guest_cpu_exception_is_reported)
{
	expect_error("--guest=@B/guests/fault.elf",
		     "panic: CPU exception 14 (#PF) at RIP 0x");
	cr_assert(h_log_has(log_, "CR2 0x4000000000"));
}

/* Delivery on a broken stack: #DF on its own stack says so (no triple
 * fault, no reset RIP). */
Test(standalone, guest_stack_overflow_is_reported)
{
	expect_error("--guest=@B/guests/fault.elf --guest-arg=mode=overflow",
		     "panic: CPU exception 8 (#DF)");
	cr_assert(h_log_has(
		log_,
		"(stack overflow: the fault hit the guard page below the stack)"));
	cr_assert(not(h_log_has(log_, "triple fault")));
}

Test(standalone, guest_corrupt_stack_pointer_is_reported)
{
	expect_error("--guest=@B/guests/fault.elf --guest-arg=mode=badstack",
		     "panic: CPU exception 8 (#DF)");
	cr_assert(
		h_log_has(log_, "RSP 0x4000000000 (a fault while delivering"));
	cr_assert(not(h_log_has(log_, "triple fault")));
}

Test(standalone, error_image_not_elf)
{
	expect_error("--guest=/etc/hostname",
		     "error: guest image /etc/hostname: not an ELF file");
}

Test(standalone, error_image_wrong_machine)
{
	char src[300], dst[300], cmd[700];
	uint16_t machine = EM_AARCH64;
	int fd;

	snprintf(src, sizeof(src), "%s/guests/kvstore.elf", h_build());
	snprintf(dst, sizeof(dst), "%s/arm.elf", dir);
	snprintf(cmd, sizeof(cmd), "cp %s %s", src, dst);
	cr_assert(eq(int, system(cmd), 0));
	fd = open(dst, O_WRONLY);
	cr_assert(eq(long,
		     pwrite(fd, &machine, 2, offsetof(Elf64_Ehdr, e_machine)),
		     2L));
	close(fd);
	snprintf(cmd, sizeof(cmd), "--guest=%s", dst);
	expect_error(cmd, "not an x86-64 ELF64 image (machine 183)");
}

Test(standalone, error_mem_too_small)
{
	expect_error("--guest=@B/guests/kvstore.elf --mem=2M",
		     "needs 4 MiB of RAM but --mem is 2 MiB: raise --mem");
}

Test(standalone, error_disk_not_writable)
{
	expect_error(
		"--guest=@B/guests/kvstore.elf --disk=/nonexistent/dir/d.img",
		"error: disk /nonexistent/dir/d.img is not writable: No such file or directory");
}

Test(standalone, error_address_in_use)
{
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	struct sockaddr_in sa = { .sin_family = AF_INET };
	char args[300];

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sa.sin_port = htons(h_port());
	cr_assert(eq(int, bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0));
	snprintf(args, sizeof(args),
		 "--guest=@B/guests/kvstore.elf --net=udp:127.0.0.1:%u",
		 ntohs(sa.sin_port));
	expect_error(
		args,
		"address already in use (another kemari-run or service holds it)");
	close(fd);
}
