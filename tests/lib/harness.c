// SPDX-License-Identifier: MIT
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "kemari/kemari.h"
#include "kemari/xport.h"
#include "kvclient.h"

const char *h_build(void)
{
	const char *b = getenv("KEMARI_BUILD");

	return b && *b ? b : "build";
}

void h_tmpdir(char *out, size_t n)
{
	snprintf(out, n, "/tmp/kemari-test.XXXXXX");
	if (!mkdtemp(out))
		out[0] = 0;
}

void h_rmtree(const char *dir)
{
	char cmd[400];

	if (getenv("KEMARI_KEEP_TMP") ||
	    strncmp(dir, "/tmp/kemari-test.", strlen("/tmp/kemari-test.")) ||
	    strchr(dir, '\'') || strstr(dir, ".."))
		return;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd))
		fprintf(stderr, "could not remove %s\n", dir);
}

/* Whether nothing holds TCP port p (bound the way kemari-run binds). */
static bool h_port_free(uint16_t p)
{
	struct sockaddr_in sa = { .sin_family = AF_INET,
				  .sin_port = htons(p),
				  .sin_addr.s_addr = htonl(INADDR_ANY) };
	int one = 1, fd = socket(AF_INET, SOCK_STREAM, 0), ok;

	if (fd < 0)
		return true;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	ok = !bind(fd, (struct sockaddr *)&sa, sizeof(sa));
	close(fd);
	return ok;
}

uint16_t h_port(void)
{
	static unsigned int next;
	uint16_t p = 0;

	/*
	 * Criterion runs each test in its own process: spread by pid, over
	 * 20400-31599, below the kernel's ephemeral range (32768 and up):
	 * there a client socket (the tests' own, or a transport's) could
	 * hold the port that a service binds later, at a takeover. A port
	 * something still holds (a test whose pid shared this one's slot
	 * modulo 1400, its side not yet gone: CI once saw "address already
	 * in use" for a secondary) is passed over.
	 */
	for (int i = 0; i < 64; i++) {
		p = (uint16_t)(20400 +
			       ((unsigned int)(getpid() % 1400) * 8 + next++) %
				       11200);
		if (h_port_free(p))
			break;
	}
	return p;
}

int h_ms(int ms)
{
	const char *s = getenv("KEMARI_TIME_SCALE");
	int k = s ? atoi(s) : 1;

	return ms * (k > 0 ? k : 1);
}

static int h_vspawn(struct hproc *p, const char *log, bool nobody,
		    const char *fmt, va_list ap)
{
	char cmd[4096], *argv[128], *save, *w;
	static char words[128][512];
	int argc = 0, fd;

	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	for (w = strtok_r(cmd, " ", &save); w && argc < 127;
	     w = strtok_r(NULL, " ", &save)) {
		char *at = strstr(w, "@B/");

		if (at)
			snprintf(words[argc], sizeof(words[argc]), "%.*s%s/%s",
				 (int)(at - w), w, h_build(), at + 3);
		else
			snprintf(words[argc], sizeof(words[argc]), "%s", w);
		/* H_SP: a space inside one argument. */
		for (char *c = words[argc]; *c; c++)
			if (*c == H_SP[0])
				*c = ' ';
		argv[argc] = words[argc];
		argc++;
	}
	argv[argc] = NULL;
	snprintf(p->log, sizeof(p->log), "%s", log);
	p->status = -1;
	p->pid = fork();
	if (p->pid < 0)
		return -errno;
	if (p->pid == 0) {
		fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0666);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
			close(fd);
		}
		setpgid(0, 0);
		if (nobody && (setgid(65534) || setuid(65534)))
			_exit(126);
		execv(argv[0], argv);
		fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	return 0;
}

int h_spawn(struct hproc *p, const char *log, const char *fmt, ...)
{
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = h_vspawn(p, log, false, fmt, ap);
	va_end(ap);
	return r;
}

int h_spawn_as_nobody(struct hproc *p, const char *log, const char *fmt, ...)
{
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = h_vspawn(p, log, true, fmt, ap);
	va_end(ap);
	return r;
}

