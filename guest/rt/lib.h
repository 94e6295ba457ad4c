/* SPDX-License-Identifier: MIT */
/*
 * Helpers shared by the freestanding guest runtime and the pure kvstore logic.
 *
 * Everything declared here compiles both freestanding (guest images) and as
 * ordinary hosted C (unit tests), so it depends only on the compiler's own
 * freestanding headers. In a hosted build the string functions and errno
 * values come from libc; in the guest rt/mem.c provides the former and the
 * values below the latter (the Linux numbers, so logs read the same).
 */
#ifndef KEMARI_GUEST_LIB_H
#define KEMARI_GUEST_LIB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#if __STDC_HOSTED__
#include <errno.h>
#include <string.h>
#else
#define EIO 5
#define EBUSY 16
#define EINVAL 22
#define ENOSPC 28
#define ERANGE 34
#define ENODEV 19
#define ENOSYS 38

void *memcpy(void *dst, const void *src, size_t n);
void *memmove(void *dst, const void *src, size_t n);
void *memset(void *dst, int c, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
int strcmp(const char *a, const char *b);
#endif

#define RT_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define RT_MIN(a, b) ((a) < (b) ? (a) : (b))
#define RT_MAX(a, b) ((a) > (b) ? (a) : (b))

/* Longest decimal rendering of a u64 / i64 ("-9223372036854775808"). */
#define RT_U64_DIGITS 20
#define RT_I64_CHARS 20

/*
 * Strict decimal parsing of exactly len bytes (no NUL needed): digits only,
 * an optional leading '-' for the signed form, no '+', no spaces.
 * Returns 0, -EINVAL if the text is not a number, -ERANGE if it does not fit.
 */
int rt__parse_u64(const char *s, size_t len, uint64_t *out);
int rt__parse_i64(const char *s, size_t len, int64_t *out);

/* Write the decimal form of v to buf (no NUL) and return its length.
 * buf must hold RT_U64_DIGITS / RT_I64_CHARS bytes. */
size_t rt__fmt_u64(char *buf, uint64_t v);
size_t rt__fmt_i64(char *buf, int64_t v);

/* CRC-32 (IEEE 802.3, reflected, as zlib): pass 0 to start, the previous
 * result to continue over another buffer. */
uint32_t rt__crc32(uint32_t crc, const void *buf, size_t len);

#endif
