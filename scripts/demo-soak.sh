#!/usr/bin/env bash
# scripts/demo-soak.sh [N]: run the demo N times in a row (default 10) in one
# emulated test VM (or natively where /dev/kvm works) and print each run's
# verdict; for a failed run, its primary's and secondary's own lines. Exits
# non-zero if any run failed. KEMARI_DEMO_ARGS passes kemari-run options
# to both sides of every run, e.g. an A/B of dirty tracking under stretched
# pauses:
#   KEMARI_DEMO_ARGS="--stretch-pause=500:200 --dirty-track=bitmap" scripts/demo-soak.sh 5
# KEMARI_FORCE_VM=1 runs them in the emulated VM even where /dev/kvm works.
# KEMARI_SOAK_TRACE=1 records KVM's own trace events (exits, entries,
# injected exceptions, page faults) of each run and, when a guest stopped on
# a triple fault, prints the faulting thread's last events before the
# shutdown: where the guest really died (KVM resets the vCPU after it).
# KEMARI_SOAK_STANDALONE=1 runs, instead of the demo, its guest under the
# same load without any replication (one kemari-run, --role=standalone):
# what the guest and the VMM do on this KVM by themselves, for telling a
# defect of replication from one of the machine (docs/testing.md).
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-10}
if [ "${2:-}" != --inner ]; then
	if [ "${KEMARI_FORCE_VM:-0}" != 1 ] && [ -c /dev/kvm ] &&
		(exec 3<>/dev/kvm) 2>/dev/null; then
		exec "$0" "$n" --inner
	fi
	echo "demo-soak: /dev/kvm is not usable here${KEMARI_FORCE_VM:+ (KEMARI_FORCE_VM)}: $n demos inside one emulated test VM"
	exec tests/vm/vm.sh run -t $((300 + n * 240)) -m 2048 -- env BUILD="${BUILD:-build}" \
		TRANSPORT="${TRANSPORT:-tcp}" KEMARI_DEMO_SLOW=1 \
		KEMARI_DEMO_ARGS="${KEMARI_DEMO_ARGS:-}" KEMARI_DEMO_PIN="${KEMARI_DEMO_PIN:-0}" \
		KEMARI_SOAK_TRACE="${KEMARI_SOAK_TRACE:-0}" \
		KEMARI_SOAK_STANDALONE="${KEMARI_SOAK_STANDALONE:-0}" \
		"$0" "$n" --inner
fi
failed=0
log=$(mktemp /tmp/kemari-soak.XXXXXX)
T=/sys/kernel/tracing
if [ "${KEMARI_SOAK_TRACE:-0}" = 1 ]; then
	[ -d $T/events ] || mount -t tracefs nodev $T 2>/dev/null || true
	[ -d $T/events/kvm ] || { echo "demo-soak: no KVM trace events here ($T): KEMARI_SOAK_TRACE ignored"; KEMARI_SOAK_TRACE=0; }
fi
if [ "${KEMARI_SOAK_TRACE:-0}" = 1 ]; then
	echo 16384 >$T/buffer_size_kb
	for e in kvm_exit kvm_entry kvm_inj_exception kvm_page_fault kvm_pio \
		kvm_userspace_exit kvm_fpu kvm_cr kvm_msr kvm_nested_vmexit; do
		echo 1 >$T/events/kvm/$e/enable 2>/dev/null || true
	done
	# Off again at the end: a host's KVM must not keep tracing.
	trap 'echo 0 >$T/events/kvm/enable 2>/dev/null; echo 1408 >$T/buffer_size_kb 2>/dev/null || true' EXIT
