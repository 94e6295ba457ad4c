#!/usr/bin/env bash
# tests/run-suite.sh NAME CMD...: run a Criterion suite (CMD gets --verbose)
# and, when it fails, name every failing test, one line each:
#   FAILED TEST: suite::name
#   FAILED TEST: suite::name (its guest crashed: <the line that says so>)
# The second form is for a test whose own output shows a guest that died
# by itself ("guest stopped:" or the guest runtime's "panic: CPU
# exception"); tests that crash a guest on purpose count only what is not
# on purpose: "stack_overflow" and "corrupt_stack" tests never, "crash"
# tests (the primary's guest dies, the secondary takes over) only a crash
# in the secondary's log. Nothing is run again: guest crashes were once
# rerun here, inside the emulated test VM, until they were traced to its
# nested paging (docs/testing.md); it runs kvm_amd with npt=0 since.
set -uo pipefail
name=$1
shift
log=$(mktemp /tmp/kemari-suite.XXXXXX)
trap 'rm -f "$log"' EXIT

"$@" --verbose 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
[ "$rc" -eq 0 ] && exit 0

# Criterion's lines without colours: "[RUN ] suite::name", "[FAIL] suite::
# name: (1.2s)". With --jobs 1 a test's output lies between its RUN line
# and the next one. (Everything reads the log through awk or sed, never
# through a pipe into grep -q: with pipefail, a grep -q that stops at its
# match makes the writer die of SIGPIPE and the pipeline fail.)
plain() { sed 's/\x1b\[[0-9;]*m//g' "$log"; }
mapfile -t failed < <(plain | sed -n 's/^\[FAIL\] \([^:]*::[^:]*\).*/\1/p' | sort -u)
if [ ${#failed[@]} -eq 0 ]; then
	echo "RUN-SUITE: $name failed (exit $rc) and no test failed by name (the VM or the harness)"
	exit "$rc"
fi
for t in "${failed[@]}"; do
	so=0
	case $t in
	*crash*) so=1 ;;
	esac
	sig=$(plain | awk -v t="$t" -v so="$so" '
		/^\[RUN \] / { in_t = (index($0, "[RUN ] " t) == 1) }
		/^---- .*secondary\.log/ { sec = 1; next }
		/^----/ { sec = 0 }
		in_t && (!so || sec) && /guest stopped:|panic: CPU exception/ { print; exit }')
	case $t in
	*stack_overflow* | *corrupt_stack*) sig="" ;;
	esac
	echo "FAILED TEST: $t${sig:+ (its guest crashed: $sig)}"
done
# Why each failed, last, where a shortened CI log still shows it: for the
# last failing run of each (a parameterized test runs many times under one
# name), its own Criterion lines (assertions and notes, at most 20) and the
# last 30 lines of its output (the end of the logs it dumped).
for t in "${failed[@]}"; do
	echo "==== why $t failed: its assertions, then the end of its output"
	plain | awk -v t="$t" '
		function keep() { nc = 0; no = 0 }
		/^\[RUN \] / { in_t = (index($0, "[RUN ] " t) == 1); keep(); next }
		in_t && /^\[(PASS|SKIP)\] / { in_t = 0; next }
		in_t && /^\[FAIL\] / {
			in_t = 0; why = ""
			for (i = 0; i < nc; i++) why = why crit[i] "\n"
			for (i = (no > 30 ? no - 30 : 0); i < no; i++) why = why out[i % 30] "\n"
			next
		}
		in_t && /^\[----\] / { if (nc < 20) crit[nc++] = $0; next }
		in_t { out[no++ % 30] = $0 }
		END { printf "%s", why }'
	echo "===="
done
echo "RUN-SUITE: $name: ${#failed[@]} test(s) failed"
exit "$rc"
