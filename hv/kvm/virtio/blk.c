// SPDX-License-Identifier: MIT
/*
 * virtio-blk, legacy layout: a 16-byte header (type, reserved, sector)
 * the device reads, the data, and a 1-byte status the device writes, in
 * its own last descriptor (no VIRTIO_F_ANY_LAYOUT is offered, so that is
 * where Linux puts it). A chain without a readable header or without
 * that status byte cannot even be failed: the device sets NEEDS_RESET.
 */
#include <endian.h>
#include <errno.h>
#include <linux/fs.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "../kvm.h"
#include "blk.h"
#include "kemari/kemari.h"

#define BLK_QUEUE_SIZE 256
#define BLK_HDR_LEN 16

struct kvm_virtio_blk {
	struct kvm_virtio_pci vp;
	int fd;
	bool read_only;
	uint64_t capacity; /* sectors */
	uint8_t serial[VIRTIO_BLK_ID_BYTES];
	uint8_t config[KVM_VIRTIO_BLK_CONFIG_LEN];
	struct kvm_virtio_blk_stats stats;
	struct kvm_vq_chain chain;
	struct iovec iov[KVM_VQ_MAX_SEGS];
};

struct blk_hdr {
	uint32_t type;
	uint32_t ioprio;
	uint64_t sector;
};

static int blk__size(int fd, uint64_t *bytes)
{
	struct stat st;

	if (fstat(fd, &st))
		return -errno;
	if (S_ISBLK(st.st_mode))
		return ioctl(fd, BLKGETSIZE64, bytes) ? -errno : 0;
	if (!S_ISREG(st.st_mode))
		return -EINVAL;
	*bytes = (uint64_t)st.st_size;
	return 0;
}

/*
 * Gather [from, from + len) of the chain's readable (write = false) or
 * writable part as iovecs. Returns the count.
 */
static int blk__iov(struct kvm_virtio_blk *b, bool write, size_t from,
		    size_t len)
{
	const struct kvm_vq_chain *c = &b->chain;
	unsigned int first = write ? c->nr_out : 0;
	unsigned int end =
		write ? (unsigned int)c->nr_out + c->nr_in : c->nr_out;
	int n = 0;

	for (unsigned int i = first; i < end && len; i++) {
		const struct kvm_vq_seg *s = &c->seg[i];
		size_t take;

		if (from >= s->len) {
			from -= s->len;
			continue;
		}
		take = s->len - from;
		if (take > len)
			take = len;
		if (take) {
			b->iov[n].iov_base = s->ptr + from;
			b->iov[n].iov_len = take;
			n++;
		}
		len -= take;
		from = 0;
	}
	return n;
}

/* Every byte of [from, from + len) of the writable part is about to
 * change: mark it before the read, whatever part the read then fills. */
static void blk__dirty(struct kvm_virtio_blk *b, size_t from, size_t len)
{
	const struct kvm_vq_chain *c = &b->chain;

	for (unsigned int i = c->nr_out;
	     i < (unsigned int)c->nr_out + c->nr_in && len; i++) {
		const struct kvm_vq_seg *s = &c->seg[i];
		size_t take;

		if (from >= s->len) {
			from -= s->len;
			continue;
		}
		take = s->len - from;
		if (take > len)
			take = len;
		kvm_gmem__dirty(b->vp.mem, s->gpa + from, take);
		len -= take;
		from = 0;
	}
}

/* Move all of iov[0, cnt) at file offset off; short transfers resume. */
static int blk__xfer(struct kvm_virtio_blk *b, int cnt, uint64_t off,
		     bool to_file)
{
	struct iovec *iov = b->iov;

	while (cnt > 0) {
		ssize_t n = to_file ? pwritev(b->fd, iov, cnt, (off_t)off)
				    : preadv(b->fd, iov, cnt, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0) {
			if (to_file)
				return -EIO;
			/* The file shrank under us: the rest reads as 0. */
			for (int i = 0; i < cnt; i++)
				memset(iov[i].iov_base, 0, iov[i].iov_len);
			return 0;
		}
		off += (uint64_t)n;
		while (cnt > 0 && (size_t)n >= iov->iov_len) {
			n -= (ssize_t)iov->iov_len;
			iov++;
			cnt--;
		}
		if (cnt > 0) {
			iov->iov_base = (uint8_t *)iov->iov_base + n;
			iov->iov_len -= (size_t)n;
		}
	}
	return 0;
}

