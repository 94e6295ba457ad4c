#!/usr/bin/env bash
# Run libFuzzer harnesses one at a time (make fuzz):
#   run.sh BINDIR SECS NAME...
# Each runs for SECS seconds (or until FUZZ_RUNS executions) from its
# seeds in tests/fuzz/corpus/NAME/, into a working corpus in
# BINDIR/corpus/NAME/ that grows across runs (the seeds stay as they are).
# FUZZ=a,b runs only those. One line per harness: name, executions,
# crashes (0, or the input that crashed it: `BINDIR/NAME FILE` replays
# it; the harness's log is BINDIR/log/NAME.log). Exit 1 if any crashed,
# hung or ran out of memory. FUZZ_ARGS passes more libFuzzer options.
set -uo pipefail

bindir=$1 secs=$2
shift 2
seeds=tests/fuzz/corpus
status=0 total=0

printf '%-14s %12s  %s\n' harness execs crashes
for name in "$@"; do
	if [ -n "${FUZZ:-}" ] && [[ ",$FUZZ," != *",$name,"* ]]; then
		continue
	fi
	work=$bindir/corpus/$name art=$bindir/crash/$name log=$bindir/log/$name.log
	mkdir -p "$work" "$art" "$(dirname "$log")"
	rm -f "$art"/*
	limit=(-max_total_time="$secs")
	[ -n "${FUZZ_RUNS:-}" ] && limit+=(-runs="$FUZZ_RUNS")
	# -close_fd_mask=2: the code's own error lines stay out of the log
	# (libFuzzer's and the sanitizers' reports do not).
	"$bindir/$name" "${limit[@]}" -timeout=10 -rss_limit_mb=2048 \
		-max_len=65536 -print_final_stats=1 -close_fd_mask=2 \
		-artifact_prefix="$art/" ${FUZZ_ARGS:-} \
		"$work" $([ -d "$seeds/$name" ] && echo "$seeds/$name") >"$log" 2>&1
	rc=$?
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
	execs=${execs:-0}
	total=$((total + execs))
	found=$(ls "$art" 2>/dev/null | head -1)
	if [ -n "$found" ] || [ $rc -ne 0 ]; then
		status=1
		what="exit $rc, see $log"
		[ -n "$found" ] && what=$art/$found
		printf '%-14s %12s  %s\n' "$name" "$execs" "$what"
		grep -m1 -E 'ERROR: |runtime error|SUMMARY' "$log" | sed 's/^/    /'
	else
		printf '%-14s %12s  %s\n' "$name" "$execs" 0
	fi
done
printf '%-14s %12s\n' total "$total"
exit $status
