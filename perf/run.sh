#!/usr/bin/env bash
# The pause-time benchmark matrix (docs/perf.md): every transport here x
# dirty pages per event x guest RAM, the dirtier guest under replication for
# a fixed number of events; the floor (memcpy of the epoch's bytes + one
# small round trip) measured in the same run; baselines (standalone,
# full-copy, bitmap vs ring, speculation); the kvstore under load,
# standalone vs replicated, as the freestanding guest and as Debian's Linux
# kernel (make linux-guest) with an idle window. Writes $BUILD/perf/:
# pause.json, pause.csv, kvstore.json, linux.json, summary.txt, PNG plots.
#
#   perf/run.sh [--quick] [--events=N] [--transports=tcp,rdma,ofi]
#               [--pages=0,16,256,4096] [--ram=64M,1G,4G] [--variants=...]
#   perf/run.sh --remote-secondary=USER@HOST [--remote-build=DIR] ...
#
# Where /dev/kvm is missing or unusable, it re-runs itself inside the
# emulated test VM (tests/vm/vm.sh), where timings are meaningless.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
B=${BUILD:-build}
case $B in /*) ;; *) B=$ROOT/$B ;; esac

usage() {
	cat <<'EOF'
usage: perf/run.sh [options]

Matrix:
  --quick                reduced matrix: tcp, 64M, 0/256/4096 pages, fewer events
  --events=N             replicated events per cell after warm-up
                         (default 500, quick 200; in the emulated VM 30 / 10)
  --transports=LIST      among tcp,rdma,ofi (default: every one usable here)
  --ofi-providers=LIST   libfabric providers to try (default: fi_info -l)
  --pages=LIST           dirty pages per event (default 0,16,256,4096)
  --ram=LIST             guest RAM sizes (default 64M,1G,4G; quick 64M)
  --variants=LIST        among ring,bitmap,speculate,full-copy,standalone,kv,
                         linux,synth,synth-spec,synth-think (default: all;
                         --quick: all but linux). linux: the kvstore in
                         Debian's kernel (make linux-guest), standalone vs
                         replicated (tcp) under load, then idle; synth: the synthetic
                         guest (kemari-run --hv=synth), always natively, even
                         where the KVM cells run in the emulated VM: the
                         engine and transports without KVM; synth-spec: the
                         same with think time and speculation (tcp);
                         synth-think: the same think time, no speculation
  --event=disk|net       the dirtier's output event (default disk)
  --speculate-us=N       period of the speculate variant (default 200)
  --kv-ms=N              duration of each kvstore load (default 5000; VM 8000)
  --idle-ms=N            linux: the idle window of the replicated guest
                         (default 20000)
  --standalone-events=N  events of the standalone baseline (default 20000; VM 1000)

Two hosts (real RDMA): the primary runs here, the secondary over ssh:
  --remote-secondary=USER@HOST  ssh target that runs the secondary
  --remote-build=DIR     checkout on that host, built at the same commit with
                         the same BUILD (default: this checkout's path)
  --remote-addr=IP       the secondary's address as seen from here, on the
                         network under test (default: HOST)
  --ssh-opts=OPTS        extra ssh options (e.g. "-p 2222")

Other:
  --out=DIR              output directory (default $BUILD/perf)
  --add=DIR              report an earlier run's results (its DIR) with this
                         run's, e.g. the KVM cells of a run that is not
                         repeated; its records are appended
  --vm-mem=MIB --vm-timeout=SECS   the emulated VM's size and time limit
  -h, --help
EOF
}

quick=0 events="" transports="" ofi_providers="" pages="" rams="" variants=""
event=disk speculate_us=200 synth_think_us=2000 kv_ms="" idle_ms=20000 sa_events="" out="" inner=0 vm_jobs=""
add="" remote="" remote_build="" remote_addr="" ssh_opts="" vm_mem="" vm_timeout=""
env_kind=native
args=("$@")
for a in "$@"; do
	case $a in
	--quick) quick=1 ;;
	--events=*) events=${a#*=} ;;
	--transports=*) transports=${a#*=} ;;
	--ofi-providers=*) ofi_providers=${a#*=} ;;
	--pages=*) pages=${a#*=} ;;
	--ram=*) rams=${a#*=} ;;
	--variants=*) variants=${a#*=} ;;
	--event=*) event=${a#*=} ;;
	--speculate-us=*) speculate_us=${a#*=} ;;
	--kv-ms=*) kv_ms=${a#*=} ;;
	--idle-ms=*) idle_ms=${a#*=} ;;
	--standalone-events=*) sa_events=${a#*=} ;;
	--remote-secondary=*) remote=${a#*=} ;;
	--remote-build=*) remote_build=${a#*=} ;;
	--remote-addr=*) remote_addr=${a#*=} ;;
	--ssh-opts=*) ssh_opts=${a#*=} ;;
	--out=*) out=${a#*=} ;;
	--add=*) add=${a#*=} ;;
	--vm-mem=*) vm_mem=${a#*=} ;;
	--vm-timeout=*) vm_timeout=${a#*=} ;;
	--inner) inner=1 ;;
	--vm-jobs=*) vm_jobs=${a#*=} ;;
	-h | --help) usage; exit 0 ;;
	*) echo "perf: unknown option '$a' (see --help)" >&2; exit 2 ;;
	esac
done
out=${out:-$B/perf}
case $out in /*) ;; *) out=$ROOT/$out ;; esac
case $event in disk | net) ;; *) echo "perf: --event=$event: use disk or net" >&2; exit 2 ;; esac

for f in kemari-run kemari-perf kemari-kv guests/dirtier.elf guests/kvstore.elf; do
	[ -e "$B/$f" ] || { echo "perf: $B/$f is missing: run 'make BUILD=${BUILD:-build} all' first (make perf does)" >&2; exit 1; }
done

# Add the VM run's results (SRC) to the native ones (DST), or take them.
merge_results() {
	local src=$1 dst=$2 f
	if [ ! -s "$dst/pause.csv" ]; then
		cp -r "$src/." "$dst/"
		return
	fi
	cat "$src/records.jsonl" >>"$dst/records.jsonl" 2>/dev/null || true
	# By column name: a run of another version may have other columns.
	awk -F, -v OFS=, 'NR == FNR { if (FNR == 1) n = split($0, want, ","); next }
		FNR == 1 { for (i = 1; i <= NF; i++) at[$i] = i; next }
		{ line = ""
		  for (i = 1; i <= n; i++) line = line (i > 1 ? "," : "") (want[i] in at ? $(at[want[i]]) : "")
		  print line }' "$dst/pause.csv" "$src/pause.csv" >>"$dst/pause.csv.add" 2>/dev/null || true
	cat "$dst/pause.csv.add" >>"$dst/pause.csv" 2>/dev/null || true
	rm -f "$dst/pause.csv.add"
	for f in floors.jsonl kvstore.jsonl linux.jsonl skipped.txt; do
		[ -f "$src/$f" ] && cat "$src/$f" >>"$dst/$f"
	done
	[ -f "$src/env.txt" ] && cp "$src/env.txt" "$dst/env-$(sed -n 's/^env=//p' "$src/env.txt").txt"
	[ -d "$src/logs" ] && cp -r "$src/logs/." "$dst/logs/"
	return 0
}

ALL_VARIANTS=ring,bitmap,speculate,full-copy,standalone,kv,linux,synth,synth-spec,synth-think
# --quick leaves out the Linux guest: each of its boots takes a minute or more.
[ $quick = 1 ] && ALL_VARIANTS=${ALL_VARIANTS/,linux/}
# The variants of LIST that do (synth) or do not (kvm) need KVM's absence.
variants_kvm() { echo "$1" | tr ',' '\n' | grep -v '^synth' | paste -sd, || true; }
variants_synth() { echo "$1" | tr ',' '\n' | grep '^synth' | paste -sd, || true; }

kvm_usable() {
	[ "${KEMARI_FORCE_VM:-0}" = 1 ] && return 1
	[ -c /dev/kvm ] && (exec 3<>/dev/kvm) 2>/dev/null
}

# ---- outside the VM: maybe enter it, then report --------------------------
if [ $inner = 0 ]; then
	mkdir -p "$out"
	rm -f "$out"/{pause.json,pause.csv,records.jsonl,kvstore.json,kvstore.jsonl,linux.json,linux.jsonl,summary.txt,skipped.txt,floors.jsonl,env.txt,env-*.txt,*.png}
	rm -rf "$out/logs" "$out/plot"
	rc=0
	if kvm_usable; then
		"$0" "${args[@]}" --inner --out="$out" || rc=$?
	elif [ -n "$remote" ]; then
		echo "perf: /dev/kvm is not usable here, and the two-host mode needs real KVM on both hosts" >&2
		exit 1
	else
		why="no /dev/kvm"
		[ -e /dev/kvm ] && why="/dev/kvm does not open"
		[ "${KEMARI_FORCE_VM:-0}" = 1 ] && why="KEMARI_FORCE_VM=1"
		if [ $quick = 1 ]; then
			vm_mem=${vm_mem:-2048} vm_timeout=${vm_timeout:-3600}
		else
			vm_mem=${vm_mem:-6144} vm_timeout=${vm_timeout:-14400}
		fi
		rc=0
		vm_variants=$(variants_kvm "${variants:-$ALL_VARIANTS}")
		native_variants=$(variants_synth "${variants:-$ALL_VARIANTS}")
		if [ -n "$native_variants" ]; then
			echo "perf: $why on this host: the synthetic-guest cells run natively (real timings"
			echo "perf: of the engine and transports)$([ -n "$vm_variants" ] && echo ", the KVM cells in the emulated test VM")."
			"$0" "${args[@]}" --inner --out="$out" --variants="$native_variants" || rc=$?
		fi
		if [ -n "$vm_variants" ]; then
			echo "perf: $why on this host: running the KVM matrix inside the emulated test VM"
			echo "perf: (QEMU TCG with kvm_amd inside, ${vm_mem} MiB, up to ${vm_timeout} s)."
			echo "perf: NOTE: timings inside the emulated VM are MEANINGLESS in absolute terms"
			echo "perf: (a KVM exit costs ~240 us there); this shows the harness works end to end."
			jobs_dir=$out/.vm
			rm -rf "$jobs_dir"
			mkdir -p "$jobs_dir"
			vrc=0
			KEMARI_VM_JOBS=$jobs_dir KEMARI_VM_KEEP=1 tests/vm/vm.sh run \
				-t "$vm_timeout" -m "$vm_mem" -- \
				env BUILD="$B" "$0" "${args[@]}" --variants="$vm_variants" --inner --vm-jobs="$jobs_dir" || vrc=$?
			job=$(ls -d "$jobs_dir"/job.* 2>/dev/null | head -1)
			if [ -n "$job" ] && [ -d "$job/out" ]; then
				merge_results "$job/out" "$out"
			fi
			if [ $vrc != 0 ]; then
				rc=$vrc
				echo "perf: the run inside the VM ended with status $vrc; reporting what it measured" >&2
				echo "the whole run: ended early inside the emulated VM (status $vrc$([ $vrc = 124 ] && echo ": no result from the VM (the ${vm_timeout} s limit, a crash or a freeze), see ${job:-$jobs_dir}/console.log")); the cells after the last record were not measured" >>"$out/skipped.txt"
			else
				rm -rf "$jobs_dir"
			fi
		fi
	fi
	if [ -n "$add" ]; then
		[ -s "$add/pause.csv" ] || { echo "perf: --add=$add: no pause.csv there" >&2; exit 1; }
		merge_results "$add" "$out"
	fi
	if [ ! -s "$out/pause.csv" ]; then
		echo "perf: no results in $out" >&2
		exit 1
	fi
	"$ROOT/perf/report.sh" "$out"
	exit $rc
fi

# ---- the measurements ------------------------------------------------------
if [ -n "$vm_jobs" ]; then
	# Inside the VM the host's tree is read-only; the job directory is the
	# one writable share (vm.sh keeps it for us with KEMARI_VM_KEEP=1).
	job=$(ls -d "$vm_jobs"/job.* | head -1)
	out=$job/out
	env_kind=vm
fi
[ -n "$remote" ] && env_kind=remote
mkdir -p "$out/logs"
R=$out
P="$B/kemari-perf"
K="$B/kemari-run"

slow=0
[ $env_kind = vm ] && slow=1
if [ $quick = 1 ]; then
	: "${events:=$([ $slow = 1 ] && echo 10 || echo 200)}"
	: "${transports:=tcp}"
	: "${pages:=0,256,4096}"
	: "${rams:=64M}"
else
	: "${events:=$([ $slow = 1 ] && echo 30 || echo 500)}"
	: "${pages:=0,16,256,4096}"
	: "${rams:=64M,1G,4G}"
fi
: "${variants:=$ALL_VARIANTS}"
# The synthetic guest measures the host; in the emulated VM it would not.
if [ $env_kind = vm ]; then
	variants=$(variants_kvm "$variants")
fi
: "${kv_ms:=$([ $slow = 1 ] && echo 8000 || echo 5000)}"
: "${sa_events:=$([ $slow = 1 ] && echo 1000 || echo 20000)}"
warmup=$((events / 20))
[ $warmup -lt 2 ] && warmup=2
if [ $slow = 1 ]; then
	hb="--heartbeat-ms=50 --heartbeat-timeout-ms=60000"
	hb_full="--heartbeat-ms=50 --heartbeat-timeout-ms=600000"
	cell_timeout=0 # computed per cell
else
	# Only failure detection: no effect on the pause, but a full-RAM copy
	# per epoch must not look like a dead peer.
	hb="--heartbeat-timeout-ms=5000"
	hb_full="--heartbeat-timeout-ms=120000"
	cell_timeout=900
fi
port=27400
host=127.0.0.1
remote_build=${remote_build:-$ROOT}
if [ -n "$remote" ]; then
	remote_addr=${remote_addr:-${remote#*@}}
	# The same absolute BUILD path relative to the remote checkout.
	RB=$remote_build/${B#"$ROOT"/}
fi

has() { case ",$1," in *",$2,"*) return 0 ;; esac; return 1; }
kvm_cells=0
for v in ring bitmap speculate full-copy standalone kv; do has "$variants" $v && kvm_cells=1; done
now_us() { echo $(($(date +%s%N) / 1000)); }
note() { echo "perf: $*"; }
skip() {
	echo "perf: SKIPPED $1: $2"
	printf '%s: %s\n' "$1" "$2" >>"$R/skipped.txt"
}
to_mib() {
	local v=${1^^}
	case $v in
	*G) echo $((${v%G} * 1024)) ;;
	*M) echo $((${v%M})) ;;
	*K) echo $((${v%K} / 1024)) ;;
	*) echo $((v / 1048576)) ;;
	esac
}
avail_mib() { awk '/^MemAvailable:/{print int($2/1024)}' /proc/meminfo; }

{
	echo "env=$env_kind"
	echo "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
	echo "kernel=$(uname -r)"
	echo "cpu=$(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo) x $(nproc)"
	echo "mem_mib=$(awk '/^MemTotal:/{print int($2/1024)}' /proc/meminfo)"
	echo "commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
	echo "events=$events warmup=$warmup pages=$pages ram=$rams quick=$quick event=$event"
	echo "synth_think_us=$synth_think_us"
	[ -n "$remote" ] && echo "remote=$remote addr=$remote_addr build=$RB"
} >"$R/env.txt"
"$P" csv-header >"$R/pause.csv"
: >"$R/records.jsonl"
: >"$R/floors.jsonl"
: >"$R/kvstore.jsonl"
: >"$R/linux.jsonl"

# ---- remote helpers (two-host mode) ------------------------------------------
# The remote process writes its pid so that cleanup kills exactly it.
rsh() { ssh -o BatchMode=yes $ssh_opts "$remote" "$@"; }
remote_start() { # NAME CMD... : run in the background on the remote host
	local name=$1
	shift
	rsh "cd $(printf %q "$remote_build") && echo \$\$ >/tmp/kemari-perf.$name.pid && exec $(printf '%q ' "$@")" &
}
remote_stop() {
	rsh "kill \$(cat /tmp/kemari-perf.$1.pid) 2>/dev/null; rm -f /tmp/kemari-perf.$1.pid" 2>/dev/null || true
}

pids=()
netns="" # the Linux cells' network namespace while it exists
cleanup() {
	for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
	if [ -n "$netns" ]; then ip netns del "$netns" 2>/dev/null || true; fi
	if [ -n "$remote" ]; then
		remote_stop secondary
		remote_stop floor
		rsh "rm -f /tmp/kemari-perf.auth.key" 2>/dev/null || true
	fi
}
trap cleanup EXIT

# Stop pid: TERM, then KILL; never block on a process that will not die
# (nested KVM inside the emulated VM can hang in the kernel): leave it.
stop_pid() {
	local pid=$1 i
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < 100; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
	for ((i = 0; i < 100; i++)); do
		if ! kill -0 "$pid" 2>/dev/null; then
			wait "$pid" 2>/dev/null || true
			return 0
		fi
		sleep 0.1
	done
	note "pid $pid does not die even on SIGKILL (stuck in the kernel): left behind"
}

# Give pid up to secs to end by itself, then stop it. Its status, or 124.
wait_for() {
	local pid=$1 secs=$2 i
	for ((i = 0; i < secs * 10; i++)); do
		if ! kill -0 "$pid" 2>/dev/null; then
			wait "$pid" 2>/dev/null
			return
		fi
		sleep 0.1
	done
	stop_pid "$pid"
	return 124
}

# Run CMD for at most secs seconds: its status, or 124 when it was stopped.
run_bounded() {
	local secs=$1
	shift
	"$@" &
	pids+=($!)
	wait_for $! "$secs"
}

# ---- what exists here -----------------------------------------------------
compiled=$("$K" --list-transports | tr '\n' ',')
want=${transports:-tcp,rdma,ofi}
rdma_host() {
	local nd
	nd=$(rdma link show 2>/dev/null | sed -n 's/.*netdev \([^ ]*\).*/\1/p' | head -1)
	[ -n "$nd" ] && ip -4 -o addr show dev "$nd" 2>/dev/null | awk '{split($4,a,"/"); print a[1]; exit}'
}
rdma_devices() { ibv_devices 2>/dev/null | awk 'NR>2 && NF {print $1}'; }
xlabels=() # transport label: tcp, rdma, ofi:PROVIDER
declare -A xhost xrtt
for t in ${want//,/ }; do
	if ! has "$compiled" "$t"; then
		if [ -d "transports/$t" ]; then
			skip "transport $t" "not compiled into this build ($K --list-transports: ${compiled%,}): its library was not found at build time; make deps, then rebuild"
		else
			skip "transport $t" "this checkout has no transports/$t/ ($K --list-transports: ${compiled%,})"
		fi
		continue
	fi
	case $t in
	tcp)
		xlabels+=(tcp)
		xhost[tcp]=$host
		# The same link encrypted (--tls): its own row, "tcp:tls".
		if grep -q -- '--tls' < <("$K" --help 2>&1); then
			xlabels+=(tcp:tls)
			xhost[tcp:tls]=$host
		fi
		;;
	rdma)
		if [ -z "$(rdma_devices)" ]; then
			skip "transport rdma" "no RDMA device (ibv_devices lists none)"
			continue
		fi
		xlabels+=(rdma)
		xhost[rdma]=$(rdma_host)
		xhost[rdma]=${xhost[rdma]:-$host}
		;;
	ofi)
		provs=${ofi_providers:-$(fi_info -l 2>/dev/null | sed -n 's/^\([A-Za-z0-9_;]*\):$/\1/p' | tr '\n' ',')}
		[ -n "$provs" ] || skip "transport ofi" "fi_info -l lists no provider"
		# Utility and hook providers (ofi_rxm, ofi_hook_perf, ...) layer
		# over a core one: not a transport of their own. One line for all.
		if [ -z "$ofi_providers" ]; then
			util=$(echo "${provs//,/ }" | tr ' ' '\n' | grep '^ofi_' | paste -sd, || true)
			[ -n "$util" ] && skip "ofi providers ${util//,/, }" "utility/hook providers that layer over a core provider (--ofi-providers= to try one anyway)"
			provs=$(echo "${provs//,/ }" | tr ' ' '\n' | grep -v '^ofi_' | paste -sd, || true)
		fi
		for pv in ${provs//,/ }; do
			xlabels+=("ofi:$pv")
			case $pv in *verbs*) xhost["ofi:$pv"]=$(rdma_host) ;; esac
			xhost["ofi:$pv"]=${xhost["ofi:$pv"]:-$host}
		done
		;;
	*) skip "transport $t" "unknown transport" ;;
	esac
