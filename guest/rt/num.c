// SPDX-License-Identifier: MIT
/* Decimal parsing and formatting; pure, compiled into guests and host tests. */
#include "lib.h"

/* Parse digits into a magnitude no larger than limit. */
static int num__parse_mag(const char *s, size_t len, uint64_t limit,
			  uint64_t *out)
{
	uint64_t v = 0;
	size_t i;

	if (!len)
		return -EINVAL;
	for (i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -EINVAL;
	}
	/* Validate the whole token first so "12x" is -EINVAL, not -ERANGE. */
	for (i = 0; i < len; i++) {
		unsigned int d = (unsigned int)(s[i] - '0');

		if (v > (limit - d) / 10)
			return -ERANGE;
		v = v * 10 + d;
	}
	*out = v;
	return 0;
}

int rt__parse_u64(const char *s, size_t len, uint64_t *out)
{
	return num__parse_mag(s, len, UINT64_MAX, out);
}

int rt__parse_i64(const char *s, size_t len, int64_t *out)
{
	uint64_t mag;
	int neg = len && s[0] == '-';
	uint64_t limit = (uint64_t)INT64_MAX + (neg ? 1 : 0);
	int ret;

	ret = num__parse_mag(s + neg, len - (size_t)neg, limit, &mag);
	if (ret)
		return ret;
	/* Negate in unsigned arithmetic: -(2^63) has no positive twin. */
	*out = neg ? (int64_t)(0 - mag) : (int64_t)mag;
	return 0;
}

size_t rt__fmt_u64(char *buf, uint64_t v)
{
	char tmp[RT_U64_DIGITS];
	size_t n = 0, i;

	do {
		tmp[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	for (i = 0; i < n; i++)
		buf[i] = tmp[n - 1 - i];
	return n;
}

size_t rt__fmt_i64(char *buf, int64_t v)
{
	if (v >= 0)
		return rt__fmt_u64(buf, (uint64_t)v);
	buf[0] = '-';
	return 1 + rt__fmt_u64(buf + 1, 0 - (uint64_t)v);
}