int h_wait(struct hproc *p, int timeout_ms)
{
	uint64_t deadline = kemari_now_ns() + (uint64_t)timeout_ms * 1000000ULL;
	int st;

	if (p->status >= 0)
		return p->status;
	for (;;) {
		pid_t r = waitpid(p->pid, &st, WNOHANG);

		if (r == p->pid) {
			p->status = WIFEXITED(st) ? WEXITSTATUS(st)
						  : 128 + WTERMSIG(st);
			return p->status;
		}
		if (r < 0)
			return -errno;
		if (kemari_now_ns() >= deadline)
			return -ETIMEDOUT;
		usleep(10000);
	}
}

void h_kill(struct hproc *p, int sig)
{
	if (p->pid > 0 && p->status < 0)
		kill(p->pid, sig);
}

void h_reap(struct hproc *p)
{
	if (p->pid <= 0 || p->status >= 0)
		return;
	kill(p->pid, SIGKILL);
	h_wait(p, 10000);
}

int h_ctl(const char *dir, const char *sock, const char *cmd)
{
	struct hproc ctl = { 0 };
	char log[320];
	int st;

	snprintf(log, sizeof(log), "%s/ctl.log", dir);
	if (h_spawn(&ctl, log, "@B/kemari-ctl --control=%s %s", sock, cmd))
		return -1;
	st = h_wait(&ctl, h_ms(10000));
	if (st != 0)
		h_dump(log);
	return st;
}

void h_stacks(const struct hproc *p)
{
	char cmd[256];

	if (p->pid <= 0 || h_wait((struct hproc *)p, 0) != -ETIMEDOUT)
		return;
	snprintf(cmd, sizeof(cmd),
		 "command -v gdb >/dev/null && gdb -batch -p %d -ex 'thread apply all bt' 2>&1 | grep -E '^(#|Thread)' >&2 || echo 'h_stacks: no gdb here' >&2",
		 (int)p->pid);
	fprintf(stderr, "---- stacks of pid %d\n", (int)p->pid);
	if (system(cmd) < 0)
		fprintf(stderr, "h_stacks: cannot run gdb\n");
}

bool h_log_line(const char *log, const char *needle, char *buf, size_t n)
{
	FILE *f = fopen(log, "r");
	char line[4096];
	bool found = false;

	while (f && fgets(line, sizeof(line), f)) {
		if (!strstr(line, needle))
			continue;
		line[strcspn(line, "\n")] = 0;
		snprintf(buf, n, "%s", line);
		found = true;
	}
	if (f)
		fclose(f);
	return found;
}

int h_count_lines(const char *log, const char *needle)
{
	FILE *f = fopen(log, "r");
	char line[4096];
	int n = 0;

	while (f && fgets(line, sizeof(line), f))
		n += strstr(line, needle) != NULL;
	if (f)
		fclose(f);
	return n;
}

long long h_log_number(const char *log, const char *needle)
{
	char line[4096], *p;

	if (!h_log_line(log, needle, line, sizeof(line)))
		return -1;
	p = strstr(line, needle);
	return atoll(p + strlen(needle));
}

bool h_log_has(const char *log, const char *needle)
{
	FILE *f = fopen(log, "r");
	char line[4096];
	bool found = false;

	if (!f)
		return false;
	while (!found && fgets(line, sizeof(line), f))
		found = strstr(line, needle) != NULL;
	fclose(f);
	return found;
}

int h_wait_log(const char *log, const char *needle, int timeout_ms)
{
	uint64_t deadline = kemari_now_ns() + (uint64_t)timeout_ms * 1000000ULL;

	while (!h_log_has(log, needle)) {
		if (kemari_now_ns() >= deadline)
			return -ETIMEDOUT;
		usleep(20000);
	}
	return 0;
}

void h_dump(const char *log)
{
	FILE *f = fopen(log, "r");
	char line[4096];

	if (!f)
		return;
	fprintf(stderr, "---- %s\n", log);
	while (fgets(line, sizeof(line), f))
		fputs(line, stderr);
	fprintf(stderr, "----\n");
	fclose(f);
}

