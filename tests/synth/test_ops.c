// SPDX-License-Identifier: MIT
/*
 * Operating kemari-run with the synthetic guest (--hv=synth), natively:
 * configuration files. Exact outcomes as in test_synth.c: the output file
 * holds exactly the rounds' records, the stats one line per epoch.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "kemari/json.h"

#define ROUNDS 200

static char dir[256], out[300], plog[300], slog[300], peer[64];
static struct hproc pri, sec;

static void setup(void)
{
	h_tmpdir(dir, sizeof(dir));
	snprintf(out, sizeof(out), "%s/out.bin", dir);
	snprintf(plog, sizeof(plog), "%s/primary.log", dir);
	snprintf(slog, sizeof(slog), "%s/secondary.log", dir);
	snprintf(peer, sizeof(peer), "127.0.0.1:%u", h_port());
	pri.pid = sec.pid = 0;
}

static void teardown(void)
{
	h_reap(&pri);
	h_reap(&sec);
	h_rmtree(dir);
}

TestSuite(ops, .init = setup, .fini = teardown, .timeout = 180);

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	cr_assert(f != NULL, "%s", path);
	cr_assert(fputs(text, f) >= 0);
	cr_assert(eq(int, fclose(f), 0));
}

/* The output file holds exactly n records, record i == i + 1. */
static void check_output(int n)
{
	h_synth_check_output(out, n);
}

