// SPDX-License-Identifier: MIT
/*
 * kemari-perf: the measuring half of the pause-time benchmark (perf/run.sh
 * drives it; docs/perf.md describes the matrix and the outputs).
 *
 *   kemari-perf floor --transport=T [--provider=P] [--addr=HOST:PORT]
 *                     [--bytes=N[,N...]]
 *       The least any pause could cost here: a memcpy of N bytes plus one
 *       small-message round trip over transport T (both ends in this
 *       process, on two threads). --listen=A serves as the far end only
 *       (another host); --peer=A measures against such a far end.
 *   kemari-perf stamp --in=FIFO --out=FILE
 *       Copy kemari-run's --stats lines from a FIFO to FILE, adding the
 *       time each arrived ("t_us"): the epoch rate without boot or sync.
 *   kemari-perf summarize [--stats=FILE] --transport=T --variant=V
 *                         --ram-mib=M --pages=K ... --json=F --csv=F
 *       One record (a JSON line appended to F and a CSV row): pause
 *       quantiles, median breakdown, rates and the ratios to the floor.
 *   kemari-perf csv-header
 *
 * Only here (cmd/) may the program exit.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "kemari/kemari.h"
#include "kemari/wire.h"
#include "kemari/xport.h"

#define PERF_MEMCPY_CHUNK (256ULL << 20) /* larger copies are scaled */
#define PERF_MEMCPY_BUDGET_NS 300000000ULL
#define PERF_RTT_BUDGET_NS 1000000000ULL
#define PERF_RTT_MAX 2000
#define PERF_RTT_MIN 50
#define PERF_RTT_WARMUP 20
#define PERF_IO_TIMEOUT_MS 30000
#define PERF_MAX_BYTES 16

static void usage(FILE *f)
{
	fprintf(f,
		"usage: kemari-perf floor --transport=T [--provider=P] "
		"[--addr=HOST:PORT]\n"
		"                         [--bytes=N[,N...]] [--wire] "
		"[--listen=HOST:PORT | --peer=HOST:PORT]\n"
		"       kemari-perf stamp --in=FIFO --out=FILE\n"
		"       kemari-perf summarize [--stats=FILE] --transport=T "
		"--variant=V\n"
		"                         --ram-mib=M --pages=K [--provider=P] "
		"[--env=E]\n"
		"                         [--warmup=N] [--expect=N] "
		"[--rtt-us=R] [--floor-us=F]\n"
		"                         [--wall-us=W] [--wire-us=X] "
		"[--events=N "
		"--events-per-s=X]\n"
		"                         [--standalone-eps=X] [--json=FILE] "
		"[--csv=FILE]\n"
		"       kemari-perf csv-header\n"
		"\n"
		"floor: memcpy of N bytes (median of many) + one small-message "
		"round\n"
		"trip over the transport (median), printed as one JSON line per "
		"N.\n"
		"--wire adds wire_us: the transport alone carrying N bytes as "
		"one run\n"
		"(push, flush, COMMIT, ACK; median), no engine and no guest.\n"
		"stamp: copies --stats JSON lines from FIFO, adding \"t_us\" "
		"(arrival,\n"
		"monotonic microseconds) to each.\n"
		"summarize: one record from a --stats file (nearest-rank "
		"quantiles after\n"
		"dropping --warmup epochs); floor = memcpy of the median epoch "
		"bytes +\n"
		"--rtt-us, unless --floor-us is given. Without --stats: a "
		"record with\n"
		"only --events and --events-per-s (the standalone baseline).\n");
}

/* ---- small helpers ------------------------------------------------------ */

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* Nearest rank: the smallest value with at least q of the samples <= it. */
static uint64_t perf__rank(const uint64_t *sorted, size_t n, double q)
{
	size_t idx = (size_t)(q * (double)n + 0.999999);

	idx = idx ? idx - 1 : 0;
	return sorted[idx < n ? idx : n - 1];
}

static double perf__median_d(double *v, size_t n)
{
	qsort(v, n, sizeof(*v), cmp_double);
	return v[(n - 1) / 2];
}

static int perf__parse_u64(const char *opt, const char *s, uint64_t *out)
{
	char *end;

	errno = 0;
	*out = strtoull(s, &end, 10);
	if (errno || end == s || *end) {
		fprintf(stderr,
			"kemari-perf: error: --%s=%s: expected a number\n", opt,
			s);
		return -EINVAL;
	}
	return 0;
}

static int perf__parse_double(const char *opt, const char *s, double *out)
{
	char *end;

	errno = 0;
	*out = strtod(s, &end);
	if (errno || end == s || *end || *out < 0) {
		fprintf(stderr,
			"kemari-perf: error: --%s=%s: expected a number >= 0\n",
			opt, s);
		return -EINVAL;
	}
	return 0;
}

/* Labels go into JSON and CSV unquoted-safe: keep them to a plain set. */
static int perf__check_label(const char *opt, const char *s)
{
	if (!*s || strspn(s, "abcdefghijklmnopqrstuvwxyz"
			     "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.;:+-") !=
			   strlen(s)) {
		fprintf(stderr,
			"kemari-perf: error: --%s=%s: use letters, digits and "
			"_.;:+- only\n",
			opt, s);
		return -EINVAL;
	}
	return 0;
}

