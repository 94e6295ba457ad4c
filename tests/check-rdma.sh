#!/usr/bin/env bash
# Soft-RoCE tests (make check-rdma): one boot of the emulated test VM
# (tests/vm/vm.sh: Debian's kernel under QEMU TCG, rdma_rxe on dummy0 with
# 169.254.77.1, kvm_amd), and inside it
#   1. the transport conformance suite over rdma (and again with source and
#      receive buffers in many small memory regions of different sizes, so
#      requests span several SGEs and split at remote regions, and with the
#      commit sent as a plain SEND: the transport's alternative paths), and
#      rdma's one-line errors through kemari-run (peer unreachable, address
#      in use, RLIMIT_MEMLOCK too low),
#   2. the conformance suite over ofi with libfabric's verbs provider
#      (FI_EP_MSG) and over verbs;ofi_rxm (FI_EP_RDM),
#   3. the kill -9 failover consistency tests over --transport=rdma,
#   4. the same over --transport=ofi --provider=verbs,
#   5. a replicated Linux guest killed under load, and its TCP connection
#      held through the failover, over rdma,
#   6. the synthetic-guest failover and re-protection suites over rdma.
# Parts 2 and 4 run only when BUILD/kemari-run lists the ofi transport, and
# say SKIP otherwise. One PASS/FAIL/SKIP line per part; exit 1 on any
# failure, 77 when the VM cannot run here (qemu or the kernel package
# missing: vm.sh says why in one line).
#
#   BUILD=dir (default build)       the build to test
#   KEMARI_FAILOVER_RUNS (default 5) random-moment kills per transport
#   KEMARI_TIME_SCALE, KEMARI_TEST_HB as tests/run-kvm.sh sets them (a
#   fresh --auth-key is added to KEMARI_TEST_HB: the secondaries listen on
#   169.254.77.1, where kemari-run wants one)
#   KEMARI_VM_TIMEOUT (seconds, default 7200)
#   KEMARI_RDMA_PARTS (a glob, default *) runs only the parts whose name
#   matches it, e.g. 'synth*' (for a rerun of one failed part)
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/.."
BUILD=${BUILD:-build}
ADDR=169.254.77.1