static bool blk__range_ok(const struct kvm_virtio_blk *b, uint64_t sector,
			  uint64_t bytes)
{
	uint64_t count = bytes / KVM_VIRTIO_BLK_SECTOR;

	return bytes % KVM_VIRTIO_BLK_SECTOR == 0 && sector <= b->capacity &&
	       count <= b->capacity - sector;
}

/* T_IN: the data is every writable byte before the status. */
static uint8_t blk__read(struct kvm_virtio_blk *b, uint64_t sector,
			 uint32_t *written)
{
	const struct kvm_vq_chain *c = &b->chain;
	size_t len = c->in_len - 1;
	int cnt;

	if (c->out_len != BLK_HDR_LEN || !blk__range_ok(b, sector, len))
		return VIRTIO_BLK_S_IOERR;
	cnt = blk__iov(b, true, 0, len);
	blk__dirty(b, 0, len);
	*written += (uint32_t)len;
	if (blk__xfer(b, cnt, sector * KVM_VIRTIO_BLK_SECTOR, false))
		return VIRTIO_BLK_S_IOERR;
	b->stats.reads++;
	return VIRTIO_BLK_S_OK;
}

/* T_OUT: the data is every readable byte after the header. */
static uint8_t blk__write(struct kvm_virtio_blk *b, uint64_t sector)
{
	const struct kvm_vq_chain *c = &b->chain;
	size_t len = c->out_len - BLK_HDR_LEN;
	int cnt;

	if (b->read_only || c->in_len != 1 || !blk__range_ok(b, sector, len))
		return VIRTIO_BLK_S_IOERR;
	cnt = blk__iov(b, false, BLK_HDR_LEN, len);
	if (blk__xfer(b, cnt, sector * KVM_VIRTIO_BLK_SECTOR, true))
		return VIRTIO_BLK_S_IOERR;
	b->stats.writes++;
	return VIRTIO_BLK_S_OK;
}

static uint8_t blk__get_id(struct kvm_virtio_blk *b, uint32_t *written)
{
	size_t room = b->chain.in_len - 1;
	size_t n = room < VIRTIO_BLK_ID_BYTES ? room : VIRTIO_BLK_ID_BYTES;

	if (!n)
		return VIRTIO_BLK_S_IOERR;
	*written += (uint32_t)kvm_vq__chain_write(b->vp.mem, &b->chain, 0,
						  b->serial, n);
	b->stats.get_ids++;
	return VIRTIO_BLK_S_OK;
}

/*
 * Serve the popped chain. Returns the bytes written into it (data and
 * status), or -EPROTO when the chain has no place for a status.
 */
static int64_t blk__request(struct kvm_virtio_blk *b)
{
	const struct kvm_vq_chain *c = &b->chain;
	const struct kvm_vq_seg *st;
	struct blk_hdr hdr;
	uint32_t written = 0;
	uint8_t status;

	if (!c->nr_in || c->out_len < BLK_HDR_LEN)
		return -EPROTO;
	st = &c->seg[c->nr_out + c->nr_in - 1];
	if (st->len != 1)
		return -EPROTO;
	kvm_vq__chain_read(c, 0, &hdr, sizeof(hdr));
	switch (le32toh(hdr.type)) {
	case VIRTIO_BLK_T_IN:
		status = blk__read(b, le64toh(hdr.sector), &written);
		break;
	case VIRTIO_BLK_T_OUT:
		status = blk__write(b, le64toh(hdr.sector));
		break;
	case VIRTIO_BLK_T_FLUSH:
		status = kvm_disk__sync(b->fd) ? VIRTIO_BLK_S_IOERR
					       : VIRTIO_BLK_S_OK;
		if (status == VIRTIO_BLK_S_OK)
			b->stats.flushes++;
		break;
	case VIRTIO_BLK_T_GET_ID:
		status = blk__get_id(b, &written);
		break;
	default:
		status = VIRTIO_BLK_S_UNSUPP;
		b->stats.unsupported++;
		break;
	}
	if (status == VIRTIO_BLK_S_IOERR)
		b->stats.io_errors++;
	st->ptr[0] = status;
	kvm_gmem__dirty(b->vp.mem, st->gpa, 1);
	return (int64_t)written + 1;
}