/* ---- floor: memcpy ------------------------------------------------------ */

/*
 * Median time to memcpy bytes between two pre-faulted buffers. Beyond
 * PERF_MEMCPY_CHUNK the copy is memory-bandwidth bound and scales
 * linearly, so a chunk is timed and the result scaled (no 2 x 4 GiB of
 * buffers for a full-RAM baseline).
 */
static int floor__memcpy_us(uint64_t bytes, double *out)
{
	uint64_t chunk = KEMARI_MIN(bytes, PERF_MEMCPY_CHUNK);
	double samples[200];
	size_t n = 0;
	uint64_t start;
	char *src, *dst;

	*out = 0;
	if (!bytes)
		return 0;
	src = mmap(NULL, chunk, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (src == MAP_FAILED)
		return kemari_err(-errno, "memcpy floor: %llu MiB: %s",
				  (unsigned long long)(chunk >> 20),
				  strerror(errno));
	dst = mmap(NULL, chunk, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (dst == MAP_FAILED) {
		int err = -errno;

		munmap(src, chunk);
		return kemari_err(err, "memcpy floor: %llu MiB: %s",
				  (unsigned long long)(chunk >> 20),
				  strerror(-err));
	}
	memset(src, 0x5a, chunk);
	memset(dst, 0, chunk);
	memcpy(dst, src, chunk); /* warm */
	start = kemari_now_ns();
	while (n < KEMARI_ARRAY_SIZE(samples) &&
	       (n < 5 || kemari_now_ns() - start < PERF_MEMCPY_BUDGET_NS)) {
		uint64_t t0 = kemari_now_ns();

		memcpy(dst, src, chunk);
		/* The copy is the point: keep the compiler from eliding it. */
		__asm__ volatile("" : : "r"(dst) : "memory");
		samples[n++] = (double)(kemari_now_ns() - t0) / 1000.0;
	}
	*out = perf__median_d(samples, n) * ((double)bytes / (double)chunk);
	munmap(src, chunk);
	munmap(dst, chunk);
	return 0;
}

/* ---- floor: round trip over the transport ------------------------------- */

struct floor_end {
	const struct kemari_xport_ops *ops;
	struct kemari_xport *listener;
	int cpu; /* pin the far end here; -1: let the scheduler place it */
	int err;
	char msg[256];
};

/*
 * The source and receive regions: one page, or --wire's largest --bytes.
 * The far end registers its receive region before the first answer.
 */
static uint8_t *floor__src, *floor__dst;
static uint64_t floor__region = KEMARI_PAGE_SIZE;

static int floor__regions(uint64_t bytes)
{
	floor__region = KEMARI_ALIGN_UP(KEMARI_MAX(bytes, KEMARI_PAGE_SIZE),
					KEMARI_PAGE_SIZE);
	floor__src = mmap(NULL, floor__region, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	floor__dst = mmap(NULL, floor__region, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (floor__src == MAP_FAILED || floor__dst == MAP_FAILED)
		return kemari_err(-ENOMEM, "floor: cannot map 2 x %llu MiB",
				  (unsigned long long)(floor__region >> 20));
	memset(floor__src, 0x5a, floor__region);
	return 0;
}

/*
 * The far end, as a secondary would be: accept, register the receive
 * region, then answer every COMMIT with an ACK of its epoch until BYE.
 */
static int floor__serve(const struct kemari_xport_ops *ops,
			struct kemari_xport *listener)
{
	struct kemari_xport *c;
	int err;

	err = ops->accept(listener, &c, PERF_IO_TIMEOUT_MS);
	if (err == -ETIMEDOUT)
		return kemari_err(err, "floor: no peer connected within %d s",
				  PERF_IO_TIMEOUT_MS / 1000);
	if (err)
		return err;
	err = ops->reg_dst(c, floor__dst, floor__region);
	while (!err) {
		struct kemari_msg m;
		struct kemari_ack ack;

		err = ops->recv(c, &m, PERF_IO_TIMEOUT_MS);
		if (err || m.type == KEMARI_MSG_BYE)
			break;
		if (m.type != KEMARI_MSG_COMMIT)
			continue;
		ack.applied_next = m.epoch + 1;
		err = ops->send(c, KEMARI_MSG_ACK, m.epoch, &ack, sizeof(ack));
	}
	ops->close(c);
	return err == -ECONNRESET ? 0 : err;
}

static void *floor__serve_thread(void *arg)
{
	struct floor_end *s = arg;

	if (s->cpu >= 0) {
		cpu_set_t set;

		CPU_ZERO(&set);
		CPU_SET(s->cpu, &set);
		pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
	}
	s->err = floor__serve(s->ops, s->listener);
	if (s->err)
		snprintf(s->msg, sizeof(s->msg), "%s",
			 kemari_last_error(s->err));
	return NULL;
}

/* One COMMIT-sized message out, the ACK back: what ends every epoch. */
static int floor__ping(const struct kemari_xport_ops *ops,
		       struct kemari_xport *c, uint64_t seq)
{
	struct kemari_commit cm = { .nruns = 0 };
	int err = ops->send(c, KEMARI_MSG_COMMIT, seq, &cm, sizeof(cm));

	while (!err) {
		struct kemari_msg m;

		err = ops->recv(c, &m, PERF_IO_TIMEOUT_MS);
		if (!err && m.type == KEMARI_MSG_ACK && m.epoch == seq)
			return 0;
	}
	return err;
}

/*
 * The transport alone moving bytes as one run and closing the epoch:
 * push, flush, COMMIT, ACK. The median of up to PERF_RTT_MIN rounds
 * within the budget (at least 5).
 */
static int floor__wire_us(const struct kemari_xport_ops *ops,
			  struct kemari_xport *c, uint64_t bytes, uint64_t *seq,
			  double *out)
{
	static double samples[PERF_RTT_MIN];
	struct kemari_run run = {
		.pfn = 0,
		.npages = (uint32_t)((bytes + KEMARI_PAGE_SIZE - 1) /
				     KEMARI_PAGE_SIZE),
	};
	uint64_t start = kemari_now_ns();
	size_t n = 0;
	int err = 0;

	for (int i = -2;
	     !err && n < PERF_RTT_MIN &&
	     (n < 5 || kemari_now_ns() - start < PERF_RTT_BUDGET_NS);
	     i++) {
		uint64_t t0 = kemari_now_ns();

		err = run.npages ? ops->push(c, &run, 1, 0) : 0;
		err = err ?: ops->flush(c);
		err = err ?: floor__ping(ops, c, (*seq)++);
		if (!err && i >= 0) /* two rounds of warm-up */
			samples[n++] = (double)(kemari_now_ns() - t0) / 1000.0;
	}
	if (!err)
		*out = perf__median_d(samples, n);
	return err;
}

static int floor__rtt_us(const struct kemari_xport_ops *ops, const char *peer,
			 const struct kemari_xport_opts *opts,
			 const uint64_t *wire_bytes, size_t nwire, double *wire,
			 double *out)
{
	static double samples[PERF_RTT_MAX];
	struct kemari_xport *c;
	uint64_t seq = 1, start;
	size_t n = 0;
	int err;

	err = ops->connect(&c, peer, opts);
	if (err)
		return err;
	/* The engine's order: a first exchange, then the source region. */
	err = floor__ping(ops, c, seq++);
	err = err ?: ops->reg_src(c, floor__src, floor__region);
	for (int i = 0; !err && i < PERF_RTT_WARMUP; i++)
		err = floor__ping(ops, c, seq++);
	start = kemari_now_ns();
	while (!err && n < PERF_RTT_MAX &&
	       (n < PERF_RTT_MIN ||
		kemari_now_ns() - start < PERF_RTT_BUDGET_NS)) {
		uint64_t t0 = kemari_now_ns();

		err = floor__ping(ops, c, seq++);
		samples[n++] = (double)(kemari_now_ns() - t0) / 1000.0;
	}
	for (size_t i = 0; !err && i < nwire; i++)
		err = floor__wire_us(ops, c, wire_bytes[i], &seq, &wire[i]);
	if (!err) {
		ops->send(c, KEMARI_MSG_BYE, seq, NULL, 0);
		*out = perf__median_d(samples, n);
	}
	ops->close(c);
	return err;
}

/*
 * Both ends in this process: the far end on a thread, this thread the
 * near end. With same_cpu both run on the CPU this thread is on: no
 * cross-CPU wake-up, which can cost more than the rest of the round trip
 * where idle CPUs are slow to wake (an emulated machine).
 */
static int floor__rtt_local(const struct kemari_xport_ops *ops,
			    struct kemari_xport *listener, const char *addr,
			    const struct kemari_xport_opts *xo, bool same_cpu,
			    const uint64_t *wire_bytes, size_t nwire,
			    double *wire, double *out)
{
	struct floor_end srv = { .ops = ops, .listener = listener, .cpu = -1 };
	cpu_set_t saved, one;
	pthread_t tid;
	int err;

	if (same_cpu) {
		srv.cpu = sched_getcpu();
		if (srv.cpu < 0 ||
		    pthread_getaffinity_np(pthread_self(), sizeof(saved),
					   &saved))
			return -ENOSYS;
		CPU_ZERO(&one);
		CPU_SET(srv.cpu, &one);
		pthread_setaffinity_np(pthread_self(), sizeof(one), &one);
	}
	if (pthread_create(&tid, NULL, floor__serve_thread, &srv)) {
		err = kemari_err(-EAGAIN, "floor: cannot start a thread");
		goto out_affinity;
	}
	err = floor__rtt_us(ops, addr, xo, wire_bytes, nwire, wire, out);
	pthread_join(tid, NULL);
	if (!err && srv.err)
		err = kemari_err(srv.err, "floor: far end: %s", srv.msg);
out_affinity:
	if (same_cpu)
		pthread_setaffinity_np(pthread_self(), sizeof(saved), &saved);
	return err;
}

static int floor__parse_bytes(const char *s, uint64_t *v, size_t *n)
{
	char buf[512], *tok, *save = NULL;

	snprintf(buf, sizeof(buf), "%s", s);
	for (tok = strtok_r(buf, ",", &save); tok;
	     tok = strtok_r(NULL, ",", &save)) {
		if (*n >= PERF_MAX_BYTES) {
			fprintf(stderr,
				"kemari-perf: error: at most %d --bytes values\n",
				PERF_MAX_BYTES);
			return -EINVAL;
		}
		if (kemari_parse_size(tok, &v[*n])) {
			fprintf(stderr,
				"kemari-perf: error: --bytes=%s: expected "
				"sizes like 4096, 1M\n",
				s);
			return -EINVAL;
		}
		(*n)++;
	}
	return 0;
}

static int cmd_floor(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "transport", required_argument, NULL, 't' },
		{ "provider", required_argument, NULL, 'p' },
		{ "addr", required_argument, NULL, 'a' },
		{ "listen", required_argument, NULL, 'l' },
		{ "peer", required_argument, NULL, 'P' },
		{ "bytes", required_argument, NULL, 'b' },
		{ "wire", no_argument, NULL, 'w' },
		{ NULL, 0, NULL, 0 },
	};
	const char *transport = "tcp", *addr = "127.0.0.1:7399";
	const char *listen_addr = NULL, *peer = NULL;
	struct kemari_xport_opts xo = { .connect_timeout_ms = 10000 };
	const struct kemari_xport_ops *ops;
	struct floor_end srv = { 0 };
	uint64_t bytes[PERF_MAX_BYTES] = { 0 }, maxb = 0;
	double wire[PERF_MAX_BYTES], wire_free[PERF_MAX_BYTES];
	size_t nbytes = 0, nwire = 0;
	double rtt = 0, rtt_free = 0, rtt_same = -1;
	bool want_wire = false;
	int c, err;

	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 't':
			transport = optarg;
			break;
		case 'p':
			xo.provider = optarg;
			break;
		case 'a':
			addr = optarg;
			break;
		case 'l':
			listen_addr = optarg;
			break;
		case 'P':
			peer = optarg;
			break;
		case 'b':
			if (floor__parse_bytes(optarg, bytes, &nbytes))
				return 2;
			break;
		case 'w':
			want_wire = true;
			break;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (!nbytes)
		nbytes = 1;
	for (size_t i = 0; i < nbytes; i++)
		maxb = KEMARI_MAX(maxb, bytes[i]);
	if (want_wire)
		nwire = nbytes;
	err = floor__regions(want_wire || listen_addr ? maxb : 0);
	if (err) {
		fprintf(stderr, "kemari-perf: error: %s\n",
			kemari_last_error(err));
		return 1;
	}
	ops = kemari_xport_find(transport);
	if (!ops) {
		fprintf(stderr,
			"kemari-perf: error: --transport=%s is not available "
			"in this build (see kemari-run --list-transports)\n",
			transport);
		return 2;
	}
	if (listen_addr) {
		/* The far end for a measurement from another host. */
		err = ops->listen(&srv.listener, listen_addr, &xo);
		err = err ?: floor__serve(ops, srv.listener);
		goto out_listener;
	}
	if (peer) {
		err = floor__rtt_us(ops, peer, &xo, bytes, nwire, wire, &rtt);
		rtt_free = rtt;
	} else {
		err = ops->listen(&srv.listener, addr, &xo);
		err = err
			      ?: floor__rtt_local(ops, srv.listener, addr, &xo,
						  false, bytes, nwire,
						  wire_free, &rtt_free);
		err = err
			      ?: floor__rtt_local(ops, srv.listener, addr, &xo,
						  true, bytes, nwire, wire,
						  &rtt_same);
		if (err == -ENOSYS) { /* no affinity here: one placement */
			err = 0;
			rtt_same = rtt_free;
			memcpy(wire, wire_free, sizeof(wire));
		}
		/* The least either costs here, either placement. */
		rtt = KEMARI_MIN(rtt_free, rtt_same);
		for (size_t i = 0; i < nwire; i++)
			wire[i] = KEMARI_MIN(wire[i], wire_free[i]);
	}
	for (size_t i = 0; !err && i < nbytes; i++) {
		double mc;

		err = floor__memcpy_us(bytes[i], &mc);
		if (err)
			break;
		printf("{\"transport\":\"%s\",\"provider\":%s%s%s,\"bytes\":%"
		       "llu,\"memcpy_us\":%.2f,\"rtt_us\":%.2f,\"rtt_any_cpu_"
		       "us\":%.2f,",
		       transport, xo.provider ? "\"" : "",
		       xo.provider ? xo.provider : "null",
		       xo.provider ? "\"" : "", (unsigned long long)bytes[i],
		       mc, rtt, rtt_free);
		if (rtt_same < 0) /* measured against a remote far end */
			printf("\"rtt_same_cpu_us\":null,");
		else
			printf("\"rtt_same_cpu_us\":%.2f,", rtt_same);
		if (i < nwire)
			printf("\"wire_us\":%.2f,", wire[i]);
		printf("\"floor_us\":%.2f}\n", mc + rtt);
	}
out_listener:
	if (srv.listener)
		srv.listener->ops->close(srv.listener);
	if (err) {
		fprintf(stderr, "kemari-perf: error: floor over %s: %s\n",
			transport, kemari_last_error(err));
		return 1;
	}
	return 0;
}

/* ---- stamp -------------------------------------------------------------- */

static int stamp__line(FILE *out, const char *line, size_t len)
{
	uint64_t t = kemari_now_us();

	while (len && (line[len - 1] == '\n' || line[len - 1] == '\r'))
		len--;
	if (len < 2 || line[len - 1] != '}')
		return 0; /* not a stats record: dropped */
	fprintf(out, "%.*s,\"t_us\":%llu}\n", (int)(len - 1), line,
		(unsigned long long)t);
	return fflush(out) ? -errno : 0;
}

static int cmd_stamp(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "in", required_argument, NULL, 'i' },
		{ "out", required_argument, NULL, 'o' },
		{ NULL, 0, NULL, 0 },
	};
	const char *in = NULL, *outp = NULL;
	char buf[8192];
	size_t have = 0;
	FILE *out;
	int fd, c, err = 0;

	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'i':
			in = optarg;
			break;
		case 'o':
			outp = optarg;
			break;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (!in || !outp) {
		fprintf(stderr, "kemari-perf: error: stamp needs --in=FIFO and "
				"--out=FILE\n");
		return 2;
	}
	/*
	 * Non-blocking open: no wait for a writer here. Linux reports no
	 * hang-up on a FIFO before its first writer came, so poll() waits for
	 * the writer, and POLLHUP after it closed is the end.
	 */
	fd = open(in, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0) {
		fprintf(stderr, "kemari-perf: error: stamp: %s: %s\n", in,
			strerror(errno));
		return 1;
	}
	out = fopen(outp, "w");
	if (!out) {
		fprintf(stderr, "kemari-perf: error: stamp: %s: %s\n", outp,
			strerror(errno));
		close(fd);
		return 1;
	}
	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		ssize_t r;
		char *nl;

		if (poll(&p, 1, -1) < 0) {
			if (errno == EINTR)
				continue;
			err = -errno;
			break;
		}
		r = read(fd, buf + have, sizeof(buf) - have);
		if (r < 0) {
			if (errno == EAGAIN || errno == EINTR)
				continue;
			err = -errno;
			break;
		}
		if (r == 0) {
			if (p.revents & POLLHUP)
				break;
			continue;
		}
		have += (size_t)r;
		while ((nl = memchr(buf, '\n', have))) {
			size_t len = (size_t)(nl - buf) + 1;

			err = err ?: stamp__line(out, buf, len);
			memmove(buf, buf + len, have - len);
			have -= len;
		}
		if (have == sizeof(buf))
			have = 0; /* a line longer than any record: drop it */
	}
	if (have)
		err = err ?: stamp__line(out, buf, have);
	close(fd);
	if (fclose(out) && !err)
		err = -errno;
	if (err) {
		fprintf(stderr, "kemari-perf: error: stamp: %s\n",
			strerror(-err));
		return 1;
	}
	return 0;
}

