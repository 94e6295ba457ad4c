// SPDX-License-Identifier: MIT
/*
 * Debian's stock Linux kernel on the built-in VMM (kemari-run --kernel=):
 * boot to the image's ready line, the kvstore over UDP and TCP through a
 * bridge the test creates (169.254.10.0/24, link-local), durability across
 * a kill -9 of the VMM, a 1 MiB file on a filesystem the guest made on its
 * disk surviving a reboot, two vCPUs, and the bad inputs each refused with one
 * line and nothing created. Needs root (TAP, bridge) and the images of
 * make linux-guest-test.
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"

#define LX_BRIDGE "kmrbr0"
#define LX_HOST_IP "169.254.10.1"
#define LX_GUEST "169.254.10.2"
#define LX_SERVER LX_GUEST ":7500"

static char dir[256], disk[300], log_[300], tap[16];
static struct hproc vm;

static void setup(void)
{
	h_tmpdir(dir, sizeof(dir));
	snprintf(disk, sizeof(disk), "%s/disk.img", dir);
	snprintf(log_, sizeof(log_), "%s/vmm.log", dir);
	snprintf(tap, sizeof(tap), "kmrt%u", (unsigned int)getpid() % 10000);
	vm.pid = 0;
	/* The bridge stays for the whole run; the guest is the one host
	 * behind it, at the same address in every test. */
	if (system("ip link show " LX_BRIDGE " >/dev/null 2>&1 || "
		   "{ ip link add " LX_BRIDGE " type bridge && "
		   "ip addr add " LX_HOST_IP "/24 dev " LX_BRIDGE "; }; "
		   "ip link set " LX_BRIDGE " up"))
		cr_fatal("cannot create bridge " LX_BRIDGE
			 " (root and the bridge module needed)");
}

static void teardown(void)
{
	h_reap(&vm);
	/* The TAP goes with the VMM's fd; the address on the bridge stays. */
	h_rmtree(dir);
}

TestSuite(linux_guest, .init = setup, .fini = teardown, .timeout = 900);

/* Start the VMM on the stock (or test) image with extra options. */
static void start(const char *image, const char *append, const char *extra)
{
	cr_assert(eq(
		int,
		h_spawn(&vm, log_,
			"@B/kemari-run --kernel=@B/guests/%s/vmlinuz --initrd=@B/guests/%s/initrd.img --append=console=ttyS0" H_SP
			"acpi=off" H_SP "kemari.ip=" LX_GUEST
			"/24%s%s --mem=256M --disk=%s --disk-size=32M --net=tap:%s,bridge=" LX_BRIDGE
			" %s",
			image, image, append ? H_SP : "", append ? append : "",
			disk, tap, extra ? extra : ""),
		0));
}

static void wait_ready(void)
{
	if (h_wait_log(log_, "kemari-guest: ready", h_ms(120000))) {
		h_dump(log_);
		cr_fatal("the Linux guest never said it was ready");
	}
}

static void expect_kv(uint64_t seq, const char *cmd, const char *want)
{
	char reply[128];

	cr_assert(eq(int, h_kv(LX_SERVER, "lx", seq, cmd, reply, sizeof(reply)),
		     0),
		  "%s", cmd);
	cr_assert(eq(str, reply, (char *)want), "%s", cmd);
}

/* One TCP connection, several request lines, replies in order. */
static void tcp_session(void)
{
	struct sockaddr_in sa = { .sin_family = AF_INET,
				  .sin_port = htons(7500) };
	const char req[] =
		"tc 1 SET t 5\ntc 2 INCR t\ntc 2 INCR t\ntc 3 GET t\n";
	const char want[] = "tc 1 OK\ntc 2 OK 6\ntc 2 OK 6\ntc 3 OK 6\n";
	char got[256] = "";
	size_t have = 0;
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct timeval tv = { .tv_sec = h_ms(10000) / 1000 };

	inet_pton(AF_INET, LX_GUEST, &sa.sin_addr);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	cr_assert(eq(int, connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0),
		  "connect: %s", strerror(errno));
	cr_assert(
		eq(long, (long)write(fd, req, strlen(req)), (long)strlen(req)));
	while (have < strlen(want)) {
		ssize_t n = read(fd, got + have, sizeof(got) - 1 - have);

		if (n <= 0)
			break;
		have += (size_t)n;
	}
	close(fd);
	/* The repeated seq 2 is answered from the exactly-once table. */
	cr_assert(eq(str, got, (char *)want));
}

Test(linux_guest, boots_and_serves_udp_and_tcp_through_the_bridge)
{
	start("linux", NULL, NULL);
	wait_ready();
	expect_kv(1, "PING", "OK PONG");
	expect_kv(2, "SET a 1", "OK");
	expect_kv(3, "INCR a", "OK 2");
	expect_kv(3, "INCR a", "OK 2"); /* a retry: not applied twice */
	expect_kv(4, "GET a", "OK 2");
	tcp_session();
	cr_assert(h_log_has(log_, "serial8250: ttyS0 at I/O 0x3f8 (irq = 4"));
	cr_assert(h_log_has(log_, "virtio_blk virtio0: [vda] 65536 512-byte"));
	cr_assert(h_log_has(log_, "smp: Brought up 1 node, 1 CPU"));
	/* A kernel that complains about the virtual CPU (CPUID leaf 0xD and
	 * XCR0 out of step: "XSAVE consistency problem") or anything else:
	 * its whole console first. */
	if (h_log_has(log_, "WARNING:") || h_log_has(log_, "Call Trace:"))
		h_dump(log_);
	cr_assert(not(h_log_has(log_, "WARNING:")));
	cr_assert(not(h_log_has(log_, "Call Trace:")));
	cr_assert(not(h_log_has(log_, "APIC timer disabled")));
	h_kill(&vm, SIGTERM);
	cr_assert(eq(int, h_wait(&vm, h_ms(20000)), 0));
}

