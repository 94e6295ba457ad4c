// SPDX-License-Identifier: MIT
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kemari/buf.h"
#include "kemari/kemari.h"

int kemari_parse_size(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;
	unsigned int shift = 0;

	if (!s || !*s || *s == '-')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s)
		return -EINVAL;
	switch (*end) {
	case 0:
		break;
	case 'k':
	case 'K':
		shift = 10;
		end++;
		break;
	case 'm':
	case 'M':
		shift = 20;
		end++;
		break;
	case 'g':
	case 'G':
		shift = 30;
		end++;
		break;
	default:
		return -EINVAL;
	}
	if (*end == 'i' && shift)
		end++;
	if ((*end == 'b' || *end == 'B') && shift)
		end++;
	if (*end)
		return -EINVAL;
	if (shift && v > (~0ULL >> shift))
		return -ERANGE;
	*out = (uint64_t)v << shift;
	return 0;
}

int kemari_parse_hostport(const char *s, uint32_t *ip, uint16_t *port)
{
	const char *colon = s ? strrchr(s, ':') : NULL;
	char host[64];
	struct in_addr a;
	char *end;
	unsigned long p;

	if (!colon || colon == s || (size_t)(colon - s) >= sizeof(host))
		return -EINVAL;
	memcpy(host, s, colon - s);
	host[colon - s] = 0;
	if (!strcmp(host, "localhost"))
		strcpy(host, "127.0.0.1");
	if (inet_pton(AF_INET, host, &a) != 1)
		return -EINVAL;
	errno = 0;
	p = strtoul(colon + 1, &end, 10);
	if (errno || *end || end == colon + 1 || p > 65535)
		return -EINVAL;
	*ip = ntohl(a.s_addr);
	*port = (uint16_t)p;
	return 0;
}

int kemari_parse_sockaddr(const char *addr, struct sockaddr_in *sa)
{
	uint32_t ip;
	uint16_t port;

	if (kemari_parse_hostport(addr, &ip, &port))
		return kemari_err(
			-EINVAL,
			"address '%s': expected IPV4:PORT, e.g. 127.0.0.1:7400",
			addr);
	memset(sa, 0, sizeof(*sa));
	sa->sin_family = AF_INET;
	sa->sin_addr.s_addr = htonl(ip);
	sa->sin_port = htons(port);
	return 0;
}

static uint32_t crc32c_table[8][256];

static void crc32c_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;

		for (int k = 0; k < 8; k++)
			c = c & 1 ? (c >> 1) ^ 0x82f63b78 : c >> 1;
		crc32c_table[0][i] = c;
	}
	for (uint32_t i = 0; i < 256; i++)
		for (int t = 1; t < 8; t++)
			crc32c_table[t][i] =
				(crc32c_table[t - 1][i] >> 8) ^
				crc32c_table[0][crc32c_table[t - 1][i] & 0xff];
}

uint32_t kemari_crc32c(uint32_t crc, const void *buf, size_t len)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	const uint8_t *p = buf;

	pthread_once(&once, crc32c_init);
	crc = ~crc;
	/* Slicing-by-8: checksums cover every control message on the wire. */
	while (len >= 8) {
		uint64_t v;

		memcpy(&v, p, 8);
		v ^= crc;
		crc = crc32c_table[7][v & 0xff] ^
		      crc32c_table[6][(v >> 8) & 0xff] ^
		      crc32c_table[5][(v >> 16) & 0xff] ^
		      crc32c_table[4][(v >> 24) & 0xff] ^
		      crc32c_table[3][(v >> 32) & 0xff] ^
		      crc32c_table[2][(v >> 40) & 0xff] ^
		      crc32c_table[1][(v >> 48) & 0xff] ^
		      crc32c_table[0][v >> 56];
		p += 8;
		len -= 8;
	}
	while (len--)
		crc = crc32c_table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
	return ~crc;
}

int kemari_hash_file(const char *path, uint64_t *out)
{
	uint64_t h = 0xcbf29ce484222325ULL;
	uint8_t buf[65536];
	ssize_t n;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return -errno;
	while ((n = read(fd, buf, sizeof(buf))) > 0)
		for (ssize_t i = 0; i < n; i++)
			h = (h ^ buf[i]) * 0x100000001b3ULL;
	if (n < 0) {
		int err = -errno;

		close(fd);
		return err;
	}
	close(fd);
	*out = h;
	return 0;
}

int kemari_buf__reserve(struct kemari_buf *b, size_t more)
{
	size_t want = b->len + more;
	uint8_t *p;

	if (want <= b->cap)
		return 0;
	want = KEMARI_MAX(want, b->cap * 2);
	want = KEMARI_MAX(want, (size_t)256);
	p = realloc(b->data, want);
	if (!p)
		return -ENOMEM;
	b->data = p;
	b->cap = want;
	return 0;
}

int kemari_buf__append(struct kemari_buf *b, const void *p, size_t n)
{
	int err;

	if (!n) /* b->data may still be NULL: no pointer arithmetic on it */
		return 0;
	err = kemari_buf__reserve(b, n);
	if (err)
		return err;
	memcpy(b->data + b->len, p, n);
	b->len += n;
	return 0;
}

void kemari_buf__fini(struct kemari_buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}

int kemari_tlv__put(struct kemari_buf *b, uint32_t tag, const void *p,
		    uint32_t n)
{
	uint32_t hdr[2] = { tag, n };
	size_t padded = KEMARI_ALIGN_UP((size_t)n, (size_t)8);
	int err = kemari_buf__reserve(b, sizeof(hdr) + padded);

	if (err)
		return err;
	memcpy(b->data + b->len, hdr, sizeof(hdr));
	memcpy(b->data + b->len + sizeof(hdr), p, n);
	memset(b->data + b->len + sizeof(hdr) + n, 0, padded - n);
	b->len += sizeof(hdr) + padded;
	return 0;
}

int kemari_tlv__next(struct kemari_tlv_iter *it, uint32_t *tag,
		     const void **val, uint32_t *len)
{
	uint32_t hdr[2];
	size_t padded;

	if (it->left == 0)
		return 0;
	if (it->left < sizeof(hdr))
		return -EBADMSG;
	memcpy(hdr, it->p, sizeof(hdr));
	padded = KEMARI_ALIGN_UP((size_t)hdr[1], (size_t)8);
	if (padded > it->left - sizeof(hdr))
		return -EBADMSG;
	*tag = hdr[0];
	*len = hdr[1];
	*val = it->p + sizeof(hdr);
	it->p += sizeof(hdr) + padded;
	it->left -= sizeof(hdr) + padded;
	return 1;
}