/* ---- summarize ---------------------------------------------------------- */

enum {
	F_DIRTY,
	F_RUNS,
	F_BYTES,
	F_HARVEST,
	F_STATE,
	F_PUSH,
	F_ACK,
	F_PAUSE,
	F_SPEC,
	F_SPECWAIT,
	F_T,
	F_COUNT,
};

static const char *const stat_keys[F_COUNT] = {
	"dirty_pages", "runs",	       "bytes",		"harvest_us",
	"state_us",    "push_us",      "commit_ack_us", "pause_us",
	"spec_pages",  "spec_wait_us", "t_us",
};

struct stats {
	uint64_t *v[F_COUNT];
	size_t n, cap;
	bool stamped; /* every record has t_us */
};

/* "key":NUMBER in a flat JSON line of numbers; 0 or -ENOENT. */
static int stats__field(const char *line, const char *key, uint64_t *out)
{
	char pat[40];
	const char *p;
	char *end;

	snprintf(pat, sizeof(pat), "\"%s\":", key);
	p = strstr(line, pat);
	if (!p)
		return -ENOENT;
	p += strlen(pat);
	errno = 0;
	*out = strtoull(p, &end, 10);
	return errno || end == p ? -ENOENT : 0;
}

static int stats__load(struct stats *s, const char *path, uint64_t warmup)
{
	char line[1024];
	uint64_t seen = 0;
	FILE *f = fopen(path, "r");

	if (!f)
		return kemari_err(-errno, "--stats=%s: %s", path,
				  strerror(errno));
	s->stamped = true;
	while (fgets(line, sizeof(line), f)) {
		uint64_t val[F_COUNT];
		bool ok = true;

		for (int k = 0; k < F_COUNT; k++) {
			if (stats__field(line, stat_keys[k], &val[k])) {
				if (k == F_T) {
					s->stamped = false;
					val[k] = 0;
				} else if (k == F_SPECWAIT) {
					val[k] = 0; /* older stats files */
				} else {
					ok = false;
				}
			}
		}
		if (!ok)
			continue; /* a torn or foreign line */
		if (seen++ < warmup)
			continue;
		if (s->n == s->cap) {
			size_t ncap = s->cap ? s->cap * 2 : 256;

			for (int k = 0; k < F_COUNT; k++) {
				uint64_t *p =
					realloc(s->v[k], ncap * sizeof(*p));

				if (!p) {
					fclose(f);
					return -ENOMEM;
				}
				s->v[k] = p;
			}
			s->cap = ncap;
		}
		for (int k = 0; k < F_COUNT; k++)
			s->v[k][s->n] = val[k];
		s->n++;
	}
	fclose(f);
	return 0;
}

