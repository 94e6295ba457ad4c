// SPDX-License-Identifier: MIT
/* The --disk backing file, shared by the freestanding and virtio disks. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../kvm.h"
#include "kemari/abi.h"
#include "kemari/kemari.h"
#include "kemari/testcfg.h"

/* A FLUSH: fdatasync, late by KEMARI_TEST_SLOW_FLUSH's ms when set. */
int kvm_disk__sync(int fd)
{
	unsigned int slow = kemari_testcfg__get()->slow_flush_ms;

	if (slow) {
		struct timespec ts = { (time_t)(slow / 1000),
				       (long)(slow % 1000) * 1000000L };

		/* All of it, as an fdatasync is: the vCPU's tick signal
		 * does not cut it short. */
		while (nanosleep(&ts, &ts) && errno == EINTR)
			;
	}
	return fdatasync(fd) ? -errno : 0;
}

int kvm_disk__open(const char *path, uint64_t size, bool create, int *out,
		   uint64_t *bytes)
{
	struct stat st;
	int fd, err;

	fd = open(path, O_RDWR | O_CLOEXEC | (create ? O_CREAT : 0), 0644);
	if (fd < 0 && errno == ENOENT && !create)
		return kemari_err(
			-ENOENT,
			"disk %s does not exist here: a secondary never creates it; give it the primary's shared disk",
			path);
	if (fd < 0)
		return kemari_err(
			-errno,
			"disk %s is not writable: %s (check the path and permissions, or choose another --disk)",
			path, strerror(errno));
	if (fstat(fd, &st) < 0) {
		err = -errno;
		goto err_close;
	}
	if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) {
		err = kemari_err(-EINVAL, "disk %s is not a file", path);
		goto err_close;
	}
	/* An empty disk is the primary's to size: below, a secondary's is
	 * smaller than a sector. */
	if (S_ISREG(st.st_mode) && st.st_size == 0 && create) {
		/* Reserve the space now: a full disk is an error at start,
		 * not a failed write in the middle of a replicated epoch. */
		err = -posix_fallocate(fd, 0, (off_t)size);
		if (err) {
			if (ftruncate(fd, 0))
				err = err ?: -errno;
			err = kemari_err(
				err,
				"disk %s: cannot create %llu MiB: %s (free space or lower --disk-size)",
				path, (unsigned long long)(size >> 20),
				strerror(-err));
			goto err_close;
		}
		st.st_size = (off_t)size;
	}
	if (st.st_size < KEMARI_SECTOR_SIZE) {
		err = kemari_err(-EINVAL, "disk %s is smaller than one sector",
				 path);
		goto err_close;
	}
	*out = fd;
	*bytes = (uint64_t)st.st_size;
	return 0;

err_close:
	close(fd);
	return err;
}
