#!/usr/bin/env bash
# tests/rerun-crashed.sh judged by itself on made-up suites (make check-run):
#   1. a suite that ran in the emulated VM and whose test crashed its guest,
#      with a log long enough that grep -q stops before the writer ends
#      (CI stop 20: with pipefail, the writer's SIGPIPE made the VM's line
#      look absent, and the crash was taken for one on the host's own KVM):
#      the test is rerun alone and the suite passes;
#   2. the same crash without the VM's line (the host's own KVM): a real
#      failure, nothing rerun;
#   3. a failure without a guest crash: a real failure, nothing rerun.
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
dir=$(mktemp -d /tmp/kemari-rerun-selftest.XXXXXX)
trap 'rm -rf "$dir"' EXIT
cat >"$dir/suite" <<'SUITE'
#!/usr/bin/env bash
# suite VM(0/1) CRASH(0/1) [criterion args]: a made-up Criterion suite.
vm=$1 crash=$2
shift 2
for a in "$@"; do [ "$a" = --filter ] && { echo "[PASS] a::b: (1.0s)"; exit 0; }; done
[ "$vm" = 1 ] && echo "run-kvm: no /dev/kvm on this host: running inside the emulated test VM (QEMU TCG, kvm_amd)"
seq 1 200000
echo "[RUN ] a::b"
[ "$crash" = 1 ] && echo "kemari-run[secondary]: error: guest stopped: triple fault on vCPU 0"
echo "[FAIL] a::b: (1.0s)"
exit 1
SUITE
chmod +x "$dir/suite"
fails=0
expect() { # WANT-RC WANT-LINE ARGS...
	local want=$1 line=$2 rc out
	shift 2
	out=$(env -u KEMARI_EMULATED_VM "$here/rerun-crashed.sh" selftest "$dir/suite" "$@" 2>&1)
	rc=$?
	if [ "$rc" -ne "$want" ] || ! grep -q -- "$line" <<<"$out"; then
		echo "rerun-crashed-selftest: FAIL suite $*: exit $rc (want $want), no line '$line':"
		grep -v '^[0-9]' <<<"$out" | tail -n 8
		fails=$((fails + 1))
	fi
}
expect 0 "CRASH-RERUN: selftest: a::b passed on its rerun" 1 1
expect 1 "crashed on this host's own KVM" 0 1
expect 1 "failed without a guest crash" 1 0
[ $fails -eq 0 ] && echo "rerun-crashed-selftest: 3 of 3 passed"
[ $fails -eq 0 ]
