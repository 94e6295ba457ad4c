#!/usr/bin/env bash
# Run a test program that needs KVM: natively when /dev/kvm works on this
# host, otherwise inside the emulated test VM (QEMU TCG with kvm_amd inside,
# tests/vm/vm.sh), where everything is slower, so timeouts are scaled, and
# the program runs one test at a time (tests/vm/by-test.sh: a fresh VM
# after the emulated machine's own panic runs only the tests that had not
# passed yet).
#   tests/run-kvm.sh PROGRAM [ARGS...]
#   tests/run-kvm.sh --freestanding PROGRAM [ARGS...]   (below)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

kvm_opens() {
	[ -c /dev/kvm ] && (exec 3<>/dev/kvm) 2>/dev/null
}

# A /dev/kvm without vmx/svm in the CPU flags is KVM through PVM, where a
# guest's SSE fails (docs/testing.md): Debian's kernel, which the
# Linux-guest suites boot, cannot run there.
hw_virt() {
	grep -qwE 'vmx|svm' /proc/cpuinfo
}

kvm_usable() {
	[ "${KEMARI_FORCE_VM:-0}" != 1 ] && kvm_opens && hw_virt
}

# --freestanding: for suites of the freestanding guests only (no SSE, no
# Linux): natively wherever /dev/kvm opens, KVM through PVM included (make
# demo runs there natively too); in the emulated VM only where there is
# no usable /dev/kvm. The Linux-guest suites need vmx/svm (above).
if [ "${1:-}" = --freestanding ]; then
	shift
	if [ "${KEMARI_FORCE_VM:-0}" != 1 ] && kvm_opens; then
		hw_virt || echo "run-kvm: /dev/kvm is KVM through PVM: the freestanding guest's suites run natively"
		exec "$@"
	fi
fi
if kvm_usable; then
	exec "$@"
fi
why="no /dev/kvm"
[ -e /dev/kvm ] && why="/dev/kvm does not open"
kvm_opens &&
	why="/dev/kvm is KVM without vmx/svm (PVM: guests cannot use SSE, Debian's kernel cannot boot)"
[ "${KEMARI_FORCE_VM:-0}" = 1 ] && why="KEMARI_FORCE_VM=1"
echo "run-kvm: $why on this host: running inside the emulated test VM (QEMU TCG, kvm_amd)"
exec "$here/vm/vm.sh" run -t "${KEMARI_VM_TIMEOUT:-4000}" -m 3072 -- \
	env KEMARI_EMULATED_VM=1 KEMARI_TIME_SCALE="${KEMARI_TIME_SCALE:-4}" \
	KEMARI_TEST_HB="${KEMARI_TEST_HB:---heartbeat-ms=50 --heartbeat-timeout-ms=3000}" \
	KEMARI_FAILOVER_RUNS="${KEMARI_FAILOVER_RUNS:-20}" \
	KEMARI_VM_LEAVE_OUT="${KEMARI_VM_LEAVE_OUT:-}" \
	"$here/vm/by-test.sh" run-kvm "$@"
