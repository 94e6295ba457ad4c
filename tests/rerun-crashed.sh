#!/usr/bin/env bash
# tests/rerun-crashed.sh NAME CMD...: run a Criterion suite of the emulated
# test VM (CMD gets --verbose), and when it fails, name every failing test
# ("FAILED TEST: suite::name") and tell its cause apart:
#   - a guest that crashed by itself (its side's log shows "guest stopped:"
#     or the runtime's "panic: CPU exception", in the output of that test
#     only): inside the emulated VM (nested KVM under QEMU TCG) guests have
#     been seen to crash now and then (docs/testing.md, the open issue
#     "make demo fails for a new user"). Each such test alone is run once
#     more (--filter), with a "CRASH-RERUN:" line; it must pass then.
#     Only there: a suite that ran on this host's own KVM (no "run-kvm:
#     ... running inside the emulated test VM" line, and not inside it:
#     KEMARI_EMULATED_VM unset) is never rerun.
#   - anything else (data lost, no takeover, a timeout, an assertion): the
#     suite fails at once, nothing is rerun.
# Tests that crash a guest on purpose are never rerun for that crash: those
# named "stack_overflow" or "corrupt_stack" not at all, those named "crash"
# (the primary's guest dies, the secondary takes over) only for a crash of
# the secondary's guest. Nothing is hidden: the first run's
# output stays in the log above the rerun.
set -uo pipefail
name=$1
shift
log=$(mktemp /tmp/kemari-rerun.XXXXXX)
trap 'rm -f "$log"' EXIT

"$@" --verbose 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
[ "$rc" -eq 0 ] && exit 0

# Criterion's lines without colours: "[RUN ] suite::name", "[FAIL] suite::
# name: (1.2s)". With --jobs 1 a test's output lies between its RUN line
# and the next one.
plain() { sed 's/\x1b\[[0-9;]*m//g' "$log"; }
mapfile -t failed < <(plain | sed -n 's/^\[FAIL\] \([^:]*::[^:]*\).*/\1/p' | sort -u)
if [ ${#failed[@]} -eq 0 ]; then
	echo "RERUN: $name failed (exit $rc) and no test failed by name (the VM or the harness): not rerun"
	exit "$rc"
fi
crashed=()
for t in "${failed[@]}"; do
	echo "FAILED TEST: $t"
	# A test that crashes the primary's guest on purpose (*crash*) counts
	# only a crash in the secondary's log (the dumps' "---- .../secondary
	# .log" sections): the secondary's guest must run on.
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
	if [ -z "$sig" ]; then
		echo "RERUN: $name: $t failed without a guest crash: a real failure, nothing is rerun"
		exit "$rc"
	fi
	# Inside the VM, tests/vm/by-test.sh already gave each test its rerun.
	# (grep reads a process substitution, not a pipe: with pipefail, a
	# grep -q that stops at its match makes the writer die of SIGPIPE
	# and the pipeline fail; CI stop 20 took a suite that ran in the VM
	# for one on the host's own KVM so, and did not rerun it.)
	if grep -qF "$t failed again: FAILED" < <(plain); then
		echo "RERUN: $name: $t failed again on its rerun inside the emulated VM: FAILED"
		exit "$rc"
	fi
	if [ -z "${KEMARI_EMULATED_VM:-}" ] &&
		! grep -q '^run-kvm: .*running inside the emulated test VM' < <(plain); then
		echo "RERUN: $name: $t: its guest crashed on this host's own KVM, not in the emulated VM: a real failure, nothing is rerun"
		exit "$rc"
	fi
	crashed+=("$t|$sig")
done
for c in "${crashed[@]}"; do
	t=${c%%|*}
	echo "CRASH-RERUN: $name: $t failed after its guest crashed by itself (${c#*|}); running that test once more"
	if ! "$@" --verbose --filter "${t/::/\/}" 2>&1; then
		echo "CRASH-RERUN: $name: $t failed again: FAILED"
		exit 1
	fi
	echo "CRASH-RERUN: $name: $t passed on its rerun (a guest crash, counted: see above)"
done
exit 0
