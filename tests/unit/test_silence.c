// SPDX-License-Identifier: MIT
/*
 * The peer's silence without this side's own pauses (kemari/silence.h):
 * exact counts in nanoseconds, on a made-up clock.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <stdint.h>

#include "kemari/silence.h"

#define MS 1000000ULL

/* Looks every 20 ms: everything counts, nothing is a pause. */
Test(silence, regular_looks_count_everything)
{
	struct kemari_silence s;
	uint64_t own = 1;

	kemari_silence__heard(&s, 1000 * MS);
	for (uint64_t t = 1020; t <= 1200; t += 20)
		cr_assert(eq(u64,
			     kemari_silence__look(&s, t * MS, 100 * MS, &own),
			     (t - 1000) * MS));
	cr_assert(eq(u64, own, 0));
}

/* Both sides stopped for 400 ms: the look after it counts the grace (100
 * ms) and not the other 300, which it reports as its own pause. */
Test(silence, a_pause_of_its_own_counts_only_the_grace)
{
	struct kemari_silence s;
	uint64_t own;

	kemari_silence__heard(&s, 0);
	cr_assert(eq(u64, kemari_silence__look(&s, 20 * MS, 100 * MS, &own),
		     20 * MS));
	cr_assert(eq(u64, kemari_silence__look(&s, 420 * MS, 100 * MS, &own),
		     120 * MS));
	cr_assert(eq(u64, own, 300 * MS));
	/* Silence goes on from there at full rate, the pause still left out. */
	cr_assert(eq(u64, kemari_silence__look(&s, 440 * MS, 100 * MS, &own),
		     140 * MS));
	cr_assert(eq(u64, own, 0));
	/* A message ends the silence and forgets the pause. */
	kemari_silence__heard(&s, 450 * MS);
	cr_assert(eq(u64, kemari_silence__look(&s, 470 * MS, 100 * MS, &own),
		     20 * MS));
}

/* Starved, not stopped: a look every 150 ms still counts 100 ms each, so a
 * dead peer is declared past a 200 ms timeout at the third look (450 ms). */
Test(silence, late_looks_still_reach_the_timeout)
{
	struct kemari_silence s;
	uint64_t t = 0, silent = 0;
	int looks = 0;

	kemari_silence__heard(&s, 0);
	while (silent <= 200 * MS) {
		t += 150 * MS;
		silent = kemari_silence__look(&s, t, 100 * MS, NULL);
		looks++;
	}
	cr_assert(eq(int, looks, 3));
	cr_assert(eq(u64, silent, 300 * MS));
}

/* A clock that does not advance (two looks in one tick) counts nothing
 * new and no pause. */
Test(silence, same_instant_twice)
{
	struct kemari_silence s;
	uint64_t own = 7;

	kemari_silence__heard(&s, 5 * MS);
	cr_assert(eq(u64, kemari_silence__look(&s, 5 * MS, 100 * MS, &own), 0));
	cr_assert(eq(u64, own, 0));
	cr_assert(eq(u64, kemari_silence__look(&s, 4 * MS, 100 * MS, &own), 0));
}