done
[ -n "$remote" ] && for l in "${xlabels[@]}"; do xhost[$l]=$remote_addr; done

xname() { echo "${1%%:*}"; }
xprov() { case $1 in *:*) echo "--provider=${1#*:}" ;; esac; }
# kemari-run's options for a label: tcp:tls is tcp with --tls (the floor
# stays plain tcp's: the row shows what encryption adds to it).
xrun() { case $1 in tcp:tls) echo "--tls" ;; *) xprov "$1" ;; esac; }

# The round trip of each transport, once (the memcpy part of the floor is
# measured per cell, for the bytes that cell's epochs actually carried).
# Whether an ofi provider is usable is decided here: by trying it.
usable=()
for l in "${xlabels[@]}"; do
	port=$((port + 1))
	addr=${xhost[$l]}:$port
	log=$R/logs/floor-${l//[:;]/_}.log
	if [ -n "$remote" ]; then
		remote_start floor "$RB/kemari-perf" floor --transport="$(xname "$l")" $(xprov "$l") --listen="$addr" >"$log.remote" 2>&1
		line=$(timeout 120 "$P" floor --transport="$(xname "$l")" $(xprov "$l") --peer="$addr" --bytes=0 2>"$log") || line=""
		remote_stop floor
	else
		line=$(timeout 120 "$P" floor --transport="$(xname "$l")" $(xprov "$l") --addr="$addr" --bytes=0 2>"$log") || line=""
	fi
	rtt=$(echo "$line" | sed -n 's/.*"rtt_us":\([0-9.]*\).*/\1/p')
	if [ -z "$rtt" ]; then
		skip "transport $l" "the round-trip measurement failed: $(tail -1 "$log" 2>/dev/null)"
		continue
	fi
	echo "$line" >>"$R/floors.jsonl"
	xrtt[$l]=$rtt
	usable+=("$l")
	note "floor round trip over $l: $rtt us (median, small message, both ends $([ -n "$remote" ] && echo "here and on $remote" || echo "in one process"))"
done
if [ ${#usable[@]} = 0 ]; then
	echo "perf: no usable transport" >&2
	exit 1
fi

# Dirty ring or bitmap: the main variant is the ring where KVM has it.
main_track=ring
work=$(mktemp -d /tmp/kemari-perf.XXXXXX)
trap 'cleanup; rm -rf "$work"' EXIT
# One key for every replicated pair of the run: rdma and ofi-verbs
# secondaries listen on an RDMA interface's address, a remote one on
# --remote-addr, neither loopback, where kemari-run wants a key (the
# exchange is once per connection: no epoch pays for it).
"$K" --gen-key="$work/auth.key" >/dev/null
auth=(--auth-key="$work/auth.key")
rauth=("${auth[@]}")
if [ -n "$remote" ]; then
	rsh "umask 077 && rm -f /tmp/kemari-perf.auth.key && cat >/tmp/kemari-perf.auth.key" <"$work/auth.key"
	rauth=(--auth-key=/tmp/kemari-perf.auth.key)
	# The two hosts' disks are not one shared disk: no fence record to
	# agree on (--fence=none on both sides).
	auth+=(--fence=none)
	rauth+=(--fence=none)
	# A secondary never creates its disk: the remote one is made here.
	rsh "truncate -s 1M /tmp/kemari-perf-disk.img"
fi
if [ $kvm_cells = 1 ] && ! "$K" -q --guest="$B/guests/dirtier.elf" --mem=64M --disk="$work/probe.img" \
	--disk-size=1M --dirty-track=ring --guest-arg=rounds=1 >"$R/logs/ring-probe.log" 2>&1; then
	main_track=bitmap
	skip "variant ring" "this KVM has no dirty ring: $(grep -m1 error "$R/logs/ring-probe.log"); the main matrix uses the bitmap"
fi
rm -f "$work/probe.img"

# ---- one replicated cell -----------------------------------------------------
ncell=0
# run_cell LABEL VARIANT RAM PAGES EVENTS [kemari-run options...]
run_cell() {
	local l=$1 variant=$2 ram=$3 k=$4 n=$5
	shift 5
	local mib ws rounds name cw addr rc=0 t0 t1 hbo=$hb spid stp ppid
	mib=$(to_mib "$ram")
	name="${l//[:;]/_}-$variant-${ram}-${k}p"
	ncell=$((ncell + 1))
	# A one-sided secondary's receive buffers are two banks of RAM.
	local banks=1
	case $l in rdma* | ofi*) banks=2 ;; esac
	local need=$(((2 + banks) * mib + 512))
	[ -n "$remote" ] && need=$((mib + 512))
	if [ "$(avail_mib)" -lt "$need" ]; then
		skip "$l $variant $ram ${k}p" "needs ~$need MiB here (primary RAM + secondary replica + receive buffers = $((2 + banks)) x $mib MiB, plus margin), only $(avail_mib) MiB available$([ $env_kind = vm ] && echo " in the emulated VM")"
		return 0
	fi
	ws=$((k * 4))
	[ $ws -lt 1024 ] && ws=1024
	rounds=$((n + warmup))
	cw=$work/$name
	mkdir -p "$cw"
	port=$((port + 1))
	addr=${xhost[$l]}:$port
	case $variant in full-copy) hbo=$hb_full ;; esac
	local common=(--guest="$B/guests/dirtier.elf" --mem="$ram" --disk-size=1M $hbo --no-progress)
	local gargs=(--guest-arg=pages="$k" --guest-arg=ws="$ws" --guest-arg=rounds="$rounds")
	local rguest=(--guest="${RB:-}/guests/dirtier.elf")
	case $variant in
	synth*)
		# No VM: the output event is a write into the --disk file.
		common=(--hv=synth --mem="$ram" $hbo --no-progress)
		rguest=(--hv=synth)
		;;
	*)
		gargs+=(--guest-arg=event="$event")
		# A net event needs a net device: datagrams go to the discard port.
		[ $event = net ] && common+=(--net=udp:127.0.0.1:$((port + 10000)))
		;;
	esac
	printf '[%2d] %-10s %-9s %5s %5sp %4s events: ' $ncell "$l" "$variant" "$ram" "$k" "$n"
	mkfifo "$cw/stats.fifo"
	"$P" stamp --in="$cw/stats.fifo" --out="$cw/stats.json" 2>"$cw/stamp.log" &
	stp=$!
	pids+=($stp)
	if [ -n "$remote" ]; then
		remote_start secondary "$RB/kemari-run" --role=secondary --transport="$(xname "$l")" $(xrun "$l") \
			--listen="$addr" "${rauth[@]}" "${rguest[@]}" --mem="$ram" --disk=/tmp/kemari-perf-disk.img \
			--disk-size=1M $hbo --no-progress >"$cw/sec.log" 2>&1
	else
		"$K" --role=secondary --transport="$(xname "$l")" $(xrun "$l") --listen="$addr" "${auth[@]}" \
			"${common[@]}" --disk="$cw/disk.img" >"$cw/sec.log" 2>&1 &
	fi
	spid=$!
	pids+=($spid)
	t0=$(now_us)
	local limit=$cell_timeout
	# In the emulated VM: a base, the initial sync, the epochs.
	[ $slow = 1 ] && limit=$((240 + mib / 3 + n * (2 + k / 256)))
	case $variant in full-copy) limit=$((limit + n * mib / 4)) ;; esac
	run_bounded $limit "$K" --role=primary --transport="$(xname "$l")" $(xrun "$l") \
		--peer="$addr" "${auth[@]}" --connect-timeout-ms=60000 "${common[@]}" --disk="$cw/disk.img" \
		--stats="$cw/stats.fifo" "${gargs[@]}" "$@" >"$cw/pri.log" 2>&1 || rc=$?
	[ $rc = 124 ] && echo "kemari-perf: the primary did not finish within $limit s: stopped" >>"$cw/pri.log"
	t1=$(now_us)
	wait_for $spid 60 || true
	[ -n "$remote" ] && remote_stop secondary
	wait_for $stp 10 || true
	cp "$cw/pri.log" "$R/logs/$name.primary.log"
	cp "$cw/sec.log" "$R/logs/$name.secondary.log"
	[ -s "$cw/stats.json" ] && cp "$cw/stats.json" "$R/logs/$name.stats.json"
	if [ $rc != 0 ] || [ ! -s "$cw/stats.json" ]; then
		echo "FAILED (primary status $rc)"
		skip "$l $variant $ram ${k}p" "the run failed: $(grep -m1 -i 'error\|lost' "$cw/pri.log" || tail -1 "$cw/pri.log")"
		rm -rf "$cw"
		return 0
	fi
	if grep -q "secondary lost" "$cw/pri.log"; then
		note "warning: $name: the secondary was lost mid-run; later epochs were unprotected (see logs/$name.primary.log)"
	fi
	# Synthetic-guest cells, here: the transport alone carrying the same
	# bytes (push, flush, COMMIT, ACK), so the engine's own share shows.
	local wire="" b line
	case $variant in synth*)
		if [ -z "$remote" ]; then
			b=$(sed -n 's/.*"bytes":\([0-9]*\).*/\1/p' "$cw/stats.json" | tail -n +$((warmup + 1)) |
				sort -n | awk '{a[NR] = $1} END {print NR ? a[int((NR + 1) / 2)] : 0}')
			port=$((port + 1))
			line=$(timeout 120 "$P" floor --transport="$(xname "$l")" $(xprov "$l") \
				--addr="${xhost[$l]}:$port" --bytes="${b:-0}" --wire 2>>"$cw/wire.log") || line=""
			wire=$(echo "$line" | sed -n 's/.*"wire_us":\([0-9.]*\).*/\1/p')
			[ -n "$wire" ] || note "warning: $name: the bare-transport measurement failed: $(tail -1 "$cw/wire.log" 2>/dev/null)"
		fi
		;;
	esac
	"$P" summarize --stats="$cw/stats.json" --transport="$(xname "$l")" $(xprov "$l") \
		--variant="$variant" --env=$env_kind --ram-mib="$mib" --pages="$k" --warmup=$warmup \
		--expect="$n" --rtt-us="${xrtt[$l]}" --wall-us=$((t1 - t0)) ${wire:+--wire-us=$wire} \
		${sa_eps[$ram/$k]:+--standalone-eps=${sa_eps[$ram/$k]}} \
		--json="$R/records.jsonl" --csv="$R/pause.csv" || skip "$l $variant $ram ${k}p" "summarize failed"
	rm -rf "$cw"
}