void h_dump_tail(const char *log, unsigned int n)
{
	FILE *f = fopen(log, "r");
	char(*ring)[1024];
	unsigned int count = 0;

	if (!f)
		return;
	ring = calloc(n ? n : 1, sizeof(*ring));
	if (!ring) {
		fclose(f);
		return;
	}
	while (n && fgets(ring[count % n], sizeof(ring[0]), f))
		count++;
	fprintf(stderr, "---- %s (its last %u lines of %u)\n", log,
		count < n ? count : n, count);
	for (unsigned int i = count < n ? 0 : count - n; i < count; i++)
		fputs(ring[i % n], stderr);
	fprintf(stderr, "----\n");
	free(ring);
	fclose(f);
}

bool h_serving(struct hproc *p, const char *log, const char *server,
	       const char *who)
{
	char reply[128] = "";
	int st = h_wait(p, 0), err = 0;

	if (st == -ETIMEDOUT) {
		/* A client id of its own: one request more, answered. */
		err = h_kv(server, "h-serving", 1, "PING", reply,
			   sizeof(reply));
		if (!err && !strcmp(reply, "OK PONG"))
			return true;
	}
	h_dump_tail(log, 30);
	if (st != -ETIMEDOUT)
		cr_log_error(
			"%s is not running any more (exit status %d); the end of its log is above",
			who, st);
	else
		cr_log_error(
			"%s runs but does not serve (PING: %s, '%s'); the end of its log is above",
			who, err ? strerror(-err) : "answered", reply);
	return false;
}

int h_kv(const char *server, const char *client, uint64_t seq, const char *cmd,
	 char *reply, size_t cap)
{
	struct kv_client c;
	int err = kv_client__open(&c, server, client);

	if (err)
		return err;
	c.timeout_ms = h_ms(10000);
	err = kv_client__call_seq(&c, seq, cmd, reply, cap);
	kv_client__close(&c);
	return err;
}

int h_kv_ready(const char *server, int timeout_ms)
{
	uint64_t deadline = kemari_now_ns() + (uint64_t)timeout_ms * 1000000ULL;
	char reply[64];
	static uint64_t seq;

	while (kemari_now_ns() < deadline) {
		struct kv_client c;
		int err;

		if (kv_client__open(&c, server, "ready-probe"))
			return -EINVAL;
		c.timeout_ms = 300;
		c.resend_ms = 100;
		err = kv_client__call_seq(&c,
					  (uint64_t)time(NULL) * 1000 + ++seq,
					  "PING", reply, sizeof(reply));
		kv_client__close(&c);
		if (!err)
			return 0;
		usleep(50000);
	}
	return -ETIMEDOUT;
}

size_t h_synth_xports(struct h_xspec *xs, size_t max)
{
	const char *env = getenv("KEMARI_SYNTH_XPORTS");
	char buf[256], *save = NULL;
	size_t n = 0;

	/* ofi: FI_EP_MSG over tcp, FI_EP_RDM over shm (ofi_rdm.c). */
	if (!env || !*env)
		env = kemari_xport_find("ofi")
			      ? "tcp;ofi --provider=tcp;ofi --provider=shm"
			      : "tcp";
	snprintf(buf, sizeof(buf), "%s", env);
	for (char *t = buf; t && *t && n < max; t = save) {
		char *sep = t;

		/* "tcp;ofi_rxm" is one provider: skip a ';' before "ofi_". */
		while ((sep = strchr(sep, ';')) && !strncmp(sep + 1, "ofi_", 4))
			sep++;
		save = sep ? sep + 1 : NULL;
		if (sep)
			*sep = 0;
		snprintf(xs[n++].args, sizeof(xs[0].args), "--transport=%.48s",
			 t);
	}
	return n;
}

void h_synth_check_output(const char *path, int n)
{
	int fd = open(path, O_RDONLY);
	uint64_t *rec = calloc((size_t)n + 1, sizeof(*rec));
	ssize_t got;

	cr_assert(fd >= 0 && rec);
	got = pread(fd, rec, ((size_t)n + 1) * sizeof(*rec), 0);
	close(fd);
	cr_assert(eq(sz, (size_t)got, (size_t)n * sizeof(*rec)),
		  "output holds %zd bytes, expected %d records", got, n);
	for (int i = 0; i < n; i++)
		cr_assert(eq(u64, rec[i], (uint64_t)i + 1), "record %d", i);
	free(rec);
}