fi
# The faulting thread's last trace events before its shutdown exit.
trace_tail() {
	local at pid
	at=$(grep -n -m1 -i 'reason.*shutdown' $T/trace | cut -d: -f1 || true)
	if [ -z "$at" ]; then
		echo "    trace: no shutdown exit; the exits in the trace by kind, and its last events:"
		grep -a kvm_exit $T/trace | grep -o 'reason [a-z_]* rip 0x[0-9a-f]* info1 0x[0-9a-f]*' |
			sort | uniq -c | sort -rn | head -8 | sed 's/^/    trace: /'
		tail -8 $T/trace | sed 's/^/    trace: /'
		return 0
	fi
	pid=$(sed -n "${at}p" $T/trace | awk '{print $1}')
	echo "    trace: $pid entered its guest $(head -n "$at" $T/trace | grep -F -- "$pid" | grep -c kvm_entry) times from $(grep -F -m1 -- "$pid" $T/trace | awk '{print $4 + 0}') s to its shutdown at $(sed -n "${at}p" $T/trace | awk '{print $4 + 0}') s; its last events:"
	head -n $((at + 3)) $T/trace | grep -F -- "$pid" | tail -30 | sed 's/^/    trace: /'
}
# The demo's guest and load (20 s, 4 clients) on one standalone kemari-run.
standalone() {
	local B=${BUILD:-build} dir P rc=0 alive=yes
	dir=$(mktemp -d /tmp/kemari-standalone.XXXXXX)
	"$B/kemari-run" --guest="$B/guests/kvstore.elf" --mem=64M \
		--disk="$dir/disk.img" --net=udp:127.0.0.1:7500 \
		${KEMARI_DEMO_ARGS:-} 2>"$dir/vmm.log" &
	P=$!
	for _ in $(seq 150); do
		"$B/kemari-kv" --timeout-ms=300 PING >/dev/null 2>&1 && break
		sleep 0.2
	done
	"$B/kemari-kv" --timeout-ms=5000 load --clients=4 --keys=8 \
		--duration-ms=20000 >"$dir/load.out" 2>&1 || rc=$?
	kill -0 $P 2>/dev/null || alive=no
	kill $P 2>/dev/null || true
	wait $P 2>/dev/null || true
	sed 's/^/   [standalone] /' "$dir/vmm.log"
	sed 's/^/   /' "$dir/load.out"
	rm -rf "$dir"
	if [ $rc = 0 ]; then
		echo "   VERDICT: 0 acknowledged updates lost"
		return 0
	fi
	echo "   VERDICT: FAILED (load rc=$rc; the VMM $([ $alive = yes ] && echo was still running || echo had ended))"
	return 1
}
for i in $(seq "$n"); do
	rc=0
	[ "${KEMARI_SOAK_TRACE:-0}" = 1 ] && : >$T/trace
	if [ "${KEMARI_SOAK_STANDALONE:-0}" = 1 ]; then
		standalone >"$log" 2>&1 || rc=$?
	else
		scripts/demo.sh --inner >"$log" 2>&1 || rc=$?
	fi
	verdict=$(grep -h 'VERDICT' "$log" || echo "VERDICT: none (exit $rc)")
	echo "demo $i/$n:$(echo "$verdict" | sed 's/^ *VERDICT//')"
	# --verify-replica's findings, also of runs that passed.
	# and a dirty ring KVM overran (vm.c's warning).
	grep -a -e 'replica check' -e 'past the end of' "$log" |
		sed 's/^ */    /' || true
	if [ "$rc" != 0 ]; then
		failed=$((failed + 1))
		# The whole run but the progress bars: a failure is read, not rerun.
		grep -a -v 'initial sync \[' "$log" | sed 's/^/    /' | tail -120
		[ "${KEMARI_SOAK_TRACE:-0}" = 1 ] && trace_tail
	fi
done
rm -f "$log"
echo "demo-soak: $((n - failed)) of $n passed${KEMARI_DEMO_ARGS:+ (with $KEMARI_DEMO_ARGS)}$([ "${KEMARI_SOAK_STANDALONE:-0}" = 1 ] && echo " (standalone: the demo's guest and load, no replication)")"
[ "$failed" = 0 ]