# ---- the standalone baseline: events/s without replication -------------------
declare -A sa_eps
run_standalone() {
	local ram=$1 k=$2 mib ws t0 t1 d
	mib=$(to_mib "$ram")
	ncell=$((ncell + 1))
	if [ "$(avail_mib)" -lt $((mib + 512)) ]; then
		skip "standalone $ram ${k}p" "needs ~$((mib + 512)) MiB, only $(avail_mib) MiB available"
		return 0
	fi
	ws=$((k * 4))
	[ $ws -lt 1024 ] && ws=1024
	printf '[%2d] %-10s %-9s %5s %5sp %4s events: ' $ncell none standalone "$ram" "$k" "$sa_events"
	local g=(-q --guest="$B/guests/dirtier.elf" --mem="$ram" --disk="$work/sa.img" --disk-size=1M
		--dirty-track=bitmap --guest-arg=pages="$k" --guest-arg=ws="$ws" --guest-arg=event="$event")
	port=$((port + 1))
	[ $event = net ] && g+=(--net=udp:127.0.0.1:$((port + 10000)))
	# 1 + N events against 1 event (twice, the faster counts; after an
	# untimed run that warms the caches): the difference is N events
	# without the boot and teardown every run pays. N grows tenfold
	# (up to 200000) until the N events take at least 0.2 s.
	local log=$R/logs/standalone-$ram-${k}p.log ts r n=$sa_events
	: >"$log"
	while :; do
		ts=()
		for r in 1 1 $((n + 1)) 1; do
			t0=$(now_us)
			if ! run_bounded $((120 + n / 20)) "$K" "${g[@]}" --guest-arg=rounds=$r >>"$log" 2>&1; then
				echo FAILED
				skip "standalone $ram ${k}p" "$(tail -1 "$log")"
				return 0
			fi
			ts+=($(($(now_us) - t0)))
		done
		t1=${ts[1]}
		[ "${ts[3]}" -lt "$t1" ] && t1=${ts[3]}
		d=$((ts[2] - t1))
		[ $d -ge 200000 ] || [ $n -ge 200000 ] && break
		n=$((n * 10))
		printf '%s.. ' $n
	done
	rm -f "$work/sa.img"
	if [ $d -le 0 ]; then
		echo "too fast to tell apart from the boot"
		skip "standalone $ram ${k}p" "$n events took no measurable time beyond a boot"
		return 0
	fi
	sa_eps[$ram/$k]=$(awk -v n="$n" -v d="$d" 'BEGIN{printf "%.1f", n * 1e6 / d}')
	"$P" summarize --transport=none --variant=standalone --env=$env_kind --ram-mib="$mib" \
		--pages="$k" --events="$n" --events-per-s="${sa_eps[$ram/$k]}" \
		--json="$R/records.jsonl" --csv="$R/pause.csv"
}