static int count_lines(const char *path)
{
	char line[512];
	int n = 0;
	FILE *f = fopen(path, "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		n++;
	fclose(f);
	return n;
}

/*
 * A pair started from configuration files alone (comments, blank lines,
 * bare switches, quoted values); on the primary's command line --stats
 * and --guest-arg=rounds= override the file's, one before and one after
 * --config: the file's --stats names a directory that does not exist, so
 * a run that used it would fail at once.
 */
Test(ops, pair_runs_from_config_files_command_line_wins)
{
	char scf[300], pcf[300], stats[300], text[2048];

	snprintf(scf, sizeof(scf), "%s/secondary.conf", dir);
	snprintf(pcf, sizeof(pcf), "%s/primary.conf", dir);
	snprintf(stats, sizeof(stats), "%s/stats.json", dir);
	snprintf(text, sizeof(text),
		 "# the secondary of the synthetic pair\n"
		 "role = secondary\n"
		 "listen = %s\n"
		 "hv = synth\n"
		 "mem = 32M\n"
		 "\n"
		 "no-progress\n"
		 "heartbeat-ms = 20   # default, said again\n"
		 "heartbeat-timeout-ms = %d\n"
		 "disk = \"%s\"\n",
		 peer, h_ms(1000), out);
	write_file(scf, text);
	snprintf(text, sizeof(text),
		 "role = primary\n"
		 "peer = %s\n"
		 "transport = tcp\n"
		 "hv = synth\n"
		 "mem = 32M\n"
		 "no-progress = true\n"
		 "verify-restore = false\n"
		 "heartbeat-timeout-ms = %d\n"
		 "disk = %s\n"
		 "guest-arg = pages=64\n"
		 "guest-arg = rounds=5\n"
		 "stats = %s/no-such-dir/stats.json\n",
		 peer, h_ms(1000), out, dir);
	write_file(pcf, text);

	cr_assert(eq(int, h_spawn(&sec, slog, "@B/kemari-run --config=%s", scf),
		     0));
	if (h_wait_log(slog, "waiting for the primary", h_ms(20000))) {
		h_dump(slog);
		cr_fatal("secondary did not start from %s", scf);
	}
	cr_assert(eq(int,
		     h_spawn(&pri, plog,
			     "@B/kemari-run --stats=%s --config=%s "
			     "--guest-arg=rounds=%d",
			     stats, pcf, ROUNDS),
		     0));
	if (h_wait(&pri, h_ms(60000)) != 0) {
		h_dump(plog);
		cr_fatal("the primary did not run from %s", pcf);
	}
	cr_assert(eq(int, h_wait(&sec, h_ms(20000)), 0));
	cr_assert(h_log_has(slog, "shut down in order at epoch 200"));
	check_output(ROUNDS);
	cr_assert(eq(int, count_lines(stats), ROUNDS));
}

/* A file error is one line naming the file and line, exit status 2. */
Test(ops, config_errors_name_file_and_line_exit_2)
{
	static const struct {
		const char *text, *msg;
	} cases[] = {
		{ "hv = synth\n\n# x\nmemory = 64M\n",
		  ":4: unknown key 'memory' (the keys are the long options, without the dashes)\n" },
		{ "hv = synth\nmem 64M\n",
		  ":2: expected KEY = VALUE, a bare KEY or a # comment\n" },
		{ "hv = synth\nrole = primary\ncpus = 99\n",
		  ":3: --cpus=99: expected a number from 1 to 8\n" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char cf[300], log[300], want[600], got[1024] = "";
		struct hproc p = { 0 };
		FILE *f;

		snprintf(cf, sizeof(cf), "%s/bad%zu.conf", dir, i);
		snprintf(log, sizeof(log), "%s/bad%zu.log", dir, i);
		write_file(cf, cases[i].text);
		cr_assert(eq(int,
			     h_spawn(&p, log, "@B/kemari-run --config=%s", cf),
			     0));
		cr_assert(eq(int, h_wait(&p, h_ms(10000)), 2), "case %zu", i);
		f = fopen(log, "r");
		cr_assert(f != NULL);
		cr_assert(eq(sz, fread(got, 1, sizeof(got) - 1, f),
			     strlen("kemari-run: error: ") + strlen(cf) +
				     strlen(cases[i].msg)),
			  "case %zu: %s", i, got);
		fclose(f);
		snprintf(want, sizeof(want), "kemari-run: error: %s%s", cf,
			 cases[i].msg);
		cr_assert(eq(str, got, want), "case %zu", i);
	}
}

/* tests/prom_scrape.py's "name value" lines (prometheus_client parsed). */
struct scrape {
	char name[64][40];
	char val[64][40];
	int n;
};

static void scrape(const char *hostport, struct scrape *s)
{
	char cmd[512], line[128];
	FILE *p;
	int st;

	snprintf(cmd, sizeof(cmd),
		 "/usr/bin/python3 tests/prom_scrape.py http://%s/metrics 2>&1",
		 hostport);
	p = popen(cmd, "r");
	cr_assert(p != NULL);
	s->n = 0;
	while (fgets(line, sizeof(line), p) && s->n < 64) {
		if (sscanf(line, "%39s %39s", s->name[s->n], s->val[s->n]) == 2)
			s->n++;
		else
			cr_log_error("%s", line);
	}
	st = pclose(p);
	if (st) {
		for (int i = 0; i < s->n; i++)
			cr_log_error("%s %s", s->name[i], s->val[i]);
		cr_fatal("prom_scrape.py %s failed (status %d)", hostport, st);
	}
}

static const char *sv(const struct scrape *s, const char *name)
{
	for (int i = 0; i < s->n; i++)
		if (!strcmp(s->name[i], name))
			return s->val[i];
	cr_fatal("no %s in the scrape", name);
	return NULL;
}

static long long sn(const struct scrape *s, const char *name)
{
	return strtoll(sv(s, name), NULL, 10);
}

/* Poll until path has at least n lines; 0 or -ETIMEDOUT. */
static int wait_lines(const char *path, int n, int timeout_ms)
{
	for (int t = 0; t < timeout_ms; t += 10) {
		if (count_lines(path) >= n)
			return 0;
		usleep(10000);
	}
	return -ETIMEDOUT;
}

/*
 * Prometheus metrics of a running pair, scraped and parsed with
 * prometheus_client. The primary's epochs counter lies between the
 * --stats lines written before and after the scrape (a record is counted
 * just before its line is written), and every per-epoch series agrees
 * with it exactly: 64 pages per round. Then the primary is frozen
 * (SIGSTOP: silence, not a closed connection): the secondary counts the
 * heartbeats it missed, takes over once, and says so.
 */
Test(ops, metrics_scraped_during_a_run_and_after_takeover)
{
	char stats[300], pm[32], sm[32];
	struct scrape s;
	long long n0, n1, e, resumed;
	const int timeout = h_ms(1000);

	snprintf(stats, sizeof(stats), "%s/stats.json", dir);
	snprintf(pm, sizeof(pm), "127.0.0.1:%u", h_port());
	snprintf(sm, sizeof(sm), "127.0.0.1:%u", h_port());
	cr_assert(eq(int,
		     h_spawn(&sec, slog,
			     "@B/kemari-run --role=secondary --listen=%s "
			     "--hv=synth --mem=32M --no-progress "
			     "--heartbeat-ms=20 --heartbeat-timeout-ms=%d "
			     "--disk=%s --metrics=%s",
			     peer, timeout, out, sm),
		     0));
	if (h_wait_log(slog, "waiting for the primary", h_ms(20000))) {
		h_dump(slog);
		cr_fatal("secondary did not start");
	}
	cr_assert(eq(int,
		     h_spawn(&pri, plog,
			     "@B/kemari-run --role=primary --peer=%s "
			     "--hv=synth --mem=32M --no-progress "
			     "--heartbeat-ms=20 --heartbeat-timeout-ms=%d "
			     "--disk=%s --metrics=%s --stats=%s "
			     "--guest-arg=pages=64 --guest-arg=rounds=1000000 "
			     "--guest-arg=think_us=1000",
			     peer, timeout, out, pm, stats),
		     0));
	if (wait_lines(stats, 20, h_ms(30000))) {
		h_dump(plog);
		cr_fatal("no 20 epochs");
	}

	n0 = count_lines(stats);
	scrape(pm, &s);
	n1 = count_lines(stats);
	e = sn(&s, "epochs");
	cr_assert(ge(i64, e, n0));
	cr_assert(le(i64, e, n1 + 1));
	cr_assert(eq(str, (char *)sv(&s, "role"), "primary"));
	cr_assert(eq(str, (char *)sv(&s, "state"), "protected"));
	cr_assert(eq(i64, sn(&s, "protected"), 1));
	cr_assert(eq(i64, sn(&s, "epoch"), e));
	cr_assert(eq(i64, sn(&s, "pause_count"), e));
	cr_assert(eq(i64, sn(&s, "phase_count_harvest"), e));
	cr_assert(eq(i64, sn(&s, "phase_count_state"), e));
	cr_assert(eq(i64, sn(&s, "phase_count_push"), e));
	cr_assert(eq(i64, sn(&s, "phase_count_commit_ack"), e));
	cr_assert(eq(i64, sn(&s, "dirty_count"), e));
	cr_assert(eq(i64, sn(&s, "dirty_le_16"), 0));
	cr_assert(eq(i64, sn(&s, "dirty_le_64"), e));
	cr_assert(eq(i64, sn(&s, "pages"), 64 * e));
	cr_assert(eq(i64, sn(&s, "bytes"), 64 * 4096 * e));
	cr_assert(eq(i64, sn(&s, "takeovers"), 0));
	cr_assert(eq(i64, sn(&s, "ram"), 32 << 20));
	cr_assert(eq(i64, sn(&s, "vcpus"), 1));

	scrape(sm, &s);
	cr_assert(eq(str, (char *)sv(&s, "role"), "secondary"));
	cr_assert(eq(str, (char *)sv(&s, "state"), "protected"));
	cr_assert(eq(i64, sn(&s, "protected"), 1));
	cr_assert(ge(i64, sn(&s, "epoch"), n0));
	cr_assert(eq(i64, sn(&s, "epochs"), sn(&s, "epoch")));
	cr_assert(eq(i64, sn(&s, "takeovers"), 0));

	h_kill(&pri, SIGSTOP);
	if (h_wait_log(slog, "takeover: resumed from epoch ", h_ms(30000))) {
		h_dump(slog);
		cr_fatal("no takeover");
	}
	resumed = h_log_number(slog, "takeover: resumed from epoch ");
	scrape(sm, &s);
	cr_assert(eq(str, (char *)sv(&s, "state"), "taken-over"));
	cr_assert(eq(i64, sn(&s, "protected"), 0));
	cr_assert(eq(i64, sn(&s, "takeovers"), 1));
	cr_assert(eq(i64, sn(&s, "epoch"), resumed));
	cr_assert(eq(i64, sn(&s, "epochs"), resumed));
	/* Silent for more than the timeout: every period but the first. */
	cr_assert(ge(i64, sn(&s, "heartbeats_missed"), timeout / 20 - 1));
	h_kill(&pri, SIGKILL);
}

/* Run a command, its stdout's "key value" lines into s; its exit status. */
static int run_kv(struct scrape *s, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static int run_kv(struct scrape *s, const char *fmt, ...)
{
	char cmd[1024], line[512];
	va_list ap;
	FILE *p;
	int st;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	p = popen(cmd, "r");
	cr_assert(p != NULL);
	s->n = 0;
	while (fgets(line, sizeof(line), p) && s->n < 64)
		if (sscanf(line, "%39s %39[^\n]", s->name[s->n],
			   s->val[s->n]) == 2)
			s->n++;
	st = pclose(p);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* The first line a command prints (stdout and stderr) and its status. */
static int run_line(char *buf, size_t cap, const char *cmd)
{
	FILE *p = popen(cmd, "r");
	int st;

	cr_assert(p != NULL);
	if (!fgets(buf, (int)cap, p))
		buf[0] = 0;
	buf[strcspn(buf, "\n")] = 0;
	while (fgetc(p) != EOF)
		;
	st = pclose(p);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* One raw request line on the socket, its answer line. */
static void raw_call(const char *path, const char *req, char *buf, size_t cap)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	size_t len = 0;
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);

	cr_assert(fd >= 0);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	cr_assert(eq(int, connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0));
	cr_assert(eq(sz, (size_t)write(fd, req, strlen(req)), strlen(req)));
	while (len + 1 < cap && !memchr(buf, '\n', len)) {
		ssize_t k = read(fd, buf + len, cap - 1 - len);

		cr_assert(k > 0, "no answer to %s", req);
		len += (size_t)k;
		buf[len] = 0;
	}
	buf[strcspn(buf, "\n")] = 0;
	close(fd);
}

static int json_collect(void *ctx, const char *path, enum kemari_json_type t,
			const char *value)
{
	struct scrape *s = ctx;

	(void)t;
	if (s->n < 64) {
		snprintf(s->name[s->n], sizeof(s->name[0]), "%s", path);
		snprintf(s->val[s->n], sizeof(s->val[0]), "%s", value);
		s->n++;
	}
	return 0;
}

/*
 * The control socket of a running pair, through kemari-ctl (options before
 * and after the command, readable and --json) and raw: status, stats, the
 * errors, and stop, which ends the pair in order like SIGTERM.
 */
Test(ops, control_socket_status_stats_stop)
{
	char pctl[300], sctl[300], stats[300], cmd[1024], line[1024],
		cause[400];
	struct scrape s;
	struct stat st;
	long long e;
	const char *B = h_build();

	snprintf(pctl, sizeof(pctl), "%s/primary.ctl", dir);
	snprintf(sctl, sizeof(sctl), "%s/secondary.ctl", dir);
	snprintf(stats, sizeof(stats), "%s/stats.json", dir);
	cr_assert(eq(int,
		     h_spawn(&sec, slog,
			     "@B/kemari-run --role=secondary --listen=%s "
			     "--hv=synth --mem=32M --no-progress "
			     "--heartbeat-timeout-ms=%d --disk=%s --control=%s",
			     peer, h_ms(1000), out, sctl),
		     0));
	if (h_wait_log(slog, "waiting for the primary", h_ms(20000))) {
		h_dump(slog);
		cr_fatal("secondary did not start");
	}
	cr_assert(eq(
		int,
		h_spawn(&pri, plog,
			"@B/kemari-run --role=primary --peer=%s "
			"--hv=synth --mem=32M --no-progress "
			"--heartbeat-timeout-ms=%d --disk=%s --control=%s "
			"--stats=%s --guest-arg=pages=64 "
			"--guest-arg=rounds=1000000 --guest-arg=think_us=1000",
			peer, h_ms(1000), out, pctl, stats),
		0));
	if (wait_lines(stats, 5, h_ms(30000))) {
		h_dump(plog);
		cr_fatal("no 5 epochs");
	}
	cr_assert(eq(int, stat(pctl, &st), 0));
	cr_assert(eq(u32, (unsigned int)(st.st_mode & S_IFMT),
		     (unsigned int)S_IFSOCK));
	cr_assert(eq(u32, (unsigned int)(st.st_mode & 0777), 0600));

	cr_assert(eq(int,
		     run_kv(&s, "%s/kemari-ctl --control=%s status", B, pctl),
		     0));
	cr_assert(eq(str, (char *)sv(&s, "role"), "primary"));
	cr_assert(eq(str, (char *)sv(&s, "state"), "protected"));
	cr_assert(eq(str, (char *)sv(&s, "peer.address"), peer));
	cr_assert(eq(str, (char *)sv(&s, "peer.connected"), "true"));
	cr_assert(eq(i64, sn(&s, "guest.ram_bytes"), 32 << 20));
	cr_assert(eq(i64, sn(&s, "guest.vcpus"), 1));
	cr_assert(eq(i64, sn(&s, "bytes_per_epoch"), 64 * 4096));
	cr_assert(ge(i64, sn(&s, "pause_us.p99"), sn(&s, "pause_us.p50")));

	/* The option after the command; the JSON answer as received. */
	snprintf(cmd, sizeof(cmd),
		 "%s/kemari-ctl stats --json --control=%s 2>&1", B, pctl);
	cr_assert(eq(int, run_line(line, sizeof(line), cmd), 0));
	cr_assert(eq(int,
		     strncmp(line, "{\"return\":{\"epochs\":",
			     strlen("{\"return\":{\"epochs\":")),
		     0),
		  "%s", line);
	s.n = 0;
	cr_assert(eq(int, kemari_json__walk(line, json_collect, &s), 0));
	e = sn(&s, "return.epochs");
	cr_assert(gt(i64, e, 0));
	cr_assert(eq(i64, sn(&s, "return.epoch"), e));
	cr_assert(eq(i64, sn(&s, "return.pause_us.count"), e));
	cr_assert(eq(i64, sn(&s, "return.dirty_pages.count"), e));
	cr_assert(eq(i64, sn(&s, "return.pushed_pages"), 64 * e));
	cr_assert(eq(i64, sn(&s, "return.dirty_pages.sum"), 64 * e));
	cr_assert(eq(i64, sn(&s, "return.pushed_bytes"), 64 * 4096 * e));
	cr_assert(eq(i64, sn(&s, "return.takeovers"), 0));

	cr_assert(eq(int,
		     run_kv(&s, "%s/kemari-ctl status --control=%s", B, sctl),
		     0));
	cr_assert(eq(str, (char *)sv(&s, "role"), "secondary"));
	cr_assert(eq(str, (char *)sv(&s, "state"), "protected"));
	cr_assert(eq(str, (char *)sv(&s, "peer.address"), peer));

	raw_call(pctl, "{\"execute\":\"bogus\",\"id\":42}\n", line,
		 sizeof(line));
	cr_assert(eq(
		str, line,
		"{\"error\":{\"class\":\"CommandNotFound\",\"desc\":\"unknown command 'bogus': use status, stats, stop or switchover\"},\"id\":42}"));
	/* Only a protected primary hands the guest over. */
	raw_call(sctl, "{\"execute\":\"switchover\"}\n", line,
		 sizeof(line));
	cr_assert(eq(
		str, line,
		"{\"error\":{\"class\":\"DeviceNotActive\",\"desc\":\"no switchover: no secondary holds the guest (only a protected primary hands it over)\"}}"));
	raw_call(pctl, "status\n", line, sizeof(line));
	cr_assert(eq(
		str, line,
		"{\"error\":{\"class\":\"GenericError\",\"desc\":\"malformed request: send one JSON object per line, e.g. {\\\"execute\\\":\\\"status\\\"}\"}}"));
	snprintf(cmd, sizeof(cmd), "%s/kemari-ctl --control=%s reboot 2>&1", B,
		 pctl);
	cr_assert(eq(int, run_line(line, sizeof(line), cmd), 2));
	cr_assert(eq(
		str, line,
		"kemari-ctl: error: unknown command 'reboot': use status, stats, stop or switchover"));

	snprintf(cmd, sizeof(cmd), "%s/kemari-ctl --control=%s stop 2>&1", B,
		 pctl);
	cr_assert(eq(int, run_line(line, sizeof(line), cmd), 0));
	cr_assert(eq(
		str, line,
		"stopping: the guest is paused, the disk flushed, then kemari-run exits"));
	cr_assert(eq(int, h_wait(&pri, h_ms(20000)), 0));
	cr_assert(eq(int, h_wait(&sec, h_ms(20000)), 0));
	cr_assert(h_log_has(slog, "the primary shut down in order at epoch"));
	/* Why the primary ended: who asked, through which socket. */
	snprintf(
		cause, sizeof(cause),
		"kemari-run[primary]: stopping on 'stop' from the control socket %s, pid ",
		pctl);
	cr_assert(h_log_has(plog, cause), "no '%s'", cause);
	cr_assert(eq(int, stat(pctl, &st), -1),
		  "the socket outlived its process");
	cr_assert(eq(int, run_line(line, sizeof(line), cmd), 1));
	snprintf(
		cmd, sizeof(cmd),
		"kemari-ctl: error: --control=%s: no such socket (is kemari-run running with this --control?)",
		pctl);
	cr_assert(eq(str, line, cmd));
}
