// SPDX-License-Identifier: MIT
#include <errno.h>
#include <string.h>

#include "kemari/kemari.h"
#include "kemari/wire.h"
#include "kemari/xport.h"

void kemari_wire__seal(struct kemari_wire_hdr *h, uint16_t type, uint64_t epoch,
		       const void *payload, uint32_t len)
{
	h->magic = KEMARI_WIRE_MAGIC;
	h->type = type;
	h->flags = 0;
	h->len = len;
	h->crc = 0;
	h->epoch = epoch;
	h->crc = kemari_crc32c(kemari_crc32c(0, h, sizeof(*h)), payload, len);
}

int kemari_wire__check_hdr(const struct kemari_wire_hdr *h, uint32_t max)
{
	if (h->magic != KEMARI_WIRE_MAGIC)
		return kemari_err(
			-EBADMSG,
			"replication stream: bad frame magic 0x%08x (not a Kemari peer, or the stream is corrupt)",
			h->magic);
	if (h->len > max)
		return kemari_err(
			-EBADMSG,
			"replication stream: %s frame of %u bytes exceeds the %u-byte limit",
			kemari_wire__type_name(h->type), h->len, max);
	return 0;
}

int kemari_wire__check_crc(const struct kemari_wire_hdr *h, const void *payload)
{
	struct kemari_wire_hdr c = *h;
	uint32_t crc;

	c.crc = 0;
	crc = kemari_crc32c(kemari_crc32c(0, &c, sizeof(c)), payload, h->len);
	if (crc != h->crc)
		return kemari_err(
			-EBADMSG,
			"replication stream: checksum mismatch in a %s frame of epoch %llu (corrupt stream)",
			kemari_wire__type_name(h->type),
			(unsigned long long)h->epoch);
	return 0;
}

int kemari_wire__check_frame(const void *buf, size_t len, uint32_t max,
			     struct kemari_wire_hdr *h)
{
	int err;

	if (len < sizeof(*h))
		return kemari_err(
			-EBADMSG,
			"replication stream: %zu-byte control message, shorter than its header",
			len);
	memcpy(h, buf, sizeof(*h));
	err = kemari_wire__check_hdr(h, max);
	if (err)
		return err;
	if (len - sizeof(*h) != h->len)
		return kemari_err(
			-EBADMSG,
			"replication stream: %s frame announces %u bytes but %zu arrived",
			kemari_wire__type_name(h->type), h->len,
			len - sizeof(*h));
	return kemari_wire__check_crc(h, (const uint8_t *)buf + sizeof(*h));
}

const char *kemari_wire__type_name(uint16_t type)
{
	switch (type) {
	case KEMARI_MSG_HELLO:
		return "HELLO";
	case KEMARI_MSG_WELCOME:
		return "WELCOME";
	case KEMARI_MSG_REFUSE:
		return "REFUSE";
	case KEMARI_MSG_RUNS:
		return "RUNS";
	case KEMARI_MSG_CPU_STATE:
		return "CPU_STATE";
	case KEMARI_MSG_DEV_STATE:
		return "DEV_STATE";
	case KEMARI_MSG_COMMIT:
		return "COMMIT";
	case KEMARI_MSG_ACK:
		return "ACK";
	case KEMARI_MSG_HEARTBEAT:
		return "HEARTBEAT";
	case KEMARI_MSG_BYE:
		return "BYE";
	case KEMARI_MSG_APPLIED:
		return "APPLIED";
	case KEMARI_MSG_FAILED:
		return "FAILED";
	case KEMARI_MSG_VERIFY:
		return "VERIFY";
	case KEMARI_MSG_AUTH:
		return "AUTH";
	case KEMARI_MSG_PAGES:
		return "PAGES";
	case KEMARI_MSG_XPORT:
		return "XPORT";
	case KEMARI_MSG_SWITCHOVER:
		return "SWITCHOVER";
	default:
		return "unknown";
	}
}