static void stats__free(struct stats *s)
{
	for (int k = 0; k < F_COUNT; k++)
		free(s->v[k]);
}

/* Sorted copy of one column; caller frees. */
static uint64_t *stats__sorted(const struct stats *s, int k)
{
	uint64_t *c = malloc(s->n * sizeof(*c));

	if (c) {
		memcpy(c, s->v[k], s->n * sizeof(*c));
		qsort(c, s->n, sizeof(*c), cmp_u64);
	}
	return c;
}

static int stats__median(const struct stats *s, int k, double *out)
{
	uint64_t *c = stats__sorted(s, k);

	if (!c)
		return -ENOMEM;
	*out = (double)perf__rank(c, s->n, 0.5);
	free(c);
	return 0;
}

/* One record; a NaN value is "not measured" (JSON null, empty CSV field). */
struct record {
	const char *transport, *provider, *variant, *env;
	uint64_t ram_mib, pages, events, warmup;
	double dirty_p50, runs_p50, bytes_p50;
	double p50, p90, p99, max, mean;
	double harvest, state, push, ack, spec_p50, spec_wait;
	double floor, floor_memcpy, floor_rtt, ratio_p50, ratio_p99;
	double wire, ratio_wire; /* the transport alone, same bytes */
	double eps, bps, standalone_eps;
	bool complete;
};