# ---- the matrix ----------------------------------------------------------------
ram_list=(${rams//,/ })
page_list=(${pages//,/ })
spec_ok() { [ $slow = 0 ] || [ "$(to_mib "$1")" -le 64 ]; }
for ram in "${ram_list[@]}"; do
	for k in "${page_list[@]}"; do
		has "$variants" standalone && run_standalone "$ram" "$k"
		for l in "${usable[@]}"; do
			if has "$variants" ring || [ $main_track = bitmap ]; then
				run_cell "$l" $main_track "$ram" "$k" "$events" --dirty-track=$main_track
			fi
		done
		# Baselines over tcp (the transport every machine has).
		if [ $main_track = ring ] && has "$variants" bitmap; then
			run_cell tcp bitmap "$ram" "$k" "$events" --dirty-track=bitmap
		fi
		# The synthetic guest (natively): the engine and each transport
		# without KVM; with think time and speculation over tcp.
		if has "$variants" synth; then
			for l in "${usable[@]}"; do
				run_cell "$l" synth "$ram" "$k" "$events"
			done
		fi
		# ... and with the same think time without speculation: the fair
		# baseline of synth-spec (an idle guest changes the pause too).
		if has "$variants" synth-think && [ "$k" -gt 0 ]; then
			run_cell tcp synth-think "$ram" "$k" "$events" --guest-arg=think_us=$synth_think_us
		fi
		if has "$variants" synth-spec && [ "$k" -gt 0 ]; then
			run_cell tcp synth-spec "$ram" "$k" "$events" \
				--guest-arg=think_us=$synth_think_us --speculate-us="$speculate_us"
		fi
		if has "$variants" speculate; then
			if spec_ok "$ram"; then
				run_cell tcp speculate "$ram" "$k" "$events" --dirty-track=$main_track --speculate-us="$speculate_us"
			else
				skip "tcp speculate $ram ${k}p" "only at 64M in the emulated VM (each larger cell costs minutes of initial sync there)"
			fi
		fi
	done
	# Naive checkpointing: all of RAM at every event, once per RAM size.
	if has "$variants" full-copy; then
		mib=$(to_mib "$ram")
		fk=${page_list[$((${#page_list[@]} / 2))]}
		if [ $slow = 1 ] && [ "$mib" -gt 64 ]; then
			skip "tcp full-copy $ram" "a copy of all $mib MiB per epoch takes minutes per epoch in the emulated VM"
		else
			fn=$events
			[ $fn -gt 50 ] && fn=50
			[ "$mib" -ge 1024 ] && [ $fn -gt 10 ] && fn=10
			[ $slow = 1 ] && fn=5
			run_cell tcp full-copy "$ram" "$fk" "$fn" --dirty-track=$main_track --full-copy
		fi
	fi
done
# The goal "64 dirty pages on a 4G guest <= 1.2 x the same on 64M" needs
# those two cells: added when the pages list lacks 64, at the smallest RAM
# and the largest one that fits in memory here.
if [ $quick = 0 ] && ! has "$pages" 64 && [ ${#ram_list[@]} -gt 1 ] &&
	{ has "$variants" ring || has "$variants" synth; }; then
	big=""
	for ram in "${ram_list[@]}"; do
		[ "$(avail_mib)" -ge $((3 * $(to_mib "$ram") + 512)) ] && big=$ram
	done
	big_want=${ram_list[${#ram_list[@]} - 1]}
	if [ "$big" != "$big_want" ]; then
		skip "tcp $main_track $big_want 64p" "too little memory here (see above); the 64-page comparison uses ${big:-no} larger guest instead"
	fi
	if [ -n "$big" ] && [ "$big" != "${ram_list[0]}" ]; then
		for r in "${ram_list[0]}" "$big"; do
			has "$variants" ring && run_cell tcp $main_track "$r" 64 "$events" --dirty-track=$main_track
			has "$variants" synth && run_cell tcp synth "$r" 64 "$events"
		done
	fi
fi

# ---- kvstore under load: standalone vs replicated over tcp -----------------------
kv_wait() { # SERVER PID
	local i
	for ((i = 0; i < 600; i++)); do
		"$B/kemari-kv" --server="$1" --timeout-ms=300 PING >/dev/null 2>&1 && return 0
		kill -0 "$2" 2>/dev/null || return 1
		sleep 0.2
	done
	return 1
}
kv_record() { # MODE TRANSPORT LOADOUT RC [GUEST [EXTRA_JSON_FIELDS]]
	local f=$3 guest=${5:-kvstore} acked p50 p99 max lost twice resends
	acked=$(sed -n 's/^acknowledged \([0-9]*\) updates.*/\1/p' "$f")
	lost=$(sed -n 's/.*; lost \([0-9]*\);.*/\1/p' "$f")
	twice=$(sed -n 's/.*applied twice \([0-9]*\);.*/\1/p' "$f")
	p50=$(sed -n 's/^latency p50 \([0-9]*\) us.*/\1/p' "$f")
	p99=$(sed -n 's/^latency .*p99 \([0-9]*\) us.*/\1/p' "$f")
	max=$(sed -n 's/^latency .*max \([0-9]*\) us.*/\1/p' "$f")
	resends=$(sed -n 's/^latency .*; resends \([0-9]*\).*/\1/p' "$f")
	if [ -z "$acked" ] || [ -z "$p50" ]; then
		echo FAILED
		skip "$([ "$guest" = linux ] && echo "linux ")kvstore $1" "the load did not report: $(tail -1 "$f")"
		return 0
	fi
	local rps
	rps=$(awk -v a="$acked" -v d="$kv_ms" 'BEGIN{printf "%.1f", a * 1000 / d}')
	printf '{"guest":"%s","mode":"%s","transport":%s,"env":"%s","clients":4,"keys":8,"duration_ms":%s,"acked":%s,"requests_per_s":%s,"p50_us":%s,"p99_us":%s,"max_us":%s,"lost":%s,"applied_twice":%s,"resends":%s,"consistent":%s%s}\n' \
		"$guest" "$1" "$([ "$2" = none ] && echo null || echo "\"$2\"")" $env_kind "$kv_ms" "$acked" "$rps" "$p50" "$p99" \
		"${max:-null}" "${lost:-null}" "${twice:-null}" "${resends:-null}" "$([ "$4" = 0 ] && echo true || echo false)" "${6:-}" >>"$R/kvstore.jsonl"
	echo "$acked requests in $kv_ms ms: $rps requests/s, latency p50 $p50 us, p99 $p99 us, ${resends:-?} resends"
}
kv_measure() { # MODE TRANSPORT PID LOG: wait until it serves, load it, record
	local rc=0
	if kv_wait $svc "$3"; then
		run_bounded $((kv_ms / 1000 + 180)) "$B/kemari-kv" "${kvload[@]}" >"$work/kv-$1.out" 2>&1 || rc=$?
		kv_record "$1" "$2" "$work/kv-$1.out" $rc
	else
		echo FAILED
		skip "kvstore $1" "the kvstore never answered: $(tail -1 "$4")"
	fi
}
if has "$variants" kv; then
	ncell=$((ncell + 1))
	port=$((port + 1))
	svc=127.0.0.1:$port
	kvg=(--guest="$B/guests/kvstore.elf" --mem=64M --disk-size=16M --net=udp:$svc --no-progress)
	kvload=(--server=$svc --timeout-ms=60000 load --clients=4 --keys=8 --duration-ms="$kv_ms")
	printf '[%2d] kvstore    standalone     64M  load %s ms: ' $ncell "$kv_ms"
	"$K" "${kvg[@]}" --disk="$work/kv-sa.img" >"$R/logs/kv-standalone.log" 2>&1 &
	kp=$!
	pids+=($kp)
	kv_measure standalone none $kp "$R/logs/kv-standalone.log"
	stop_pid $kp

	ncell=$((ncell + 1))
	port=$((port + 1))
	peer=${remote_addr:-127.0.0.1}:$port
	printf '[%2d] kvstore    replicated tcp 64M load %s ms: ' $ncell "$kv_ms"
	if [ -n "$remote" ]; then
		remote_start secondary "$RB/kemari-run" --role=secondary --transport=tcp --listen="$peer" "${rauth[@]}" \
			--guest="$RB/guests/kvstore.elf" --mem=64M --disk=/tmp/kemari-perf-kv.img --disk-size=16M \
			--net=udp:$svc --no-progress $hb >"$R/logs/kv-secondary.log" 2>&1
	else
		"$K" --role=secondary --transport=tcp --listen="$peer" "${auth[@]}" "${kvg[@]}" $hb \
			--disk="$work/kv-rep.img" >"$R/logs/kv-secondary.log" 2>&1 &
	fi
	ks=$!
	pids+=($ks)
	"$K" --role=primary --transport=tcp --peer="$peer" "${auth[@]}" --connect-timeout-ms=60000 "${kvg[@]}" $hb \
		--disk="$work/kv-rep.img" --stats="$R/logs/kv-replicated.stats.json" >"$R/logs/kv-primary.log" 2>&1 &
	kp=$!
	pids+=($kp)
	kv_measure replicated tcp $kp "$R/logs/kv-primary.log"
	stop_pid $kp # SIGTERM: an orderly stop, BYE to the secondary
	wait_for $ks 60 || true
	[ -n "$remote" ] && remote_stop secondary
fi

# ---- the Linux guest: Debian's kernel running kemari-kvstore (make linux-guest) ----
# The same load against the Linux image, standalone and replicated over tcp;
# in the replicated run first an idle window (no client) for the pages an
# idle kernel dirties per epoch and the epoch rate, then the load with the
# pause and its breakdown over the epochs the load caused. The VMMs and the
# client run in a network namespace of their own: a bridge with
# 169.254.10.1/24, the guest at .2 behind the VMM's TAP (the secondary's TAP
# on the same bridge delivers nothing until a takeover); nothing on the
# host's network changes, and the namespace goes at the end.
LX_GUEST=169.254.10.2
LX_MIB=128
lx_svc=$LX_GUEST:7500
NS=()
lx_netns_up() {
	local ns=kemari-perf-$$
	ip netns add "$ns" >"$R/logs/linux-netns.log" 2>&1 || return 1
	netns=$ns
	NS=(ip netns exec "$netns")
	{ "${NS[@]}" ip link set lo up &&
		"${NS[@]}" ip link add kmrbr0 type bridge &&
		"${NS[@]}" ip addr add 169.254.10.1/24 dev kmrbr0 &&
		"${NS[@]}" ip link set kmrbr0 up; } >>"$R/logs/linux-netns.log" 2>&1
}
lx_netns_down() {
	ip netns del "$netns" 2>/dev/null || true
	netns=""
}
lx_ready() { # PID CONSOLE SECS: the image's ready line, then a PING answer
	local end=$(($(now_us) + $3 * 1000000))
	while [ "$(now_us)" -lt $end ]; do
		if grep -q "kemari-guest: ready" "$2" 2>/dev/null &&
			"${NS[@]}" "$B/kemari-kv" --server=$lx_svc --timeout-ms=200 PING >/dev/null 2>&1; then
			return 0
		fi
		kill -0 "$1" 2>/dev/null || return 1
		sleep 0.25
	done
	return 1
}
lx_why() { # LOG CONSOLE: one line on why a guest did not serve
	local l
	l=$(grep -m1 -i 'error\|lost' "$1" 2>/dev/null || true)
	[ -n "$l" ] || l="no error from the VMM; console: $(tail -1 "$2" 2>/dev/null)"
	echo "$l"
}
lx_lines() { wc -l <"$1" 2>/dev/null || echo 0; }
lx_q() { # FILE FIELD Q: nearest-rank quantile of a --stats field, or null
	sed -n "s/.*\"$2\":\([0-9]*\).*/\1/p" "$1" | sort -n | awk -v q="$3" '
		{ a[NR] = $1 }
		END { if (!NR) { print "null"; exit }
		      i = int(q * NR); if (i < q * NR) i++; if (i < 1) i = 1; print a[i] }'
}
# lx_window PHASE STATS FROM TO MS: the epochs FROM+1..TO of a --stats file
# (the lines written during a window of MS ms) as one linux.jsonl record.
lx_window() {
	local f=$work/lx-$1.stats n eps
	sed -n "$(($3 + 1)),$4p" "$2" >"$f"
	n=$(grep -c . "$f" || true)
	eps=$(awk -v n="$n" -v ms="$5" 'BEGIN{printf "%.2f", (ms > 0 ? n * 1000 / ms : 0)}')
	printf '{"guest":"linux","phase":"%s","transport":"tcp","env":"%s","mem_mib":%s,"duration_ms":%s,"epochs":%s,"epochs_per_s":%s,"dirty_pages_p50":%s,"dirty_pages_p90":%s,"bytes_p50":%s,"pause_p50_us":%s,"pause_p99_us":%s,"harvest_us":%s,"state_us":%s,"push_us":%s,"commit_ack_us":%s}\n' \
		"$1" $env_kind $LX_MIB "$5" "$n" "$eps" \
		"$(lx_q "$f" dirty_pages 0.5)" "$(lx_q "$f" dirty_pages 0.9)" "$(lx_q "$f" bytes 0.5)" \
		"$(lx_q "$f" pause_us 0.5)" "$(lx_q "$f" pause_us 0.99)" "$(lx_q "$f" harvest_us 0.5)" \
		"$(lx_q "$f" state_us 0.5)" "$(lx_q "$f" push_us 0.5)" "$(lx_q "$f" commit_ack_us 0.5)" >>"$R/linux.jsonl"
	echo "$n epochs in $5 ms ($eps/s), dirty pages/epoch p50 $(lx_q "$f" dirty_pages 0.5) p90 $(lx_q "$f" dirty_pages 0.9), pause p50 $(lx_q "$f" pause_us 0.5) us p99 $(lx_q "$f" pause_us 0.99) us"
}
lx_cells() {
	local G=$B/guests/linux lg=$R/logs/linux boot_s t0 t1 n0 n1 rc ready kp ks peer
	boot_s=$([ $slow = 1 ] && echo 900 || echo 180)
	local lxg=(--kernel="$G/vmlinuz" --initrd="$G/initrd.img"
		--append="console=ttyS0 acpi=off quiet kemari.ip=$LX_GUEST/24"
		--mem="${LX_MIB}M" --disk-size=32M --no-progress)
	local lxload=(--server="$lx_svc" --timeout-ms=60000 load --clients=4 --keys=8 --duration-ms="$kv_ms")

	ncell=$((ncell + 1))
	printf '[%2d] linux      standalone    %sM  load %s ms: ' $ncell $LX_MIB "$kv_ms"
	t0=$(now_us)
	"${NS[@]}" "$K" "${lxg[@]}" --net=tap:kmrpa0,bridge=kmrbr0 --disk="$work/lx-sa.img" \
		--console-log="$lg-standalone.console" >"$lg-standalone.log" 2>&1 &
	kp=$!
	pids+=("$kp")
	if lx_ready $kp "$lg-standalone.console" "$boot_s"; then
		ready=$(awk -v d=$(($(now_us) - t0)) 'BEGIN{printf "%.1f", d / 1e6}')
		rc=0
		run_bounded $((kv_ms / 1000 + 180)) "${NS[@]}" "$B/kemari-kv" "${lxload[@]}" \
			>"$lg-standalone.load" 2>&1 || rc=$?
		printf '(ready after %s s) ' "$ready"
		kv_record standalone none "$lg-standalone.load" $rc linux ",\"mem_mib\":$LX_MIB,\"ready_s\":$ready"
	else
		echo FAILED
		skip "linux kvstore standalone" "the guest did not serve within $boot_s s: $(lx_why "$lg-standalone.log" "$lg-standalone.console")"
	fi
	stop_pid $kp

	ncell=$((ncell + 1))
	port=$((port + 1))
	peer=127.0.0.1:$port
	printf '[%2d] linux      replicated tcp %sM idle %s ms: ' $ncell $LX_MIB "$idle_ms"
	"${NS[@]}" "$K" --role=secondary --transport=tcp --listen=$peer "${lxg[@]}" $hb \
		--net=tap:kmrsa0,bridge=kmrbr0 --disk="$work/lx-rep.img" \
		--console-log="$lg-secondary.console" >"$lg-secondary.log" 2>&1 &
	ks=$!
	pids+=("$ks")
	t0=$(now_us)
	"${NS[@]}" "$K" --role=primary --transport=tcp --peer=$peer --connect-timeout-ms=60000 \
		"${lxg[@]}" $hb --net=tap:kmrpa0,bridge=kmrbr0 --disk="$work/lx-rep.img" \
		--console-log="$lg-primary.console" --stats="$lg-replicated.stats.json" >"$lg-primary.log" 2>&1 &
	kp=$!
	pids+=("$kp")
	if lx_ready $kp "$lg-primary.console" "$boot_s"; then
		ready=$(awk -v d=$(($(now_us) - t0)) 'BEGIN{printf "%.1f", d / 1e6}')
		printf '(ready after %s s) ' "$ready"
		# No client: what the idle kernel alone makes the engine carry.
		n0=$(lx_lines "$lg-replicated.stats.json")
		t0=$(now_us)
		sleep "$(awk -v ms="$idle_ms" 'BEGIN{printf "%.3f", ms / 1000}')"
		n1=$(lx_lines "$lg-replicated.stats.json")
		t1=$(now_us)
		lx_window idle "$lg-replicated.stats.json" "$n0" "$n1" $(((t1 - t0) / 1000))

		ncell=$((ncell + 1))
		printf '[%2d] linux      replicated tcp %sM load %s ms: ' $ncell $LX_MIB "$kv_ms"
		rc=0
		n0=$(lx_lines "$lg-replicated.stats.json")
		t0=$(now_us)
		run_bounded $((kv_ms / 1000 + 180)) "${NS[@]}" "$B/kemari-kv" "${lxload[@]}" \
			>"$lg-replicated.load" 2>&1 || rc=$?
		n1=$(lx_lines "$lg-replicated.stats.json")
		t1=$(now_us)
		kv_record replicated tcp "$lg-replicated.load" $rc linux ",\"mem_mib\":$LX_MIB,\"ready_s\":$ready"
		printf '     under that load: '
		lx_window load "$lg-replicated.stats.json" "$n0" "$n1" $(((t1 - t0) / 1000))
	else
		echo FAILED
		skip "linux kvstore replicated" "the guest did not serve within $boot_s s: $(lx_why "$lg-primary.log" "$lg-primary.console")"
	fi
	stop_pid $kp # SIGTERM: an orderly stop, BYE to the secondary
	wait_for $ks 60 || note "warning: the Linux guest's secondary did not end after the primary's orderly stop: stopped (see logs/linux-secondary.log)"
}
if has "$variants" linux; then
	if [ ! -r "$B/guests/linux/vmlinuz" ] || [ ! -r "$B/guests/linux/initrd.img" ]; then
		skip "linux" "$B/guests/linux/vmlinuz or initrd.img is missing: run 'make BUILD=${BUILD:-build} linux-guest' first"
	elif [ -n "$remote" ]; then
		skip "linux" "not in the two-host mode: the guest's bridge is in a network namespace on this host, which a secondary elsewhere cannot join"
	elif [ "$(avail_mib)" -lt $((3 * LX_MIB + 512)) ]; then
		skip "linux" "needs ~$((3 * LX_MIB + 512)) MiB, only $(avail_mib) MiB available"
	elif ! lx_netns_up; then
		skip "linux" "cannot set up a network namespace with a bridge (root, bridge module): $(tail -1 "$R/logs/linux-netns.log")"
		[ -n "$netns" ] && lx_netns_down
	else
		lx_cells
		lx_netns_down
	fi
fi
note "measurements done: $(($(wc -l <"$R/pause.csv") - 1)) records"
