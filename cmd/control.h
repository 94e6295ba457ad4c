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

#include "kemari/engine.h"

struct control;

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