static const char *const csv_cols[] = {
	"transport",	   "provider",
	"variant",	   "env",
	"ram_mib",	   "dirty_pages",
	"events",	   "warmup",
	"dirty_pages_p50", "runs_p50",
	"bytes_p50",	   "p50_us",
	"p90_us",	   "p99_us",
	"max_us",	   "mean_us",
	"harvest_us",	   "state_us",
	"push_us",	   "commit_ack_us",
	"spec_pages_p50",  "spec_wait_us",
	"floor_us",	   "floor_memcpy_us",
	"floor_rtt_us",	   "ratio_p50",
	"ratio_p99",	   "wire_us",
	"ratio_wire",	   "epochs_per_s",
	"bytes_per_s",	   "standalone_events_per_s",
	"complete",
};

static void rec__num(FILE *f, bool json, const char *key, double v, int prec,
		     bool last)
{
	if (json)
		fprintf(f, "\"%s\":", key);
	if (v != v)
		fputs(json ? "null" : "", f);
	else
		fprintf(f, "%.*f", prec, v);
	fputs(last ? "" : ",", f);
}

static void rec__str(FILE *f, bool json, const char *key, const char *s)
{
	if (json)
		fprintf(f, s ? "\"%s\":\"%s\"," : "\"%s\":null,", key, s);
	else
		fprintf(f, "%s,", s ? s : "");
}

