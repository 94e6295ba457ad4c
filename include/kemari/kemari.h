/* SPDX-License-Identifier: MIT */
/*
 * Kemari-RDMA common definitions: error convention, logging, small helpers.
 *
 * Error convention: every function that can fail returns 0 (or a count) on
 * success and a negative errno on failure; objects come back through
 * out-parameters. A function that knows *why* in words the user can act on
 * records a one-line message with kemari_err(); the program's top level
 * (cmd/) prints kemari_last_error() once.
 */
#ifndef KEMARI_KEMARI_H
#define KEMARI_KEMARI_H

#include <stddef.h>
#include <stdint.h>

#define KEMARI_VERSION "0.1.0"
#define KEMARI_PAGE_SIZE 4096ULL
#define KEMARI_PAGE_SHIFT 12

#define KEMARI_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define kemari_container_of(ptr, type, member)                                 \
	((type *)((char *)(ptr)-offsetof(type, member)))
#define KEMARI_ALIGN_UP(x, a) (((x) + (a)-1) & ~((__typeof__(x))(a)-1))
#define KEMARI_MIN(a, b) ((a) < (b) ? (a) : (b))
#define KEMARI_MAX(a, b) ((a) > (b) ? (a) : (b))

#define KEMARI_PRINTF(f, a) __attribute__((format(printf, f, a)))

/*
 * Record a one-line, user-actionable error message (thread-local) and return
 * err (a negative errno) so callers can write `return kemari_err(-EINVAL, ...)`.
 * The first message recorded since kemari_err_clear() wins: the deepest
 * context is usually the most precise.
 */
int kemari_err(int err, const char *fmt, ...) KEMARI_PRINTF(2, 3);
/* Like kemari_err(), but replaces any earlier message. */
int kemari_err_override(int err, const char *fmt, ...) KEMARI_PRINTF(2, 3);
/* The recorded message, or strerror(-err) when none was recorded. */
const char *kemari_last_error(int err);
void kemari_err_clear(void);

enum kemari_log_level {
	KEMARI_LOG_ERROR,
	KEMARI_LOG_WARN,
	KEMARI_LOG_INFO,
	KEMARI_LOG_DEBUG,
};
/* Log one line to stderr as "<prog>[<role>]: msg". Thread-safe. */
void kemari_log(enum kemari_log_level lvl, const char *fmt, ...)
	KEMARI_PRINTF(2, 3);
void kemari_log_set_level(enum kemari_log_level lvl);
void kemari_log_set_prefix(const char *prefix);

#define kemari_error(...) kemari_log(KEMARI_LOG_ERROR, __VA_ARGS__)
#define kemari_warn(...) kemari_log(KEMARI_LOG_WARN, __VA_ARGS__)
#define kemari_info(...) kemari_log(KEMARI_LOG_INFO, __VA_ARGS__)
#define kemari_debug(...) kemari_log(KEMARI_LOG_DEBUG, __VA_ARGS__)

/* Monotonic clock in nanoseconds / microseconds. */
uint64_t kemari_now_ns(void);
static inline uint64_t kemari_now_us(void)
{
	return kemari_now_ns() / 1000;
}

/* Parse "64M", "1G", "4096", "512K" into bytes. 0 or -EINVAL. */
int kemari_parse_size(const char *s, uint64_t *out);
/* Parse "HOST:PORT" (IPv4 dotted quad or "localhost") into ip/port, host order. */
int kemari_parse_hostport(const char *s, uint32_t *ip, uint16_t *port);
struct sockaddr_in;
/* The same into a sockaddr_in; -EINVAL with a one-line error naming addr. */
int kemari_parse_sockaddr(const char *addr, struct sockaddr_in *sa);
/* CRC32C (Castagnoli) of buf, continuing from crc (start with 0). */
uint32_t kemari_crc32c(uint32_t crc, const void *buf, size_t len);
/* 64-bit FNV-1a hash of a whole file: 0 or negative errno. */
int kemari_hash_file(const char *path, uint64_t *out);

#endif
