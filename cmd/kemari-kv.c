// SPDX-License-Identifier: MIT
/*
 * kemari-kv: talk to the kvstore guest from the shell.
 *   kemari-kv [opts] CMD [ARGS...]     one request, prints the reply
 *   kemari-kv [opts] -                 one request per stdin line
 *   kemari-kv [opts] load ...          exactly-once INCR load + check
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "kemari/kemari.h"
#include "kvclient.h"

static volatile int stop_flag;

static void on_stop(int sig)
{
	(void)sig;
	stop_flag = 1;
}

/* A number option, checked whole: one line naming it, and false, if not. */
static bool parse_num(const char *opt, const char *s, unsigned long long min,
		      unsigned long long max, unsigned long long *out)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s || *end || *s == '-' || v < min || v > max) {
		fprintf(stderr,
			"kemari-kv: error: --%s=%s: expected a number from %llu to %llu\n",
			opt, s, min, max);
		return false;
	}
	*out = v;
	return true;
}

/*
 * 64 random bits in hex: a client id (or load prefix) that no other
 * process picks again, even one that gets the same pid later (the kvstore
 * would answer a reused id's seq 1 from its cache, not apply it).
 */
static void random_tag(char *buf, size_t cap, const char *head)
{
	uint64_t r = 0;

	if (getrandom(&r, sizeof(r), 0) != (ssize_t)sizeof(r)) {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		r = ((uint64_t)ts.tv_sec * 1000000000ULL +
		     (uint64_t)ts.tv_nsec) ^
		    ((uint64_t)getpid() << 40);
	}
	snprintf(buf, cap, "%s%016" PRIx64, head, r);
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: kemari-kv [--server=HOST:PORT] [--client=ID] [--seq=N] [--timeout-ms=N] CMD [ARGS...]\n"
		"       kemari-kv [...] -          (one command per line on stdin)\n"
		"       kemari-kv [...] load [--clients=N] [--keys=K] [--ops=M | --duration-ms=D] [--prefix=P]\n"
		"\n"
		"CMD is PING, GET KEY, SET KEY VALUE, INCR KEY or DEL KEY (docs/kvstore.md).\n"
		"Requests are re-sent with the same seq until answered (exactly-once).\n"
		"--server defaults to 127.0.0.1:7500; --client to kv- and 16 random hex\n"
		"digits (never reused, unlike a pid); --seq to a\n"
		"clock-based start so that repeated runs with one --client stay fresh.\n"
		"load: N clients INCR random keys until M each (or D ms or SIGINT), then\n"
		"checks every key: exit 0 only if no acknowledged update was lost or\n"
		"applied twice.\n");
}

static int run_load(const char *server, int timeout_ms, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "clients", required_argument, NULL, 'c' },
		{ "keys", required_argument, NULL, 'k' },
		{ "ops", required_argument, NULL, 'o' },
		{ "duration-ms", required_argument, NULL, 'd' },
		{ "prefix", required_argument, NULL, 'p' },
		{ NULL, 0, NULL, 0 },
	};
	struct kv_load_cfg cfg = { .server = server,
				   .clients = 4,
				   .keys = 8,
				   .timeout_ms = timeout_ms };
	struct sigaction sa = { .sa_handler = on_stop };
	struct kv_load_result r;
	char prefix[64];
	unsigned long duration = 0;
	unsigned long long v;
	int c, err;

	random_tag(prefix, sizeof(prefix), "L");
	cfg.prefix = prefix;
	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'c':
			if (!parse_num("clients", optarg, 1, 256, &v))
				return 2;
			cfg.clients = (unsigned int)v;
			break;
		case 'k':
			if (!parse_num("keys", optarg, 1, 1000000, &v))
				return 2;
			cfg.keys = (unsigned int)v;
			break;
		case 'o':
			if (!parse_num("ops", optarg, 1, 1000000000, &v))
				return 2;
			cfg.ops_per_client = (unsigned int)v;
			break;
		case 'd':
			if (!parse_num("duration-ms", optarg, 1, 86400000, &v))
				return 2;
			duration = (unsigned long)v;
			break;
		case 'p':
			cfg.prefix = optarg;
			break;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (!cfg.clients || !cfg.keys || cfg.clients > 256) {
		fprintf(stderr,
			"kemari-kv: error: load needs 1-256 clients and at least 1 key\n");
		return 2;
	}
	cfg.stop_flag = &stop_flag;
	/* SIGINT ends the load like --duration-ms: the keys are checked. */
	sigaction(SIGINT, &sa, NULL);
	if (duration) {
		sigaction(SIGALRM, &sa, NULL);
		ualarm((useconds_t)KEMARI_MIN(duration * 1000, 999999UL), 0);
		if (duration >= 1000)
			alarm((unsigned int)(duration / 1000));
	}
	err = kv_load__run(&cfg, &r);
	if (err) {
		fprintf(stderr, "kemari-kv: error: load against %s: %s\n",
			server,
			err == -ETIMEDOUT ? "no reply (is the kvstore running?)"
					  : strerror(-err));
		return 1;
	}
	printf("acknowledged %" PRIu64 " updates; final values sum to %" PRIu64
	       "; lost %" PRIu64 "; applied twice %" PRIu64
	       "; returned twice %" PRIu64 "; unanswered %" PRIu64 "\n",
	       r.acked, r.final_sum, r.lost, r.phantom, r.duplicated, r.failed);
	printf("latency p50 %" PRIu64 " us, p99 %" PRIu64 " us, max %" PRIu64
	       " us; resends %" PRIu64 "\n",
	       r.lat_p50_us, r.lat_p99_us, r.lat_max_us, r.resends);
	return r.lost || r.phantom || r.duplicated || r.failed ||
			       r.final_sum != r.acked
		       ? 1
		       : 0;
}

