/* SPDX-License-Identifier: MIT */
/*
 * How long the peer has been silent, as far as this side could have heard
 * it. A side that was not scheduled itself (its process stopped, its host
 * stalled or descheduled by the host's own hypervisor) heard nothing in
 * that time, through no fault of the peer; when both sides share the
 * stall (one host, or one loaded hypervisor under both), each would
 * otherwise wake to a silence longer than the heartbeat timeout and the
 * pair would split over nothing (docs/design.md, "Own pauses"; corosync
 * calls it a process pause).
 *
 * So a gap between two looks at the clock longer than a grace (the
 * caller's: half the heartbeat timeout, and well above its own period
 * between looks) is this side's own pause: the grace counts against the
 * peer, the rest does not. A late look still counts the grace, so a side
 * whose every look comes late (starved, not stopped) still declares a
 * dead peer within a few looks; a peer that died during this side's pause
 * is declared dead at most a grace after the pause ended.
 */
#ifndef KEMARI_SILENCE_H
#define KEMARI_SILENCE_H

#include <stdint.h>

struct kemari_silence {
	uint64_t heard_ns;  /* the peer's last message */
	uint64_t looked_ns; /* the last look at the clock */
	uint64_t own_ns;    /* own pauses since heard_ns, not counted */
};

/* A message from the peer at now_ns (also the start of a silence). */
void kemari_silence__heard(struct kemari_silence *s, uint64_t now_ns);

/*
 * A look at the clock at now_ns: the peer's silence counted against it
 * (ns). *own_pause_ns (if not NULL) receives the part of this look's gap
 * beyond grace_ns, this side's own pause (0: none).
 */
uint64_t kemari_silence__look(struct kemari_silence *s, uint64_t now_ns,
			      uint64_t grace_ns, uint64_t *own_pause_ns);

#endif
