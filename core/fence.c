// SPDX-License-Identifier: MIT
/*
 * The fence record (include/kemari/fence.h): create at first use, read,
 * test-and-set, and the hold around each released write.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "kemari/fence.h"
#include "kemari/kemari.h"

_Static_assert(sizeof(struct kemari_fence_rec) == 128,
	       "the fence record is 128 bytes on disk");

static int fence__setlk(struct kemari_fence *f, short type)
{
	struct flock fl = { .l_type = type, .l_whence = SEEK_SET };

	while (fcntl(f->fd, F_OFD_SETLKW, &fl) < 0)
		if (errno != EINTR)
			return kemari_err(-errno, "fence %s: locking: %s",
					  f->path, strerror(errno));
	return 0;
}

/* This thread's exclusive hold: the mutex, then the record's lock. */
static int fence__lock(struct kemari_fence *f)
{
	int err;

	pthread_mutex_lock(&f->mu);
	err = fence__setlk(f, F_WRLCK);
	if (err) {
		pthread_mutex_unlock(&f->mu);
		return err;
	}
	f->locked = true;
	return 0;
}

static void fence__unlock(struct kemari_fence *f)
{
	if (!f->locked)
		return;
	f->locked = false;
	fence__setlk(f, F_UNLCK);
	pthread_mutex_unlock(&f->mu);
}

static uint32_t fence__crc(const struct kemari_fence_rec *r)
{
	return kemari_crc32c(0, r, offsetof(struct kemari_fence_rec, crc));
}

/* Read and check the record; lock held. 1: the file is empty. */
static int fence__load(struct kemari_fence *f, struct kemari_fence_rec *r)
{
	ssize_t n = pread(f->fd, r, sizeof(*r), 0);

	if (n < 0)
		return kemari_err(-errno, "fence %s: reading: %s", f->path,
				  strerror(errno));
	if (n == 0)
		return 1;
	if (n != (ssize_t)sizeof(*r) || r->magic != KEMARI_FENCE_MAGIC ||
	    r->version != KEMARI_FENCE_VERSION || r->crc != fence__crc(r))
		return kemari_err(
			-EBADMSG,
			"fence %s is not a valid fence record (%zd bytes, or a bad magic, version or checksum): move it away only if no side is using its disk",
			f->path, n);
	r->owner[sizeof(r->owner) - 1] = 0;
	return 0;
}

static int fence__store(struct kemari_fence *f, struct kemari_fence_rec *r)
{
	r->magic = KEMARI_FENCE_MAGIC;
	r->version = KEMARI_FENCE_VERSION;
	r->pad = 0;
	r->crc = fence__crc(r);
	if (pwrite(f->fd, r, sizeof(*r), 0) != (ssize_t)sizeof(*r) ||
	    fdatasync(f->fd))
		return kemari_err(errno ? -errno : -EIO,
				  "fence %s: writing: %s", f->path,
				  strerror(errno ? errno : EIO));
	return 0;
}

static void fence__owner(struct kemari_fence_rec *r, const char *owner)
{
	char host[64] = "?";

	gethostname(host, sizeof(host) - 1);
	host[sizeof(host) - 1] = 0;
	memset(r->owner, 0, sizeof(r->owner));
	snprintf(r->owner, sizeof(r->owner), "%s on %s", owner, host);
	r->owner_pid = (uint64_t)getpid();
}

void kemari_fence__id_str(const uint8_t *id, char *out)
{
	for (unsigned int i = 0; i < KEMARI_DISK_ID_LEN; i++)
		snprintf(out + 2 * i, 3, "%02x", id[i]);
}

int kemari_fence__open(struct kemari_fence *f, const char *path, bool create)
{
	struct kemari_fence_rec r;
	int err;

	memset(f, 0, sizeof(*f));
	snprintf(f->path, sizeof(f->path), "%s", path);
	f->fd = open(path, O_RDWR | O_CLOEXEC | (create ? O_CREAT : 0), 0644);
	if (f->fd < 0) {
		err = -errno;
		if (err == -ENOENT)
			return kemari_err(err, "fence %s does not exist", path);
		return kemari_err(err, "fence %s: %s", path, strerror(-err));
	}
	pthread_mutex_init(&f->mu, NULL);
	err = fence__lock(f);
	if (err)
		goto err_close;
	err = fence__load(f, &r);
	/* Empty: just created here or by a racing creator that has not
	 * written yet; whoever holds the lock first writes it. */
	if (err == 1 && create) {
		memset(&r, 0, sizeof(r));
		if (getrandom(r.disk_id, sizeof(r.disk_id), 0) !=
		    (ssize_t)sizeof(r.disk_id)) {
			err = kemari_err(-EIO, "fence %s: no random bytes",
					 path);
			goto err_unlock;
		}
		r.generation = 1;
		fence__owner(&r, "creator");
		err = fence__store(f, &r);
		if (!err)
			kemari_info("fence %s created for a new disk", path);
	} else if (err == 1) {
		err = kemari_err(-ENOENT, "fence %s is empty", path);
	}
	if (err)
		goto err_unlock;
	memcpy(f->disk_id, r.disk_id, sizeof(f->disk_id));
	f->gen = r.generation;
	fence__unlock(f);
	return 0;

err_unlock:
	fence__unlock(f);
err_close:
	pthread_mutex_destroy(&f->mu);
	close(f->fd);
	f->fd = -1;
	return err;
}

void kemari_fence__close(struct kemari_fence *f)
{
	if (f->fd < 0)
		return;
	fence__unlock(f);
	pthread_mutex_destroy(&f->mu);
	close(f->fd);
	f->fd = -1;
}

int kemari_fence__read(struct kemari_fence *f, struct kemari_fence_rec *r)
{
	int err = fence__lock(f);

	if (err)
		return err;
	err = fence__load(f, r);
	fence__unlock(f);
	return err == 1 ? kemari_err(-EBADMSG, "fence %s is empty", f->path)
			: err;
}

/* Lock held, record in r: -ESTALE unless it is still at f->gen. */
static int fence__check(struct kemari_fence *f, struct kemari_fence_rec *r)
{
	int err = fence__load(f, r);

	if (err == 1)
		return kemari_err(-EBADMSG, "fence %s is empty", f->path);
	if (err)
		return err;
	if (memcmp(r->disk_id, f->disk_id, sizeof(f->disk_id)))
		return kemari_err(
			-ESTALE,
			"fence %s now belongs to another disk (its identity changed)",
			f->path);
	if (r->generation != f->gen)
		return kemari_err(
			-ESTALE,
			"lost the fence %s: generation %llu was won by %s (pid %llu), this side knew %llu",
			f->path, (unsigned long long)r->generation, r->owner,
			(unsigned long long)r->owner_pid,
			(unsigned long long)f->gen);
	return 0;
}

int kemari_fence__win(struct kemari_fence *f, const char *owner)
{
	struct kemari_fence_rec r;
	int err = fence__lock(f);

	if (err)
		return err;
	err = fence__check(f, &r);
	if (!err) {
		r.generation = f->gen + 1;
		fence__owner(&r, owner);
		err = fence__store(f, &r);
	}
	if (!err)
		f->gen = r.generation;
	fence__unlock(f);
	return err;
}

int kemari_fence__hold(struct kemari_fence *f)
{
	struct kemari_fence_rec r;
	int err = fence__lock(f);

	if (err)
		return err;
	err = fence__check(f, &r);
	if (err)
		fence__unlock(f);
	return err;
}

void kemari_fence__release(struct kemari_fence *f)
{
	fence__unlock(f);
}
