// SPDX-License-Identifier: MIT
/*
 * The fence record (core/fence.c): created at first use, identity kept,
 * the test-and-set won once per generation, a loser that sees the newer
 * generation, a hold refused after someone else won, a corrupted record
 * refused. Two kemari_fence handles on one file stand for the two sides:
 * OFD locks exclude each other per open file, as between processes.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kemari/fence.h"
#include "kemari/kemari.h"

static char dir[64], path[128];

static void setup(void)
{
	snprintf(dir, sizeof(dir), "/tmp/kemari-fence.XXXXXX");
	cr_assert(mkdtemp(dir) != NULL);
	snprintf(path, sizeof(path), "%s/disk.kemari", dir);
}

static void teardown(void)
{
	unlink(path);
	rmdir(dir);
}

TestSuite(fence, .init = setup, .fini = teardown);

Test(fence, created_at_first_use_with_a_stable_identity)
{
	struct kemari_fence a, b;

	kemari_err_clear();
	cr_assert(eq(int, kemari_fence__open(&a, path, false), -ENOENT));
	cr_assert(strstr(kemari_last_error(-ENOENT), "does not exist") != NULL);
	cr_assert(eq(int, kemari_fence__open(&a, path, true), 0));
	cr_assert(eq(u64, a.gen, 1));
	kemari_fence__close(&a);
	/* Opened again, created or not: the same disk, the same generation. */
	cr_assert(eq(int, kemari_fence__open(&b, path, true), 0));
	cr_assert(eq(int, kemari_fence__open(&a, path, false), 0));
	cr_assert(eq(int, memcmp(a.disk_id, b.disk_id, KEMARI_DISK_ID_LEN), 0));
	cr_assert(eq(u64, b.gen, 1));
	kemari_fence__close(&a);
	kemari_fence__close(&b);
}

Test(fence, won_once_and_the_loser_sees_the_newer_generation)
{
	struct kemari_fence a, b;
	struct kemari_fence_rec r;

	cr_assert(eq(int, kemari_fence__open(&a, path, true), 0));
	cr_assert(eq(int, kemari_fence__open(&b, path, false), 0));
	cr_assert(eq(int, kemari_fence__win(&a, "secondary"), 0));
	cr_assert(eq(u64, a.gen, 2));
	kemari_err_clear();
	cr_assert(eq(int, kemari_fence__win(&b, "primary"), -ESTALE));
	cr_assert(eq(u64, b.gen, 1));
	cr_assert(strstr(kemari_last_error(-ESTALE), "lost the fence") != NULL);
	cr_assert(strstr(kemari_last_error(-ESTALE), "secondary on ") != NULL);
	cr_assert(eq(int, kemari_fence__read(&b, &r), 0));
	cr_assert(eq(u64, r.generation, 2));
	cr_assert(eq(u64, r.owner_pid, (uint64_t)getpid()));
	/* The winner may win again from what it holds. */
	cr_assert(eq(int, kemari_fence__win(&a, "secondary"), 0));
	cr_assert(eq(u64, a.gen, 3));
	kemari_fence__close(&a);
	kemari_fence__close(&b);
}

Test(fence, hold_excludes_a_write_after_another_side_won)
{
	struct kemari_fence a, b;

	cr_assert(eq(int, kemari_fence__open(&a, path, true), 0));
	cr_assert(eq(int, kemari_fence__open(&b, path, false), 0));
	cr_assert(eq(int, kemari_fence__hold(&a), 0));
	cr_assert(a.locked);
	kemari_fence__release(&a);
	cr_assert(a.locked == false);
	cr_assert(eq(int, kemari_fence__win(&b, "secondary"), 0));
	kemari_err_clear();
	cr_assert(eq(int, kemari_fence__hold(&a), -ESTALE));
	cr_assert(a.locked == false);
	cr_assert(eq(int, kemari_fence__hold(&b), 0));
	kemari_fence__release(&b);
	kemari_fence__close(&a);
	kemari_fence__close(&b);
}

/*
 * Threads of one side (vCPUs) share one fence: an OFD lock does not
 * exclude them from each other, the fence's mutex must, or one thread's
 * release would end another's hold in the middle of its write.
 */
static struct kemari_fence shared;
static unsigned long in_hold, overlaps;

static void *holder(void *arg)
{
	(void)arg;
	for (int i = 0; i < 300; i++) {
		if (kemari_fence__hold(&shared))
			return (void *)1;
		if (__atomic_add_fetch(&in_hold, 1, __ATOMIC_SEQ_CST) != 1)
			__atomic_add_fetch(&overlaps, 1, __ATOMIC_SEQ_CST);
		usleep(20); /* the write, long enough for another to try */
		__atomic_sub_fetch(&in_hold, 1, __ATOMIC_SEQ_CST);
		kemari_fence__release(&shared);
	}
	return NULL;
}

Test(fence, threads_of_one_side_hold_it_one_at_a_time)
{
	pthread_t t[3];
	void *r;

	cr_assert(eq(int, kemari_fence__open(&shared, path, true), 0));
	for (int i = 0; i < 3; i++)
		cr_assert(
			eq(int, pthread_create(&t[i], NULL, holder, NULL), 0));
	for (int i = 0; i < 3; i++) {
		cr_assert(eq(int, pthread_join(t[i], &r), 0));
		cr_assert(r == NULL);
	}
	cr_assert(eq(u64, overlaps, 0));
	kemari_fence__close(&shared);
}

Test(fence, a_corrupted_record_is_refused)
{
	struct kemari_fence a;
	uint8_t byte;
	int fd;

	cr_assert(eq(int, kemari_fence__open(&a, path, true), 0));
	kemari_fence__close(&a);
	fd = open(path, O_RDWR);
	cr_assert(fd >= 0);
	cr_assert(eq(int, (int)pread(fd, &byte, 1, 40), 1));
	byte ^= 1;
	cr_assert(eq(int, (int)pwrite(fd, &byte, 1, 40), 1));
	close(fd);
	kemari_err_clear();
	cr_assert(eq(int, kemari_fence__open(&a, path, true), -EBADMSG));
	cr_assert(strstr(kemari_last_error(-EBADMSG), "not a valid fence") !=
		  NULL);
	/* A short file is refused too, never taken for a new one. */
	cr_assert(eq(int, truncate(path, 10), 0));
	cr_assert(eq(int, kemari_fence__open(&a, path, true), -EBADMSG));
}
