#!/usr/bin/env bash
# make demo: primary + secondary on the built-in KVM VMM, a client load of
# exactly-once INCRs, SIGKILL of the primary mid-load, takeover, and the
# verdict: acknowledged updates, lost (must be 0), failover time, pause times.
# Runs natively where /dev/kvm works, else inside the emulated test VM.
set -euo pipefail
cd "$(dirname "$0")/.."
B=${BUILD:-build}
TRANSPORT=${TRANSPORT:-tcp}
# Extra kemari-run options for both sides (scripts/demo-soak.sh passes
# testing options through it, e.g. --stretch-pause=500:200 --verify-replica).
ARGS=${KEMARI_DEMO_ARGS:-}

if [ "${1:-}" != --inner ]; then
	if [ -c /dev/kvm ] && (exec 3<>/dev/kvm) 2>/dev/null; then
		exec "$0" --inner
	fi
	echo "demo: /dev/kvm is not usable on this host; running the demo inside the emulated test VM (QEMU TCG + kvm_amd: slow, pause times meaningless)"
	exec tests/vm/vm.sh run -t 900 -m 2048 -- env BUILD="$B" TRANSPORT="$TRANSPORT" \
		KEMARI_DEMO_SLOW=1 KEMARI_DEMO_ARGS="$ARGS" "$0" --inner
fi

slow=${KEMARI_DEMO_SLOW:-0}
hb=""
load_ms=6000
kill_after=3
if [ "$slow" = 1 ]; then
	hb="--heartbeat-ms=50 --heartbeat-timeout-ms=3000"
	load_ms=20000
	kill_after=8
fi
work=$(mktemp -d /tmp/kemari-demo.XXXXXX)
disk=$work/disk.img
svc=127.0.0.1:7500
peer=127.0.0.1:7400
G="--guest=$B/guests/kvstore.elf --mem=64M --disk=$disk --net=udp:$svc --transport=$TRANSPORT $hb $ARGS"
# KEMARI_DEMO_PIN=1 (testing, scripts/demo-soak.sh passes it): each side
# pinned to its own CPU (the secondary to CPU 1, the primary to CPU 0), so
# no vCPU thread moves between CPUs: an A/B for the guest crashes inside
# the emulated VM (docs/testing.md).
pin_s=() pin_p=()
if [ "${KEMARI_DEMO_PIN:-0}" = 1 ]; then
	pin_s=(taskset -c 1)
	pin_p=(taskset -c 0)
fi
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
	rm -rf "$work" # the disk image too: repeated demos must not fill /tmp
}
trap cleanup EXIT

step() { printf '\n== %s\n' "$*"; }

step "1. secondary: waits on $peer, binds nothing until it takes over"
"${pin_s[@]}" "$B/kemari-run" --role=secondary --listen=$peer $G \
	2> >(tee "$work/secondary.log" | sed -u 's/^/   [S] /' >&2) &
pids+=($!)
sleep 1
step "2. primary: initial sync of 64 MiB, then the kvstore guest boots protected"
"${pin_p[@]}" "$B/kemari-run" --role=primary --peer=$peer --stats="$work/stats.json" $G \
	2> >(tee "$work/primary.log" | sed -u 's/^/   [P] /' >&2) &
P=$!
pids+=($P)
for i in $(seq 300); do
	"$B/kemari-kv" --timeout-ms=300 PING >/dev/null 2>&1 && break
	kill -0 $P 2>/dev/null || { echo "demo: the primary exited (see [P] above)"; exit 1; }
	[ "$i" = 300 ] && { echo "demo: the kvstore never answered"; exit 1; }
	sleep 0.2
done

step "3. a short client session (udp:$svc)"
for cmd in "PING" "SET greeting hello" "GET greeting" "INCR visits" "INCR visits"; do
	printf '   kemari-kv %-20s -> %s\n' "$cmd" "$("$B/kemari-kv" $cmd)"
done

step "4. load: 4 clients x exactly-once INCR on 8 keys for $((load_ms / 1000)) s; SIGKILL of the primary after ${kill_after} s"
"$B/kemari-kv" --timeout-ms=60000 load --clients=4 --keys=8 --duration-ms=$load_ms \
	>"$work/load.out" 2>&1 &
L=$!
sleep "$kill_after"
{ kill -9 $P; wait $P; } 2>/dev/null || true
echo "   primary killed (SIGKILL) at $(date +%T.%N | cut -c1-12)"
rc=0
wait $L || rc=$?
sleep 0.5

step "5. after the failover"
printf '   kemari-kv GET greeting -> %s\n' "$("$B/kemari-kv" GET greeting)"
printf '   kemari-kv GET visits   -> %s\n' "$("$B/kemari-kv" GET visits)"

acked=$(sed -n 's/^acknowledged \([0-9]*\) updates.*/\1/p' "$work/load.out")
lost=$(sed -n 's/.*; lost \([0-9]*\);.*/\1/p' "$work/load.out")
twice=$(sed -n 's/.*applied twice \([0-9]*\);.*/\1/p' "$work/load.out")
lat=$(sed -n 's/^latency //p' "$work/load.out")
pauses=$(sed -n 's/.*"pause_us":\([0-9]*\).*/\1/p' "$work/stats.json" | sort -n)
n=$(echo "$pauses" | grep -c . || true)
pct() { echo "$pauses" | awk -v q="$1" -v n="$n" 'NR==int(q*n+0.999999){print; exit}'; }
step "Result"
cat "$work/load.out" | sed 's/^/   /'
echo "   acknowledged updates: ${acked:-?}"
echo "   lost:                 ${lost:-?}   (applied twice: ${twice:-?})"
echo "   failover:             $(sed -n 's/.*takeover: //p' "$work/secondary.log")"
echo "   client latency:       ${lat:-?}"
echo "   pause time over $n epochs: p50 $(pct 0.5) us, p99 $(pct 0.99) us"
[ "$rc" = 0 ] && [ "${lost:-1}" = 0 ] && [ "${twice:-1}" = 0 ] && {
	echo "   VERDICT: 0 acknowledged updates lost"
	exit 0
}
echo "   VERDICT: FAILED (load rc=$rc)"
# A guest that died inside the emulated test VM: say whose defect it is.
if [ "$slow" = 1 ] && grep -q 'guest stopped' "$work/primary.log" "$work/secondary.log"; then
	echo "   WHY: a guest stopped on a triple fault inside the emulated test VM (nested KVM under QEMU's TCG). The same guest under the same load crashes there without any replication too (KEMARI_SOAK_STANDALONE=1 scripts/demo-soak.sh), and never on a host's own KVM: as measured, a defect of the emulated machine, not of replication (docs/testing.md). Run 'make demo' again, or on a host whose /dev/kvm works."
fi
exit 1