static void rec__write(FILE *f, const struct record *r, bool json)
{
	if (json)
		fputc('{', f);
	rec__str(f, json, "transport", r->transport);
	rec__str(f, json, "provider", r->provider);
	rec__str(f, json, "variant", r->variant);
	rec__str(f, json, "env", r->env);
	rec__num(f, json, "ram_mib", (double)r->ram_mib, 0, false);
	rec__num(f, json, "dirty_pages", (double)r->pages, 0, false);
	rec__num(f, json, "events", (double)r->events, 0, false);
	rec__num(f, json, "warmup", (double)r->warmup, 0, false);
	rec__num(f, json, "dirty_pages_p50", r->dirty_p50, 0, false);
	rec__num(f, json, "runs_p50", r->runs_p50, 0, false);
	rec__num(f, json, "bytes_p50", r->bytes_p50, 0, false);
	rec__num(f, json, "p50_us", r->p50, 0, false);
	rec__num(f, json, "p90_us", r->p90, 0, false);
	rec__num(f, json, "p99_us", r->p99, 0, false);
	rec__num(f, json, "max_us", r->max, 0, false);
	rec__num(f, json, "mean_us", r->mean, 1, false);
	rec__num(f, json, "harvest_us", r->harvest, 0, false);
	rec__num(f, json, "state_us", r->state, 0, false);
	rec__num(f, json, "push_us", r->push, 0, false);
	rec__num(f, json, "commit_ack_us", r->ack, 0, false);
	rec__num(f, json, "spec_pages_p50", r->spec_p50, 0, false);
	rec__num(f, json, "spec_wait_us", r->spec_wait, 0, false);
	rec__num(f, json, "floor_us", r->floor, 1, false);
	rec__num(f, json, "floor_memcpy_us", r->floor_memcpy, 1, false);
	rec__num(f, json, "floor_rtt_us", r->floor_rtt, 1, false);
	rec__num(f, json, "ratio_p50", r->ratio_p50, 2, false);
	rec__num(f, json, "ratio_p99", r->ratio_p99, 2, false);
	rec__num(f, json, "wire_us", r->wire, 1, false);
	rec__num(f, json, "ratio_wire", r->ratio_wire, 2, false);
	rec__num(f, json, "epochs_per_s", r->eps, 1, false);
	rec__num(f, json, "bytes_per_s", r->bps, 0, false);
	rec__num(f, json, "standalone_events_per_s", r->standalone_eps, 1,
		 false);
	if (json)
		fprintf(f, "\"complete\":%s}\n",
			r->complete ? "true" : "false");
	else
		fprintf(f, "%d\n", r->complete ? 1 : 0);
}

