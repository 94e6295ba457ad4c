#!/usr/bin/env bash
# tests/rerun-crashed.sh judged by itself on made-up suites (make check-run):
#   1. a suite that ran in the emulated VM and whose test crashed its guest,
#      with a log long enough that grep -q stops before the writer ends
#      (CI stop 20: with pipefail, the writer's SIGPIPE made the VM's line
#      look absent, and the crash was taken for one on the host's own KVM):
#      the test is rerun alone and the suite passes;
#   2. the same crash without the VM's line (the host's own KVM): a real
#      failure, nothing rerun;
#   3. a failure without a guest crash: a real failure, nothing rerun;
# and tests/vm/by-test.sh (the emulated VM's one-test-at-a-time runner):
#   4. a test its ledger ($KEMARI_VM_JOB/passed) holds is not run again, a
#      test that passes is added to it, one that fails is not, and the
#      exit status says whether all passed;
#   5. a test KEMARI_VM_LEAVE_OUT names is not run, and a line says so.
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
		echo "runner-selftest: FAIL suite $*: exit $rc (want $want), no line '$line':"
		grep -v '^[0-9]' <<<"$out" | tail -n 8
		fails=$((fails + 1))
	fi
}
expect 0 "CRASH-RERUN: selftest: a::b passed on its rerun" 1 1
expect 1 "crashed on this host's own KVM" 0 1
expect 1 "failed without a guest crash" 1 0

# 4. A suite of two tests, s/x and s/y; s/y fails while $dir/y-fails exists.
cat >"$dir/two" <<'SUITE'
#!/usr/bin/env bash
d=$(dirname "$0")
for a in "$@"; do
	# Criterion's list: drawn in UTF-8 unless the locale is C.
	if [ "$a" = --list ] && [ "${LC_ALL:-}" = C ]; then
		printf 's: 2 tests\n|-- x\n`-- y\n'
		exit 0
	fi
	[ "$a" = --list ] && { printf 's: 2 tests\n├── x\n└── y\n'; exit 0; }
done
t=
while [ $# -gt 0 ]; do [ "$1" = --filter ] && t=$2; shift; done
echo "$t" >>"$d/ran"
echo "[RUN ] ${t/\//::}"
if [ "$t" = s/y ] && [ -e "$d/y-fails" ]; then echo "[FAIL] s::y: (1.0s)"; exit 1; fi
echo "[PASS] ${t/\//::}: (1.0s)"
SUITE
chmod +x "$dir/two"
mkdir "$dir/job"
echo s/x >"$dir/job/passed"
touch "$dir/y-fails"
KEMARI_VM_JOB=$dir/job KEMARI_EMULATED_VM=1 "$here/vm/by-test.sh" selftest "$dir/two" --filter 's/*' >"$dir/out" 2>&1
rc=$?
if [ $rc -ne 1 ] || [ "$(cat "$dir/ran")" != s/y ] || [ "$(cat "$dir/job/passed")" != s/x ]; then
	echo "runner-selftest: FAIL by-test with s/x in its ledger and s/y failing: exit $rc, ran '$(cat "$dir/ran")', ledger '$(cat "$dir/job/passed")'"
	fails=$((fails + 1))
fi
rm -f "$dir/y-fails" "$dir/ran"
KEMARI_VM_JOB=$dir/job KEMARI_EMULATED_VM=1 "$here/vm/by-test.sh" selftest "$dir/two" --filter 's/*' >"$dir/out" 2>&1
rc=$?
if [ $rc -ne 0 ] || [ "$(cat "$dir/ran")" != s/y ] || [ "$(tr '\n' ' ' <"$dir/job/passed")" != "s/x s/y " ]; then
	echo "runner-selftest: FAIL by-test after s/y is fixed: exit $rc, ran '$(cat "$dir/ran")', ledger '$(tr '\n' ' ' <"$dir/job/passed")'"
	fails=$((fails + 1))
fi
# 5. KEMARI_VM_LEAVE_OUT: s/x is not run, and a line says so.
rm -f "$dir/ran" "$dir/job/passed"
KEMARI_VM_JOB=$dir/job KEMARI_EMULATED_VM=1 KEMARI_VM_LEAVE_OUT='s/x' \
	"$here/vm/by-test.sh" selftest "$dir/two" --filter 's/*' >"$dir/out" 2>&1
rc=$?
if [ $rc -ne 0 ] || [ "$(cat "$dir/ran")" != s/y ] ||
	! grep -q "s/x LEFT OUT in the emulated VM" "$dir/out"; then
	echo "runner-selftest: FAIL by-test with s/x left out: exit $rc, ran '$(cat "$dir/ran")'"
	fails=$((fails + 1))
fi
[ $fails -eq 0 ] && echo "runner-selftest: 5 of 5 passed"
[ $fails -eq 0 ]
