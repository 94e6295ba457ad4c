/* SPDX-License-Identifier: MIT */
/*
 * kemari-run --control=PATH: a Unix socket (mode 0600) speaking one JSON
 * object per line each way, in the manner of QMP:
 *   {"execute":"status"}  ->  {"return":{...}}
 *   anything wrong        ->  {"error":{"class":"...","desc":"..."}}
 * Commands: status, stats, stop (an orderly stop, as SIGTERM). An "id"
 * member of a request is echoed in its answer.
 */
#ifndef KEMARI_CMD_CONTROL_H
#define KEMARI_CMD_CONTROL_H

#include <sys/types.h>

#include "kemari/engine.h"
#include "kemari/kemari.h"

struct control;

/*
 * Why this process stops, logged once: the first caller's line is printed
 * (info), later ones are dropped (a second SIGTERM, a "stop" after a
 * signal). Thread-safe; not async-signal-safe (a handler only records).
 */
void control__note_stop(const char *fmt, ...) KEMARI_PRINTF(1, 2);
/* "pid 1234 (bash)" into out, the name from /proc/PID/comm when readable. */
void control__describe_pid(pid_t pid, char *out, size_t n);

/*
 * Listen on path (replacing a stale socket nobody listens on) and serve
 * from a thread of its own; e must outlive the server. 0, or a negative
 * errno with a one-line kemari_last_error().
 */
int control__start(struct control **out, const char *path,
		   struct kemari_engine *e);
/* Stop serving, remove the socket and free; NULL is a no-op. */
void control__stop(struct control *c);

#endif
