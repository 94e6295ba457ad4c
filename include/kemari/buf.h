/* SPDX-License-Identifier: MIT */
/* Growable byte buffer and a tag-length-value encoding used in state blobs. */
#ifndef KEMARI_BUF_H
#define KEMARI_BUF_H

#include <stddef.h>
#include <stdint.h>

struct kemari_buf {
	uint8_t *data;
	size_t len;
	size_t cap;
};

int kemari_buf__reserve(struct kemari_buf *b, size_t more);
int kemari_buf__append(struct kemari_buf *b, const void *p, size_t n);
static inline void kemari_buf__reset(struct kemari_buf *b)
{
	b->len = 0;
}
void kemari_buf__fini(struct kemari_buf *b);

/* TLV: u32 tag, u32 length, then length bytes, padded to 8. */
int kemari_tlv__put(struct kemari_buf *b, uint32_t tag, const void *p,
		    uint32_t n);

struct kemari_tlv_iter {
	const uint8_t *p;
	size_t left;
};
/*
 * Next element: 1 with tag, val and len set, 0 at the end, -EBADMSG when the
 * blob is malformed (a length runs past its end).
 */
int kemari_tlv__next(struct kemari_tlv_iter *it, uint32_t *tag,
		     const void **val, uint32_t *len);

#endif
