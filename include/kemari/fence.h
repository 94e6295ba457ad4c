/* SPDX-License-Identifier: MIT */
/*
 * The fence record beside the shared disk (docs/design.md, "Fencing"): the
 * disk's identity and a generation number, changed only by an atomic
 * test-and-set. After losing its peer a side may release output only once
 * it has won the fence (moved the generation it knew to the next one);
 * every released write re-checks the generation under the record's lock
 * and holds the lock across the write, so that once a side has won, no
 * output of the other lands.
 *
 * The lock is an OFD lock (F_OFD_SETLKW) on the record file: per open
 * file, so two fences in one process exclude each other as two processes
 * do, and it goes away with the process. Threads sharing one fence (the
 * vCPUs of one side) take its mutex first: an OFD lock does not exclude
 * them from each other, and one thread's unlock would end another's hold. The record is rewritten in place
 * (one pwrite, then fdatasync) under the lock, and checked by its CRC.
 */
#ifndef KEMARI_FENCE_H
#define KEMARI_FENCE_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#define KEMARI_FENCE_MAGIC 0x4e464d4bU /* "KMFN" */
#define KEMARI_FENCE_VERSION 1
#define KEMARI_DISK_ID_LEN 16

/* The record as stored (little-endian, 128 bytes). */
struct kemari_fence_rec {
	uint32_t magic;
	uint32_t version;
	uint8_t disk_id[KEMARI_DISK_ID_LEN]; /* random, set at creation */
	uint64_t generation; /* the side that won it last serves */
	uint64_t owner_pid;  /* who won it, for messages only */
	char owner[80];	     /* "primary on HOST", NUL-terminated */
	uint32_t crc;	     /* CRC32C of the bytes before it */
	uint32_t pad;
};

struct kemari_fence {
	int fd; /* -1: closed */
	char path[512];
	uint8_t disk_id[KEMARI_DISK_ID_LEN];
	uint64_t gen; /* the generation this side knows (holds, once won) */
	bool locked;
	pthread_mutex_t mu; /* held with the OFD lock; valid while fd >= 0 */
};

/*
 * Open the record at path (f is initialized here; do not copy it after). create: make it when missing, with a fresh
 * random identity at generation 1 (the primary, at first use); otherwise a
 * missing record is -ENOENT. A record that is not a valid one (magic,
 * version, size, CRC) is -EBADMSG. On success f->disk_id and f->gen hold
 * what the record says. Every error has its one line (kemari_err).
 */
int kemari_fence__open(struct kemari_fence *f, const char *path, bool create);
void kemari_fence__close(struct kemari_fence *f);
/* Read the record under its lock into r (not changing f). */
int kemari_fence__read(struct kemari_fence *f, struct kemari_fence_rec *r);
/*
 * The test-and-set: under the lock, read the record; if its generation is
 * still f->gen, write f->gen + 1 with owner, fdatasync, and make that f->gen
 * (0). If another side has moved it on: -ESTALE with a line naming the
 * fence and the winner; f is unchanged and nothing was written.
 */
int kemari_fence__win(struct kemari_fence *f, const char *owner);
/*
 * Before a released write: take the lock and check that the generation is
 * still f->gen. 0: held, do the write, then kemari_fence__release(). On
 * -ESTALE (another side won since) the lock is not held and the write must
 * not happen.
 */
int kemari_fence__hold(struct kemari_fence *f);
void kemari_fence__release(struct kemari_fence *f);
/* The identity as 32 hex digits (out: 33 bytes). */
void kemari_fence__id_str(const uint8_t *id, char *out);

#endif
