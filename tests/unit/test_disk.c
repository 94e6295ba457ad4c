// SPDX-License-Identifier: MIT
/*
 * The KVM VMM's --disk file (hv/kvm/hw/disk.c): a primary creates a
 * missing or empty disk at its size; a secondary (create = false) never
 * creates or grows one, and a missing disk is its one line.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../hv/kvm/kvm.h"
#include "kemari/kemari.h"

static char dir[64], path[128];

static void setup(void)
{
	snprintf(dir, sizeof(dir), "/tmp/kemari-disk.XXXXXX");
	cr_assert(not(eq(ptr, mkdtemp(dir), NULL)));
	snprintf(path, sizeof(path), "%s/disk.img", dir);
	kemari_err_clear();
}

static void teardown(void)
{
	unlink(path);
	rmdir(dir);
}

TestSuite(kvm_disk, .init = setup, .fini = teardown);

static off_t file_size(void)
{
	struct stat st;

	return stat(path, &st) ? -1 : st.st_size;
}

Test(kvm_disk, secondary_never_creates_a_missing_disk)
{
	char want[256];
	uint64_t bytes = 0;
	int fd = -1;

	cr_assert(eq(int, kvm_disk__open(path, 1 << 20, false, &fd, &bytes),
		     -ENOENT));
	cr_assert(eq(int, fd, -1));
	cr_assert(eq(int, access(path, F_OK), -1), "the disk was created");
	snprintf(
		want, sizeof(want),
		"disk %s does not exist here: a secondary never creates it; give it the primary's shared disk",
		path);
	cr_assert(eq(str, (char *)kemari_last_error(-ENOENT), want));
}

Test(kvm_disk, secondary_never_grows_an_empty_disk)
{
	char want[256];
	uint64_t bytes = 0;
	int fd = -1;

	close(open(path, O_CREAT | O_WRONLY, 0644));
	cr_assert(eq(int, kvm_disk__open(path, 1 << 20, false, &fd, &bytes),
		     -EINVAL));
	cr_assert(eq(long, (long)file_size(), 0L));
	snprintf(want, sizeof(want), "disk %s is smaller than one sector",
		 path);
	cr_assert(eq(str, (char *)kemari_last_error(-EINVAL), want));
}

Test(kvm_disk, primary_creates_then_secondary_opens_it_whole)
{
	uint64_t bytes = 0;
	int fd = -1;

	cr_assert(eq(int, kvm_disk__open(path, 1 << 20, true, &fd, &bytes), 0));
	cr_assert(eq(u64, bytes, 1 << 20));
	cr_assert(eq(int, (int)pwrite(fd, "kemari", 6, 4096), 6));
	close(fd);
	fd = -1;
	bytes = 0;
	cr_assert(eq(int, kvm_disk__open(path, 0, false, &fd, &bytes), 0));
	cr_assert(eq(u64, bytes, 1 << 20));
	{
		char b[6];

		cr_assert(eq(int, (int)pread(fd, b, 6, 4096), 6));
		cr_assert(eq(int, memcmp(b, "kemari", 6), 0));
	}
	close(fd);
}
