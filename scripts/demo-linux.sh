#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# make demo GUEST=linux: Debian's stock Linux kernel with the kvstore image
# (make linux-guest) protected by primary + secondary on the built-in KVM
# VMM, each with a TAP on one bridge, in a network namespace of its own
# (link-local 169.254.10.0/24, nothing on the host's network changes).
# A client load of exactly-once INCRs over UDP and one TCP connection held
# open, SIGKILL of the primary mid-load, the takeover (announced on the
# bridge), and the verdict: acknowledged updates lost (must be 0), the TCP
# connection alive, failover and pause times.
# Runs natively where /dev/kvm works, else inside the emulated test VM.
set -euo pipefail
cd "$(dirname "$0")/.."
B=${BUILD:-build}
TRANSPORT=${TRANSPORT:-tcp}
ARGS=${KEMARI_DEMO_ARGS:-}

if [ "${1:-}" = --netns ]; then
	shift
else
	if [ "${1:-}" != --inner ]; then
		# KVM without vmx/svm is PVM, where Linux's SSE fails.
		if [ -c /dev/kvm ] && (exec 3<>/dev/kvm) 2>/dev/null &&
			grep -qwE 'vmx|svm' /proc/cpuinfo; then
			exec "$0" --inner
		fi
		echo "demo: /dev/kvm is missing here or cannot run Debian's kernel (no vmx/svm: PVM); running the demo inside the emulated test VM (QEMU TCG + kvm_amd: slow, pause times meaningless)"
		exec tests/vm/vm.sh run -t 900 -m 2048 -- env BUILD="$B" TRANSPORT="$TRANSPORT" \
			KEMARI_DEMO_SLOW=1 KEMARI_DEMO_ARGS="$ARGS" "$0" --inner
	fi
	# Everything below in a network namespace of its own.
	ns=kemari-demo-$$
	ip netns add "$ns" || { echo "demo: cannot create a network namespace (run as root)"; exit 1; }
	trap 'ip netns del "$ns" 2>/dev/null || true' EXIT
	rc=0
	ip netns exec "$ns" "$0" --netns || rc=$?
	exit $rc
fi

slow=${KEMARI_DEMO_SLOW:-0}
hb=""
load_ms=8000
kill_after=4
if [ "$slow" = 1 ]; then
	hb="--heartbeat-ms=50 --heartbeat-timeout-ms=3000"
	load_ms=20000
	kill_after=8
fi
G=$B/guests/linux
for f in "$G/vmlinuz" "$G/initrd.img"; do
	[ -r "$f" ] || { echo "demo: $f missing: run 'make linux-guest' first"; exit 1; }
done
work=$(mktemp -d /tmp/kemari-demo.XXXXXX)
guest=169.254.10.2
svc=$guest:7500
peer=127.0.0.1:7400
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
	rm -rf "$work"
}
trap cleanup EXIT

ip link set lo up
ip link add kmrbr0 type bridge
ip addr add 169.254.10.1/24 dev kmrbr0
ip link set kmrbr0 up

C=(--kernel="$G/vmlinuz" --initrd="$G/initrd.img"
	--append="console=ttyS0 acpi=off kemari.ip=$guest/24 kemari.tick=5"
	--mem=128M --disk="$work/disk.img" --disk-size=32M --transport="$TRANSPORT" $hb $ARGS)

step() { printf '\n== %s\n' "$*"; }

step "1. secondary: TAP kmrs0 on bridge kmrbr0; delivers and sends nothing until it takes over"
"$B/kemari-run" --role=secondary --listen=$peer --net=tap:kmrs0,bridge=kmrbr0 \
	--console-log="$work/secondary.console" "${C[@]}" \
	2> >(tee "$work/secondary.log" | sed -u 's/^/   [S] /' >&2) &
pids+=($!)
sleep 1
step "2. primary: TAP kmrp0, initial sync of 128 MiB, then Debian's kernel boots protected"
t0=$(date +%s)
"$B/kemari-run" --role=primary --peer=$peer --net=tap:kmrp0,bridge=kmrbr0 \
	--console-log="$work/primary.console" --stats="$work/stats.json" "${C[@]}" \
	2> >(sed -u 's/^/   [P] /' >&2) &