static int blk__queue(struct kvm_virtio_pci *vp, unsigned int q)
{
	struct kvm_virtio_blk *b =
		kemari_container_of(vp, struct kvm_virtio_blk, vp);
	struct kvm_vq *vq = kvm_virtio_pci__vq(vp, q);
	unsigned int done = 0;
	int ret;

	while ((ret = kvm_vq__pop(vq, vp->mem, &b->chain)) == 1) {
		int64_t written = blk__request(b);

		if (written < 0) {
			kvm_virtio_pci__fail(vp);
			break;
		}
		ret = kvm_vq__push(vq, vp->mem, b->chain.head,
				   (uint32_t)written);
		if (ret)
			break;
		done++;
	}
	if (done)
		kvm_virtio_pci__signal(vp, q);
	return 0;
}

static const struct kvm_virtio_dev_ops blk__ops = {
	.queue = blk__queue,
};

static void blk__put(uint8_t *p, uint64_t v, unsigned int bytes)
{
	for (unsigned int i = 0; i < bytes; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

int kvm_virtio_blk__create(struct kvm_virtio_blk **out,
			   const struct kvm_virtio_blk_params *p,
			   const struct kvm_gmem *mem)
{
	struct kvm_virtio_model model = {
		.ops = &blk__ops,
		.device_type = VIRTIO_ID_BLOCK,
		.nqueues = 1,
		.queue_size = p->queue_size ? p->queue_size : BLK_QUEUE_SIZE,
		.config_len = KVM_VIRTIO_BLK_CONFIG_LEN,
		.host_features = 1U << VIRTIO_BLK_F_SIZE_MAX |
				 1U << VIRTIO_BLK_F_SEG_MAX |
				 1U << VIRTIO_BLK_F_BLK_SIZE |
				 1U << VIRTIO_BLK_F_FLUSH |
				 1U << VIRTIO_RING_F_INDIRECT_DESC |
				 1U << VIRTIO_RING_F_EVENT_IDX,
	};
	struct kvm_virtio_blk *b;
	uint64_t bytes;
	int ret;

	if (p->queue_size == 1 || p->queue_size == 2)
		return -EINVAL; /* no room for header, data and status */
	ret = p->fd < 0 ? 0 : blk__size(p->fd, &bytes);
	if (ret)
		return ret;
	if (p->fd < 0)
		bytes = 0;
	b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	b->fd = p->fd;
	b->read_only = p->read_only;
	b->capacity = bytes / KVM_VIRTIO_BLK_SECTOR;
	if (p->serial)
		memcpy(b->serial, p->serial,
		       KEMARI_MIN(strlen(p->serial), sizeof(b->serial)));
	if (p->read_only)
		model.host_features |= 1U << VIRTIO_BLK_F_RO;
	blk__put(b->config + VIRTIO_BLK_CFG_CAPACITY, b->capacity, 8);
	blk__put(b->config + VIRTIO_BLK_CFG_SIZE_MAX, KVM_VIRTIO_BLK_SIZE_MAX,
		 4);
	/* Header and status take two descriptors of a chain. */
	blk__put(b->config + VIRTIO_BLK_CFG_SEG_MAX, model.queue_size - 2u, 4);
	blk__put(b->config + VIRTIO_BLK_CFG_BLK_SIZE, KVM_VIRTIO_BLK_SECTOR, 4);
	model.config = b->config;
	ret = kvm_virtio_pci__init(&b->vp, &model, mem);
	if (ret)
		goto err_free;
	*out = b;
	return 0;

err_free:
	free(b);
	return ret;
}

void kvm_virtio_blk__destroy(struct kvm_virtio_blk *b)
{
	free(b);
}

struct kvm_virtio_pci *kvm_virtio_blk__pci(struct kvm_virtio_blk *b)
{
	return &b->vp;
}

int kvm_virtio_blk__set_fd(struct kvm_virtio_blk *b, int fd)
{
	uint64_t bytes;
	int ret = blk__size(fd, &bytes);

	if (ret)
		return ret;
	b->fd = fd;
	b->capacity = bytes / KVM_VIRTIO_BLK_SECTOR;
	blk__put(b->config + VIRTIO_BLK_CFG_CAPACITY, b->capacity, 8);
	return 0;
}

uint64_t kvm_virtio_blk__capacity(const struct kvm_virtio_blk *b)
{
	return b->capacity;
}

void kvm_virtio_blk__stats(const struct kvm_virtio_blk *b,
			   struct kvm_virtio_blk_stats *st)
{
	*st = b->stats;
}
