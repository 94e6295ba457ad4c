/* SPDX-License-Identifier: MIT */
/*
 * The engine's counters in the Prometheus text exposition format (0.0.4),
 * for kemari-run --metrics=HOST:PORT.
 */
#ifndef KEMARI_PROM_H
#define KEMARI_PROM_H

#include "kemari/buf.h"
#include "kemari/engine.h"

/* Append the exposition of s to out: 0 or -ENOMEM. */
int kemari_prom__render(const struct kemari_engine_stats *s,
			struct kemari_buf *out);

#endif
