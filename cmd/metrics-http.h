/* SPDX-License-Identifier: MIT */
/* kemari-run --metrics=HOST:PORT: Prometheus metrics over HTTP. */
#ifndef KEMARI_CMD_METRICS_HTTP_H
#define KEMARI_CMD_METRICS_HTTP_H

#include "kemari/engine.h"

struct metrics_http;

/*
 * Listen on addr and answer GET /metrics from a thread of its own with a
 * snapshot of e (which must outlive the server). 0, or a negative errno
 * with a one-line kemari_last_error() (-ENOSYS: built without
 * libmicrohttpd).
 */
int metrics_http__start(struct metrics_http **out, const char *addr,
			struct kemari_engine *e);
/* Stop serving and free; NULL is a no-op. */
void metrics_http__stop(struct metrics_http *h);

#endif