P=$!
pids+=($P)
for i in $(seq 600); do
	grep -q "kemari-guest: ready" "$work/primary.console" 2>/dev/null && break
	kill -0 $P 2>/dev/null || { echo "demo: the primary exited (see [P] above)"; exit 1; }
	[ "$i" = 600 ] && { echo "demo: the guest never got ready"; tail -20 "$work/primary.console"; exit 1; }
	sleep 0.5
done
echo "   guest console: $(grep -m1 'Linux version' "$work/primary.console" | sed 's/^\[[^]]*\] //' | cut -c1-60)..."
echo "   guest console: $(grep -m1 'kemari-guest: ready' "$work/primary.console") ($(($(date +%s) - t0)) s after start)"

kv() { "$B/kemari-kv" --server=$svc --timeout-ms=60000 "$@"; }
step "3. a short client session: UDP $svc, and one TCP connection kept open"
for cmd in "PING" "SET greeting hello" "GET greeting"; do
	printf '   kemari-kv %-20s -> %s\n' "$cmd" "$(kv $cmd)"
done
exec 3<>/dev/tcp/$guest/7500
tcp() { # SEQ CMD...
	local reply
	echo "demo $*" >&3
	read -r -t 60 reply <&3 || { echo "   TCP: no reply to '$*'"; return 1; }
	printf '   TCP  %-26s -> %s\n' "demo $*" "$reply"
}
tcp 1 SET tcpkey 10
tcp 2 INCR tcpkey

step "4. load: 2 clients x exactly-once INCR on 8 keys for $((load_ms / 1000)) s; SIGKILL of the primary after ${kill_after} s"
kv load --clients=2 --keys=8 --duration-ms=$load_ms >"$work/load.out" 2>&1 &
L=$!
sleep "$kill_after"
{ kill -9 $P; wait $P; } 2>/dev/null || true
echo "   primary killed (SIGKILL) at $(date +%T.%N | cut -c1-12)"
rc=0
wait $L || rc=$?
sleep 0.5

step "5. after the failover: the same TCP connection, the same data"
tcp_ok=0
tcp 3 INCR tcpkey && tcp 4 GET tcpkey && tcp_ok=1
exec 3>&-
printf '   kemari-kv GET greeting -> %s\n' "$(kv GET greeting)"
echo "   bridge: $(bridge fdb show br kmrbr0 | grep -i '52:54:00:4b:4d:01' | head -1)"
echo "   guest console (secondary): $(grep 'kemari-guest: tick' "$work/secondary.console" | tail -1)"

acked=$(sed -n 's/^acknowledged \([0-9]*\) updates.*/\1/p' "$work/load.out")
lost=$(sed -n 's/.*; lost \([0-9]*\);.*/\1/p' "$work/load.out")
twice=$(sed -n 's/.*applied twice \([0-9]*\);.*/\1/p' "$work/load.out")
lat=$(sed -n 's/^latency //p' "$work/load.out")
pauses=$(sed -n 's/.*"pause_us":\([0-9]*\).*/\1/p' "$work/stats.json" | sort -n)
n=$(echo "$pauses" | grep -c . || true)
pct() { echo "$pauses" | awk -v q="$1" -v n="$n" 'NR==int(q*n+0.999999){print; exit}'; }
step "Result"
sed 's/^/   /' "$work/load.out"
echo "   acknowledged updates: ${acked:-?}"
echo "   lost:                 ${lost:-?}   (applied twice: ${twice:-?})"
echo "   TCP connection:       $([ $tcp_ok = 1 ] && echo "alive across the failover" || echo BROKEN)"
echo "   failover:             $(sed -n 's/.*takeover: resumed/resumed/p' "$work/secondary.log")"
echo "   client latency:       ${lat:-?}"
echo "   pause time over $n epochs: p50 $(pct 0.5) us, p99 $(pct 0.99) us"
[ "$rc" = 0 ] && [ "${lost:-1}" = 0 ] && [ "${twice:-1}" = 0 ] && [ $tcp_ok = 1 ] && {
	echo "   VERDICT: a Linux VM failed over; 0 acknowledged updates lost"
	exit 0
}
echo "   VERDICT: FAILED (load rc=$rc)"
exit 1