static int one(struct kv_client *c, const char *cmd)
{
	char reply[512];
	int err = kv_client__call(c, cmd, reply, sizeof(reply));

	if (err) {
		fprintf(stderr, "kemari-kv: error: %s: %s\n", cmd,
			err == -ETIMEDOUT
				? "no reply (is the kvstore running on --server?)"
				: strerror(-err));
		return 1;
	}
	printf("%s\n", reply);
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "server", required_argument, NULL, 's' },
		{ "client", required_argument, NULL, 'c' },
		{ "seq", required_argument, NULL, 'n' },
		{ "timeout-ms", required_argument, NULL, 't' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *server = "127.0.0.1:7500";
	char defid[32], cmd[512] = "";
	const char *id = NULL;
	struct kv_client c;
	uint64_t seq = 0;
	unsigned long long v;
	int timeout_ms = 10000, ch, err, ret = 0;

	while ((ch = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
		switch (ch) {
		case 's':
			server = optarg;
			break;
		case 'c':
			id = optarg;
			break;
		case 'n':
			if (!parse_num("seq", optarg, 1, UINT64_MAX / 2, &v))
				return 2;
			seq = v;
			break;
		case 't':
			if (!parse_num("timeout-ms", optarg, 1, 3600000, &v))
				return 2;
			timeout_ms = (int)v;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind >= argc) {
		usage(stderr);
		return 2;
	}
	if (!strcmp(argv[optind], "load"))
		return run_load(server, timeout_ms, argc - optind,
				argv + optind);
	random_tag(defid, sizeof(defid), "kv-");
	err = kv_client__open(&c, server, id ? id : defid);
	if (err) {
		fprintf(stderr,
			"kemari-kv: error: --server=%s / --client: %s\n",
			server,
			err == -EINVAL
				? "expected HOST:PORT and a 1-64 character id"
				: strerror(-err));
		return 2;
	}
	c.timeout_ms = timeout_ms;
	if (seq)
		c.seq = seq - 1;
	else if (id) {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		c.seq = (uint64_t)ts.tv_sec * 1000000ULL +
			(uint64_t)ts.tv_nsec / 1000;
	}
	if (!strcmp(argv[optind], "-")) {
		char line[512];

		while (fgets(line, sizeof(line), stdin)) {
			line[strcspn(line, "\r\n")] = 0;
			if (*line)
				ret |= one(&c, line);
		}
	} else {
		for (int i = optind; i < argc; i++) {
			if (strlen(cmd) + strlen(argv[i]) + 2 > sizeof(cmd)) {
				fprintf(stderr,
					"kemari-kv: error: command too long\n");
				return 2;
			}
			if (i > optind)
				strcat(cmd, " ");
			strcat(cmd, argv[i]);
		}
		ret = one(&c, cmd);
	}
	kv_client__close(&c);
	return ret;
}
