// SPDX-License-Identifier: MIT
/*
 * Block device: 512-byte sectors on a backing file. Data moves with
 * pread/pwrite straight between the file and guest RAM; flush is a real
 * fdatasync. Requests are served synchronously at the (released) kick, so
 * the response is in the ring when the guest's OUT completes.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../kvm.h"
#include "kemari/kemari.h"

struct kvm_blk {
	struct kvm_dev dev;
	int fd;
	char *path;
};

static int kvm_blk__rw(struct kvm_blk *b, const struct kemari_req *req,
		       bool write)
{
	uint64_t bytes = (uint64_t)req->len * KEMARI_SECTOR_SIZE;
	uint8_t *buf = kvm_vm__gpa(b->dev.vm, req->gpa, bytes);
	off_t off = (off_t)(req->arg * KEMARI_SECTOR_SIZE);
	uint64_t done = 0;

	if (!buf)
		return -EFAULT;
	if (req->arg > b->dev.capacity || req->len > b->dev.capacity - req->arg)
		return -ENOSPC;
	while (done < bytes) {
		ssize_t n = write ? pwrite(b->fd, buf + done, bytes - done,
					   off + (off_t)done)
				  : pread(b->fd, buf + done, bytes - done,
					  off + (off_t)done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0) { /* read past a shrunken file: zeroes */
			memset(buf + done, 0, bytes - done);
			break;
		}
		done += (uint64_t)n;
	}
	if (!write)
		kvm_vm__mark_dirty(b->dev.vm, req->gpa, bytes);
	return 0;
}

static int kvm_blk__process(struct kvm_dev *dev, unsigned int q)
{
	struct kvm_blk *b = kemari_container_of(dev, struct kvm_blk, dev);
	struct kemari_ring *r = kvm_dev__ring(dev, q);
	const struct kemari_req *slot;

	while ((slot = kvm_ring__peek(dev, r))) {
		struct kemari_req req = *slot;
		struct kemari_rsp rsp = { .id = req.id };

		switch (req.op) {
		case KEMARI_BLK_READ:
			rsp.status = kvm_blk__rw(b, &req, false);
			break;
		case KEMARI_BLK_WRITE:
			rsp.status = kvm_blk__rw(b, &req, true);
			break;
		case KEMARI_BLK_FLUSH:
			rsp.status = kvm_disk__sync(b->fd);
			break;
		default:
			rsp.status = -EINVAL;
			break;
		}
		if (rsp.status == 0)
			rsp.len = req.len;
		kvm_ring__respond(dev, r, &rsp);
	}
	return 0;
}

static int kvm_blk__flush(struct kvm_dev *dev)
{
	struct kvm_blk *b = kemari_container_of(dev, struct kvm_blk, dev);

	if (b->fd < 0) /* a secondary's, before any primary */
		return 0;
	return fdatasync(b->fd) ? -errno : 0;
}

static void kvm_blk__destroy(struct kvm_dev *dev)
{
	struct kvm_blk *b = kemari_container_of(dev, struct kvm_blk, dev);

	if (b->fd >= 0) {
		fdatasync(b->fd);
		close(b->fd);
	}
	free(b->path);
	free(b);
}

static const struct kvm_dev_ops kvm_blk_ops = {
	.process = kvm_blk__process,
	.flush = kvm_blk__flush,
	.destroy = kvm_blk__destroy,
};

/*
 * A secondary (defer_disk) registers the device without its file: the
 * capacity (0 until then) and the fd come at kvm_blk__open_disk, after
 * the handshake. Its guest runs only after a takeover, and the capacity
 * is checked against the primary's when its device state is loaded.
 */
int kvm_blk__create(struct kvm_vm *vm, const char *path, uint64_t size)
{
	struct kvm_blk *b = calloc(1, sizeof(*b));
	uint64_t bytes = 0;
	int err = 0;

	if (!b)
		return -ENOMEM;
	b->fd = -1;
	b->path = strdup(path);
	if (!b->path)
		err = -ENOMEM;
	else if (!vm->cfg.defer_disk)
		err = kvm_disk__open(path, size, true, &b->fd, &bytes);
	if (err)
		goto err_free;
	b->dev.ops = &kvm_blk_ops;
	b->dev.kind[0] = KEMARI_EV_BLOCK;
	b->dev.tapped[0] = true;
	err = kvm_dev__register(vm, &b->dev, KEMARI_DEV_BLOCK, 1,
				bytes / KEMARI_SECTOR_SIZE);
	if (err)
		goto err_close;
	return 0;

err_close:
	if (b->fd >= 0)
		close(b->fd);
err_free:
	free(b->path);
	free(b);
	return err;
}

int kvm_blk__open_disk(struct kvm_vm *vm)
{
	for (unsigned int i = 0; i < vm->ndevs; i++) {
		struct kvm_dev *d = vm->devs[i];
		struct kvm_blk *b;
		uint64_t bytes;
		int fd, err;

		if (d->ops != &kvm_blk_ops)
			continue;
		b = kemari_container_of(d, struct kvm_blk, dev);
		err = kvm_disk__open(b->path, 0, false, &fd, &bytes);
		if (err)
			return err;
		if (b->fd >= 0)
			close(b->fd);
		b->fd = fd;
		d->capacity = bytes / KEMARI_SECTOR_SIZE;
	}
	return 0;
}
