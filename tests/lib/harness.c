// SPDX-License-Identifier: MIT
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "kemari/kemari.h"
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

uint16_t h_port(void)
{
	static unsigned int next;

	/*
	 * Criterion runs each test in its own process: spread by pid, over
	 * 20400-31599, below the kernel's ephemeral range (32768 and up):
	 * there a client socket (the tests' own, or a transport's) could
	 * hold the port that a service binds later, at a takeover.
	 */
	return (uint16_t)(20400 + (getpid() % 1400) * 8 + (next++ % 8));
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

long long h_log_number(const char *log, const char *needle)
{
	FILE *f = fopen(log, "r");
	char line[1024];
	long long v = -1;

	while (f && fgets(line, sizeof(line), f)) {
		char *p = strstr(line, needle);

		if (p)
			v = atoll(p + strlen(needle));
	}
	if (f)
		fclose(f);
	return v;
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