Test(linux_guest, acknowledged_update_survives_a_kill9_of_the_vmm)
{
	start("linux", NULL, NULL);
	wait_ready();
	expect_kv(1, "SET durable yes", "OK");
	h_kill(&vm, SIGKILL);
	cr_assert(eq(int, h_wait(&vm, h_ms(20000)), 128 + SIGKILL));
	unlink(log_); /* the ready line to wait for is the new one */
	start("linux", NULL, NULL);
	wait_ready();
	cr_assert(h_log_has(log_, "kvstore: ready, 1 records replayed"));
	expect_kv(2, "GET durable", "OK yes");
	h_kill(&vm, SIGTERM);
	h_wait(&vm, h_ms(20000));
}

/* The MD5 the guest printed after "filetest: MODE md5 ". */
static void filetest_sum(const char *mode, char *out, size_t cap)
{
	char needle[64], line[512];
	FILE *f = fopen(log_, "r");
	const char *p = NULL;

	snprintf(needle, sizeof(needle), "filetest: %s md5 ", mode);
	out[0] = 0;
	while (f && fgets(line, sizeof(line), f))
		if ((p = strstr(line, needle)))
			snprintf(out, cap, "%.32s", p + strlen(needle));
	if (f)
		fclose(f);
}

/*
 * The guest makes an ext2 filesystem on its disk (busybox mke2fs, the
 * kernel's ext4 driver), writes a file of 1 MiB of random bytes, syncs,
 * unmounts, prints the MD5 and reboots: its own end. A new VMM on the same
 * disk file boots it again; it mounts the filesystem and prints the MD5 of
 * the file it finds.
 */
Test(linux_guest, a_mebibyte_file_written_in_the_guest_survives_a_reboot)
{
	char wrote[40], read_back[40];

	start("linux-test", "kemari.filetest=write", NULL);
	cr_assert(eq(int, h_wait(&vm, h_ms(180000)), 0));
	if (!h_log_has(log_, "filetest: write on ext2"))
		h_dump(log_);
	cr_assert(h_log_has(log_, "filetest: write on ext2"));
	cr_assert(h_log_has(log_, "the guest reset the machine (reboot)"));
	filetest_sum("write", wrote, sizeof(wrote));
	cr_assert(eq(sz, strlen(wrote), (size_t)32), "no checksum written");
	unlink(log_);
	start("linux-test", "kemari.filetest=read", NULL);
	cr_assert(eq(int, h_wait(&vm, h_ms(180000)), 0));
	if (!h_log_has(log_, "filetest: read on ext2"))
		h_dump(log_);
	cr_assert(h_log_has(log_, "filetest: read on ext2"));
	filetest_sum("read", read_back, sizeof(read_back));
	cr_assert(eq(str, read_back, wrote));
	cr_assert(h_log_has(log_, "the guest reset the machine (reboot)"));
}

Test(linux_guest, two_vcpus_are_two_cpus_in_the_guest)
{
	start("linux", NULL, "--cpus=2");
	wait_ready();
	cr_assert(h_log_has(log_, "smp: Brought up 1 node, 2 CPUs"));
	expect_kv(1, "PING", "OK PONG");
	h_kill(&vm, SIGTERM);
	h_wait(&vm, h_ms(20000));
}

/* Refused at once, with one line, and no disk file left behind. */
static void expect_refusal(const char *args, const char *needle)
{
	struct stat st;

	cr_assert(eq(int,
		     h_spawn(&vm, log_, "@B/kemari-run --mem=256M --disk=%s %s",
			     disk, args),
		     0));
	cr_assert(ne(int, h_wait(&vm, h_ms(30000)), 0), "%s", args);
	if (!h_log_has(log_, needle)) {
		h_dump(log_);
		cr_fatal("no '%s' in the log of: %s", needle, args);
	}
	cr_assert(ne(int, stat(disk, &st), 0), "%s created the disk", args);
}

Test(linux_guest, refuses_a_kernel_that_is_not_a_bzimage)
{
	expect_refusal("--kernel=/etc/hostname",
		       "error: kernel /etc/hostname: ");
}

Test(linux_guest, refuses_a_missing_initrd)
{
	expect_refusal(
		"--kernel=@B/guests/linux/vmlinuz --initrd=/nonexistent/initrd.img",
		"error: initrd /nonexistent/initrd.img: No such file or directory");
}

Test(linux_guest, refuses_kernel_with_guest)
{
	expect_refusal(
		"--kernel=@B/guests/linux/vmlinuz --guest=@B/guests/kvstore.elf",
		"--guest=ELF and --kernel=BZIMAGE exclude each other");
}

Test(linux_guest, refuses_an_unknown_net_form)
{
	expect_refusal("--kernel=@B/guests/linux/vmlinuz --net=vde:/tmp/x",
		       "--net=vde:/tmp/x: expected tap:IFNAME");
}

Test(linux_guest, refuses_a_tap_that_cannot_be_created)
{
	/* lo exists and is not a TAP: TUNSETIFF refuses it. */
	expect_refusal("--kernel=@B/guests/linux/vmlinuz --net=tap:lo",
		       "TAP lo cannot be created");
}
