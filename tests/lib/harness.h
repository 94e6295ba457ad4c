/* SPDX-License-Identifier: MIT */
/* Integration-test helpers: processes, logs, ports, the kvstore. */
#ifndef KEMARI_TEST_HARNESS_H
#define KEMARI_TEST_HARNESS_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

struct hproc {
	pid_t pid;
	char log[512];
	int status; /* exit code, or 128 + signal; -1 while running */
};

/* The build directory (KEMARI_BUILD or "build") and a fresh temp dir. */
const char *h_build(void);
void h_tmpdir(char *out, size_t n);
/* Remove a test's temporary directory (only under /tmp/kemari-test.). */
void h_rmtree(const char *dir);
/* A port no other test of this run uses. */
uint16_t h_port(void);
/* Start a command (split at spaces; %s etc. formatted first); stdout and
 * stderr go to log. "@B/" in a word means the build dir, H_SP a space
 * that does not split (one argument with spaces, e.g. --append=...). */
#define H_SP "\x01"
int h_spawn(struct hproc *p, const char *log, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* The same, as another user (uid/gid 65534) for permission tests. */
int h_spawn_as_nobody(struct hproc *p, const char *log, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Wait for exit up to timeout_ms: the exit code, 128+signal, -ETIMEDOUT. */
int h_wait(struct hproc *p, int timeout_ms);
void h_kill(struct hproc *p, int sig);
/* Kill (SIGKILL) and reap, if still running. */
void h_reap(struct hproc *p);
bool h_log_has(const char *log, const char *needle);
/* The last line of log with needle in it, into buf; false: none. */
bool h_log_line(const char *log, const char *needle, char *buf, size_t n);
/* How many lines of log contain needle. */
int h_count_lines(const char *log, const char *needle);
/* The number right after the last occurrence of needle in log, or -1. */
long long h_log_number(const char *log, const char *needle);
/* Poll the log for needle; 0 or -ETIMEDOUT. */
int h_wait_log(const char *log, const char *needle, int timeout_ms);
/* kemari-ctl --control=sock cmd (its output into dir/ctl.log, printed
 * when it fails): its exit status. */
int h_ctl(const char *dir, const char *sock, const char *cmd);
/* Where a process that should have ended is stuck: every thread's
 * backtrace (gdb, when installed) to stderr. */
void h_stacks(const struct hproc *p);
/* Print a log to stderr (for failing tests). */
void h_dump(const char *log);
/* Print its last n lines only. */
void h_dump_tail(const char *log, unsigned int n);
/*
 * After a takeover: is the new primary p alive and serving (one PING to
 * the kvstore at server answered)? If not, its last 30 log lines and why
 * (who names it: "the new primary") are printed, and false returned.
 */
bool h_serving(struct hproc *p, const char *log, const char *server,
	       const char *who);
/* The synthetic guest's output file holds exactly n records, record i ==
 * i + 1 (tests/synth: every acknowledged round once, in place). */
void h_synth_check_output(const char *path, int n);
/* The transports the synthetic-guest suites run over, as kemari-run
 * options ("--transport=ofi --provider=tcp"): KEMARI_SYNTH_XPORTS
 * ("tcp;ofi --provider=tcp"; a ';' before "ofi_" belongs to a layered
 * provider name: "ofi --provider=tcp;ofi_rxm"), by default tcp and, when
 * compiled in, ofi over its tcp provider and over shm. Returns how many it
 * filled (at most max). */
struct h_xspec {
	char args[64];
};
size_t h_synth_xports(struct h_xspec *xs, size_t max);
/* PING the kvstore until it answers; 0 or -ETIMEDOUT. */
int h_kv_ready(const char *server, int timeout_ms);
/* One kvstore request with the client's next seq, reply into buf. */
int h_kv(const char *server, const char *client, uint64_t seq, const char *cmd,
	 char *reply, size_t cap);
/* Milliseconds scaled for slow (emulated) machines: KEMARI_TIME_SCALE. */
int h_ms(int ms);

#endif