/* The one line a person watching the run reads. */
static void rec__print(const struct record *r)
{
	if (r->p50 != r->p50) {
		printf("%.0f events/s over %llu events\n", r->eps,
		       (unsigned long long)r->events);
		return;
	}
	printf("%llu epochs: pause p50 %.0f p90 %.0f p99 %.0f max %.0f us; floor "
	       "%.1f us (p50 %.2fx, p99 %.2fx); ",
	       (unsigned long long)r->events, r->p50, r->p90, r->p99, r->max,
	       r->floor, r->ratio_p50, r->ratio_p99);
	if (r->wire == r->wire)
		printf("wire %.1f us (p50 %.2fx); ", r->wire, r->ratio_wire);
	printf("%.1f epochs/s, %.1f MB/s%s\n", r->eps, r->bps / 1e6,
	       r->complete ? "" : " (INCOMPLETE: fewer epochs than expected)");
}

static int rec__append(const char *path, const struct record *r, bool json)
{
	FILE *f = fopen(path, "a");

	if (!f)
		return kemari_err(-errno, "%s: %s", path, strerror(errno));
	rec__write(f, r, json);
	if (fclose(f))
		return kemari_err(-errno, "%s: %s", path, strerror(errno));
	return 0;
}

/* Fill r's pause fields from the kept epochs of s. */
static int summarize__stats(const struct stats *s, struct record *r,
			    double wall_us)
{
	uint64_t *pause = stats__sorted(s, F_PAUSE), sum = 0, bsum = 0;
	int err;

	if (!pause)
		return -ENOMEM;
	for (size_t i = 0; i < s->n; i++) {
		sum += s->v[F_PAUSE][i];
		bsum += s->v[F_BYTES][i];
	}
	r->events = s->n;
	r->p50 = (double)perf__rank(pause, s->n, 0.5);
	r->p90 = (double)perf__rank(pause, s->n, 0.9);
	r->p99 = (double)perf__rank(pause, s->n, 0.99);
	r->max = (double)pause[s->n - 1];
	r->mean = (double)sum / (double)s->n;
	free(pause);
	/* Each column's own median: they need not add up to p50. */
	err = stats__median(s, F_DIRTY, &r->dirty_p50);
	err = err ?: stats__median(s, F_RUNS, &r->runs_p50);
	err = err ?: stats__median(s, F_BYTES, &r->bytes_p50);
	err = err ?: stats__median(s, F_HARVEST, &r->harvest);
	err = err ?: stats__median(s, F_STATE, &r->state);
	err = err ?: stats__median(s, F_PUSH, &r->push);
	err = err ?: stats__median(s, F_ACK, &r->ack);
	err = err ?: stats__median(s, F_SPEC, &r->spec_p50);
	err = err ?: stats__median(s, F_SPECWAIT, &r->spec_wait);
	/*
	 * Rate over the steady state: from the first kept epoch's arrival to
	 * the last one's (n - 1 intervals). A reader that fell behind stamps a
	 * burst of lines at once, so the span is at least the pauses of those
	 * n - 1 epochs. Without stamps: the wall time of the whole run.
	 */
	if (s->stamped && s->n >= 2) {
		double span = (double)(s->v[F_T][s->n - 1] - s->v[F_T][0]);
		double paused = (double)(sum - s->v[F_PAUSE][0]);

		r->eps = (double)(s->n - 1) * 1e6 / KEMARI_MAX(span, paused);
	} else if (wall_us > 0) {
		r->eps = (double)s->n * 1e6 / wall_us;
	}
	r->bps = r->eps * (double)bsum / (double)s->n;
	return err;
}

