#!/usr/bin/env bash
# scripts/demo-soak.sh [N]: run the demo N times in a row (default 10) in one
# emulated test VM (or natively where /dev/kvm works) and print each run's
# verdict; for a failed run, its primary's and secondary's own lines. Exits
# non-zero if any run failed. KEMARI_DEMO_ARGS passes kemari-run options
# to both sides of every run, e.g. an A/B of dirty tracking under stretched
# pauses:
#   KEMARI_DEMO_ARGS="--stretch-pause=500:200 --dirty-track=bitmap" scripts/demo-soak.sh 5
# KEMARI_FORCE_VM=1 runs them in the emulated VM even where /dev/kvm works.
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
		"$0" "$n" --inner
fi
failed=0
log=$(mktemp /tmp/kemari-soak.XXXXXX)
for i in $(seq "$n"); do
	rc=0
	scripts/demo.sh --inner >"$log" 2>&1 || rc=$?
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
	fi
done
rm -f "$log"
echo "demo-soak: $((n - failed)) of $n passed${KEMARI_DEMO_ARGS:+ (with $KEMARI_DEMO_ARGS)}"
[ "$failed" = 0 ]