inside() {
	local failed=0 parts=0 ofi=0

	export KEMARI_BUILD=$BUILD KEMARI_TEST_ADDR=$ADDR
	export KEMARI_TIME_SCALE=${KEMARI_TIME_SCALE:-4}
	export KEMARI_TEST_HB=${KEMARI_TEST_HB:---heartbeat-ms=50 --heartbeat-timeout-ms=3000}
	export KEMARI_FAILOVER_RUNS=${KEMARI_FAILOVER_RUNS:-5}
	# Secondaries listen on $ADDR, not loopback: kemari-run wants a key
	# there. One for the run, in the options the integration tests give
	# both sides (KEMARI_TEST_HB), so that every pair authenticates over
	# rdma and ofi-verbs (tests/synth makes its own keys).
	rdma_key=$(mktemp -u /tmp/kemari-check-rdma.XXXXXX.key)
	if ! "$BUILD/kemari-run" --gen-key="$rdma_key" >/dev/null; then
		echo "check-rdma: FAIL cannot make a key with $BUILD/kemari-run --gen-key"
		exit 1
	fi
	trap 'rm -f "$rdma_key"' EXIT
	KEMARI_TEST_HB="$KEMARI_TEST_HB --auth-key=$rdma_key"

	part() { # NAME CMD...: run one part, report it
		local name=$1 rc
		shift
		# shellcheck disable=SC2053 # a glob on purpose
		if [[ $name != ${KEMARI_RDMA_PARTS:-*} ]]; then
			echo "check-rdma: SKIP $name: not in KEMARI_RDMA_PARTS"
			return
		fi
		parts=$((parts + 1))
		# A part that passed in an earlier boot of the emulated machine
		# (tests/vm/vm.sh boots a fresh one after its own panic or
		# freeze, and runs the job again) is not run again.
		if [ -n "${KEMARI_VM_JOB:-}" ] &&
			grep -qxF "part: $name" "$KEMARI_VM_JOB/passed" 2>/dev/null; then
			echo "check-rdma: PASS $name (in an earlier boot of the emulated machine)"
			return
		fi
		echo "check-rdma: ---- $name [$(date -u +%T)]"
		case $name in
		*failover*) tests/run-suite.sh "$name" "$@" ;;
		*) "$@" ;;
		esac
		rc=$?
		if [ $rc -eq 0 ]; then
			echo "check-rdma: PASS $name"
			[ -n "${KEMARI_VM_JOB:-}" ] && echo "part: $name" >>"$KEMARI_VM_JOB/passed"
		else
			echo "check-rdma: FAIL $name (exit $rc)"
			failed=$((failed + 1))
		fi
	}
	skip() {
		echo "check-rdma: SKIP $1: $2"
	}

	if [ ! -e /sys/class/infiniband/rxe0 ]; then
		echo "check-rdma: FAIL no soft-RoCE device rxe0 inside the VM (rdma_rxe did not load; see the console log)"
		exit 1
	fi
	grep -qx ofi < <("$BUILD/kemari-run" --list-transports) && ofi=1

	part "rdma conformance" env KEMARI_XPORTS=rdma \
		"$BUILD/tests/xport" --jobs 1 --short-filename
	part "rdma conformance (1 MiB/3 MiB memory regions, commit by SEND)" \
		env KEMARI_XPORTS=rdma KEMARI_RDMA_MR_MAX=1M,3M \
		KEMARI_RDMA_COMMIT=send \
		"$BUILD/tests/xport" --jobs 1 --short-filename
	part "rdma error lines" env KEMARI_TEST_TRANSPORT=rdma \
		"$BUILD/tests/integration" --jobs 1 --short-filename \
		--filter 'rdma_errors/*'
	if [ $ofi = 1 ]; then
		part "ofi-verbs conformance (FI_EP_MSG, and FI_EP_RDM over verbs;ofi_rxm)" \
			env "KEMARI_XPORTS=ofi,ofi:verbs;ofi_rxm" \
			KEMARI_OFI_PROVIDER=verbs \
			"$BUILD/tests/xport" --jobs 1 --short-filename
	else
		skip "ofi-verbs conformance" "the ofi transport is not in $BUILD (kemari-run --list-transports)"
	fi
	part "rdma kill -9 failover" env KEMARI_TEST_TRANSPORT=rdma \
		"$BUILD/tests/integration" --jobs 1 --short-filename --verbose \
		--filter 'replication/kill9*'
	if [ $ofi = 1 ]; then
		# The harness splits the command at spaces: two options.
		part "ofi-verbs kill -9 failover" \
			env "KEMARI_TEST_TRANSPORT=ofi --provider=verbs" \
			"$BUILD/tests/integration" --jobs 1 --short-filename \
			--verbose --filter 'replication/kill9*'
	else
		skip "ofi-verbs kill -9 failover" "the ofi transport is not in $BUILD"
	fi
	# A replicated Linux guest (make linux-guest) killed under load, its
	# TCP connection held across: the same failover over soft-RoCE.
	part "Linux guest failover over rdma" env KEMARI_TEST_TRANSPORT=rdma \
		KEMARI_LINUX_FAILOVER_RUNS=1 \
		"$BUILD/tests/integration" --jobs 1 --short-filename --verbose \
		--filter 'linux_failover/kill9_at_random_moment'
	part "Linux guest TCP connection through a failover over rdma" \
		env KEMARI_TEST_TRANSPORT=rdma \
		"$BUILD/tests/integration" --jobs 1 --short-filename --verbose \
		--filter 'linux_failover/tcp_connection_survives_the_failover'
	# The engine with the synthetic guest: every takeover verifies the
	# replica page by page (tests/synth), over rdma; with
	# re-protection and switchover (reprotect/*). The fence and ops
	# suites, and the synth tests that pick their own transport (tcp:
	# torn_*, tsc_*, non_loopback_*, tls_*), run natively in make
	# check-run only.
	# Over rdma only: ofi-verbs has its conformance and KVM kill -9
	# parts above (each part costs minutes under TCG, and make check
	# must end within CI's 90).
	local sx="rdma"
	part "synth failover over $sx" env "KEMARI_SYNTH_XPORTS=$sx" \
		"$BUILD/tests/synth" --jobs 1 --short-filename \
		--filter '@(reprotect/*|synth/!(torn_*|tsc_*|non_loopback_*|tls_*))'
	echo "check-rdma: $((parts - failed))/$parts parts passed"
	[ $failed -eq 0 ]
}

if [ "${1:-}" = --inside ]; then
	inside
	exit
fi

for f in kemari-run tests/xport tests/integration tests/synth guests/kvstore.elf guests/linux/vmlinuz guests/linux/initrd.img; do
	if [ ! -e "$BUILD/$f" ]; then
		echo "check-rdma: $BUILD/$f missing: run 'make BUILD=$BUILD all tests linux-guest' first" >&2
		exit 1
	fi
done
if ! grep -qx rdma < <("$BUILD/kemari-run" --list-transports); then
	echo "check-rdma: FAIL the rdma transport is not in $BUILD (libibverbs/librdmacm not found at build time: run 'make deps')"
	exit 1
fi
echo "check-rdma: booting the soft-RoCE test VM (QEMU TCG; takes minutes)"
tests/vm/vm.sh run -t "${KEMARI_VM_TIMEOUT:-7200}" -m 3072 -- \
	env BUILD="$BUILD" KEMARI_EMULATED_VM=1 \
	${KEMARI_FAILOVER_RUNS:+KEMARI_FAILOVER_RUNS="$KEMARI_FAILOVER_RUNS"} \
	${KEMARI_TIME_SCALE:+KEMARI_TIME_SCALE="$KEMARI_TIME_SCALE"} \
	${KEMARI_TEST_HB:+KEMARI_TEST_HB="$KEMARI_TEST_HB"} \
	${KEMARI_RDMA_PARTS:+KEMARI_RDMA_PARTS="$KEMARI_RDMA_PARTS"} \
	tests/check-rdma.sh --inside
rc=$?
case $rc in
0) echo "check-rdma: PASS (all parts)" ;;
77) echo "check-rdma: SKIP: the soft-RoCE VM cannot run here (reason above)" ;;
*) echo "check-rdma: FAIL (exit $rc)" ;;
esac
exit $rc