static int cmd_summarize(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "stats", required_argument, NULL, 's' },
		{ "transport", required_argument, NULL, 't' },
		{ "provider", required_argument, NULL, 'p' },
		{ "variant", required_argument, NULL, 'V' },
		{ "env", required_argument, NULL, 'e' },
		{ "ram-mib", required_argument, NULL, 'r' },
		{ "pages", required_argument, NULL, 'k' },
		{ "warmup", required_argument, NULL, 'w' },
		{ "expect", required_argument, NULL, 'x' },
		{ "rtt-us", required_argument, NULL, 'R' },
		{ "wire-us", required_argument, NULL, 'X' },
		{ "floor-us", required_argument, NULL, 'F' },
		{ "wall-us", required_argument, NULL, 'W' },
		{ "events", required_argument, NULL, 'n' },
		{ "events-per-s", required_argument, NULL, 'E' },
		{ "standalone-eps", required_argument, NULL, 'S' },
		{ "json", required_argument, NULL, 'j' },
		{ "csv", required_argument, NULL, 'c' },
		{ NULL, 0, NULL, 0 },
	};
	const double nan = __builtin_nan("");
	struct record r = {
		.transport = NULL,
		.variant = NULL,
		.env = "native",
		.dirty_p50 = nan,
		.runs_p50 = nan,
		.bytes_p50 = nan,
		.p50 = nan,
		.p90 = nan,
		.p99 = nan,
		.max = nan,
		.mean = nan,
		.harvest = nan,
		.state = nan,
		.push = nan,
		.ack = nan,
		.spec_p50 = nan,
		.spec_wait = nan,
		.floor = nan,
		.floor_memcpy = nan,
		.floor_rtt = nan,
		.ratio_p50 = nan,
		.ratio_p99 = nan,
		.wire = nan,
		.ratio_wire = nan,
		.eps = nan,
		.bps = nan,
		.standalone_eps = nan,
	};
	const char *stats_path = NULL, *json = NULL, *csv = NULL;
	double rtt = nan, floor_us = nan, wall = 0;
	uint64_t expect = 0;
	bool have_ram = false, have_pages = false;
	struct stats s = { 0 };
	int c, err = 0;

	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 's':
			stats_path = optarg;
			break;
		case 't':
			r.transport = optarg;
			err = perf__check_label("transport", optarg);
			break;
		case 'p':
			r.provider = optarg;
			err = perf__check_label("provider", optarg);
			break;
		case 'V':
			r.variant = optarg;
			err = perf__check_label("variant", optarg);
			break;
		case 'e':
			r.env = optarg;
			err = perf__check_label("env", optarg);
			break;
		case 'r':
			err = perf__parse_u64("ram-mib", optarg, &r.ram_mib);
			have_ram = true;
			break;
		case 'k':
			err = perf__parse_u64("pages", optarg, &r.pages);
			have_pages = true;
			break;
		case 'w':
			err = perf__parse_u64("warmup", optarg, &r.warmup);
			break;
		case 'x':
			err = perf__parse_u64("expect", optarg, &expect);
			break;
		case 'X':
			err = perf__parse_double("wire-us", optarg, &r.wire);
			if (err)
				return 2;
			break;
		case 'R':
			err = perf__parse_double("rtt-us", optarg, &rtt);
			break;
		case 'F':
			err = perf__parse_double("floor-us", optarg, &floor_us);
			break;
		case 'W':
			err = perf__parse_double("wall-us", optarg, &wall);
			break;
		case 'n':
			err = perf__parse_u64("events", optarg, &r.events);
			break;
		case 'E':
			err = perf__parse_double("events-per-s", optarg,
						 &r.eps);
			break;
		case 'S':
			err = perf__parse_double("standalone-eps", optarg,
						 &r.standalone_eps);
			break;
		case 'j':
			json = optarg;
			break;
		case 'c':
			csv = optarg;
			break;
		default:
			usage(stderr);
			return 2;
		}
		if (err)
			return 2;
	}
	if (!r.transport || !r.variant || !have_ram || !have_pages) {
		fprintf(stderr,
			"kemari-perf: error: summarize needs --transport, "
			"--variant, --ram-mib and --pages\n");
		return 2;
	}
	if (stats_path) {
		err = stats__load(&s, stats_path, r.warmup);
		if (!err && !s.n)
			err = kemari_err(
				-ENODATA,
				"%s: no epochs after the %llu warm-up ones",
				stats_path, (unsigned long long)r.warmup);
		err = err ?: summarize__stats(&s, &r, wall);
		if (!err && floor_us != floor_us && rtt == rtt) {
			r.floor_rtt = rtt;
			err = floor__memcpy_us((uint64_t)r.bytes_p50,
					       &r.floor_memcpy);
			r.floor = r.floor_memcpy + rtt;
		} else if (!err) {
			r.floor = floor_us;
		}
		if (!err && r.floor > 0) {
			r.ratio_p50 = r.p50 / r.floor;
			r.ratio_p99 = r.p99 / r.floor;
		}
		if (!err && r.wire > 0)
			r.ratio_wire = r.p50 / r.wire;
		stats__free(&s);
		if (err) {
			fprintf(stderr, "kemari-perf: error: summarize: %s\n",
				kemari_last_error(err));
			return 1;
		}
	}
	if (!stats_path && !strcmp(r.variant, "standalone"))
		r.standalone_eps = r.eps;
	r.complete = r.events >= expect;
	err = json ? rec__append(json, &r, true) : 0;
	err = err ?: (csv ? rec__append(csv, &r, false) : 0);
	if (err) {
		fprintf(stderr, "kemari-perf: error: %s\n",
			kemari_last_error(err));
		return 1;
	}
	if (!json && !csv)
		rec__write(stdout, &r, true);
	else
		rec__print(&r);
	return 0;
}

static int cmd_csv_header(void)
{
	for (size_t i = 0; i < KEMARI_ARRAY_SIZE(csv_cols); i++)
		printf("%s%s", csv_cols[i],
		       i + 1 < KEMARI_ARRAY_SIZE(csv_cols) ? "," : "\n");
	return 0;
}

int main(int argc, char **argv)
{
	const char *cmd = argc > 1 ? argv[1] : "";

	kemari_log_set_prefix("kemari-perf");
	if (!strcmp(cmd, "floor"))
		return cmd_floor(argc - 1, argv + 1);
	if (!strcmp(cmd, "stamp"))
		return cmd_stamp(argc - 1, argv + 1);
	if (!strcmp(cmd, "summarize"))
		return cmd_summarize(argc - 1, argv + 1);
	if (!strcmp(cmd, "csv-header"))
		return cmd_csv_header();
	if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help")) {
		usage(stdout);
		return 0;
	}
	usage(stderr);
	return 2;
}
