// SPDX-License-Identifier: MIT
/* The peer's silence without this side's own pauses (kemari/silence.h). */
#include "kemari/silence.h"

void kemari_silence__heard(struct kemari_silence *s, uint64_t now_ns)
{
	s->heard_ns = s->looked_ns = now_ns;
	s->own_ns = 0;
}

uint64_t kemari_silence__look(struct kemari_silence *s, uint64_t now_ns,
			      uint64_t grace_ns, uint64_t *own_pause_ns)
{
	uint64_t paused = 0, gap, silent;

	if (now_ns > s->looked_ns) {
		gap = now_ns - s->looked_ns;
		if (gap > grace_ns)
			paused = gap - grace_ns;
		s->looked_ns = now_ns;
	}
	s->own_ns += paused;
	if (own_pause_ns)
		*own_pause_ns = paused;
	silent = now_ns > s->heard_ns ? now_ns - s->heard_ns : 0;
	return silent > s->own_ns ? silent - s->own_ns : 0;
}
