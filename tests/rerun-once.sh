#!/usr/bin/env bash
# tests/rerun-once.sh NAME CMD...: run a suite of the emulated test VM; when
# it fails, say so in a line starting "RERUN:" and run it once more. The
# suite passes if either run passes; the first run's failure stays in the
# log above the rerun, so it is never hidden. Why: inside the VM (nested
# KVM under QEMU TCG) guests have been seen to crash by themselves, and a
# takeover under the ofi transport to leave a client unanswered, about once
# in 10-30 runs; both are being investigated (see docs/testing.md).
name=$1
shift
"$@" && exit 0
rc=$?
echo "RERUN: $name failed (exit $rc); running it once more (the failure above is kept)"
"$@"
rc2=$?
if [ $rc2 -eq 0 ]; then
	echo "RERUN: $name passed on the second run (FLAKY: first run failed with exit $rc)"
else
	echo "RERUN: $name failed twice (exit $rc, then $rc2)"
fi
exit $rc2
