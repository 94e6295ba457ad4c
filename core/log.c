// SPDX-License-Identifier: MIT
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "kemari/kemari.h"

static __thread char err_msg[512];
static __thread int err_set;
static enum kemari_log_level log_level = KEMARI_LOG_INFO;
static char log_prefix[64] = "kemari";
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

KEMARI_PRINTF(3, 0)
static int err_vset(int err, int override, const char *fmt, va_list ap)
{
	if (!err_set || override) {
		vsnprintf(err_msg, sizeof(err_msg), fmt, ap);
		err_set = 1;
	}
	return err;
}

int kemari_err(int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	err_vset(err, 0, fmt, ap);
	va_end(ap);
	return err;
}

int kemari_err_override(int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	err_vset(err, 1, fmt, ap);
	va_end(ap);
	return err;
}

const char *kemari_last_error(int err)
{
	if (err_set)
		return err_msg;
	return strerror(err < 0 ? -err : err);
}

void kemari_err_clear(void)
{
	err_set = 0;
	err_msg[0] = 0;
}

void kemari_log_set_level(enum kemari_log_level lvl)
{
	log_level = lvl;
}

void kemari_log_set_prefix(const char *prefix)
{
	snprintf(log_prefix, sizeof(log_prefix), "%s", prefix);
}

void kemari_log(enum kemari_log_level lvl, const char *fmt, ...)
{
	static const char *const tag[] = { "error: ", "warning: ", "", "" };
	char line[1024];
	va_list ap;

	if (lvl > log_level)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	pthread_mutex_lock(&log_lock);
	fprintf(stderr, "%s: %s%s\n", log_prefix, tag[lvl], line);
	pthread_mutex_unlock(&log_lock);
}

uint64_t kemari_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}
