#!/usr/bin/env bash
# Turn perf/run.sh's raw results in DIR into the deliverables:
#   pause.json     the records as one JSON array (pause.csv holds the same)
#   kvstore.json   the kvstore load results
#   summary.txt    ratio-to-floor table, goals, baselines, skipped cells
#   pause_vs_pages.png, breakdown.png, baselines.png   (gnuplot)
#   perf/report.sh DIR
set -euo pipefail
R=${1:?usage: perf/report.sh DIR}
cd "$R"

to_array() { # JSONL -> JSON array
	if [ -s "$1" ]; then
		{ echo "["; sed '$!s/$/,/' "$1"; echo "]"; } >"$2"
	else
		echo "[]" >"$2"
	fi
}
to_array records.jsonl pause.json
to_array kvstore.jsonl kvstore.json

envv() { sed -n "s/^$1=//p" env.txt 2>/dev/null | head -1; }
env_kind=$(envv env)
# The KVM cells ran in the emulated VM while the synth cells ran here.
vm_kvm=0
{ [ "$env_kind" = vm ] || [ -s env-vm.txt ]; } && vm_kvm=1

# CSV access by column name: awk -v cols=... with a header map.
AWK_HDR='NR==1{for(i=1;i<=NF;i++)c[$i]=i; next}
function v(k){return (k in c) ? $(c[k]) : ""}
function lbl(){return v("provider")==""?v("transport"):v("transport") ":" v("provider")}
function ram(m){return m>=1024?(m/1024) "G":m "M"}'

# Rows grouped for reading: variant, RAM, dirty pages, transport.
awk -F, "$AWK_HDR"'
	BEGIN { split("ring bitmap speculate full-copy synth synth-think synth-spec standalone", o, " ")
		for (i in o) rank[o[i]] = i }
	{ printf "%d %012d %012d %s\t%s\n", rank[v("variant")] ? rank[v("variant")] : 99,
		v("ram_mib"), v("dirty_pages"), lbl(), $0 }' pause.csv | sort | cut -f2- >pause.csv.body
{ head -1 pause.csv; cat pause.csv.body; } >pause.csv.new && mv pause.csv.new pause.csv
rm -f pause.csv.body

{
	echo "Kemari-RDMA pause-time benchmark ($(envv date), commit $(envv commit))"
	echo "host: $(envv cpu), $(envv mem_mib) MiB, kernel $(envv kernel)"
	echo "run: $(envv events)"
	[ -n "$(envv remote)" ] && echo "two hosts: secondary on $(envv remote)"
	if [ $vm_kvm = 1 ]; then
		echo
		echo "NOTE: the KVM cells (variants ring, bitmap, speculate, full-copy,"
		echo "standalone, and the kvstore) were measured inside the EMULATED test VM"
		echo "(QEMU TCG, kvm_amd inside$([ -s env-vm.txt ] && echo "; $(sed -n 's/^cpu=//p' env-vm.txt), $(sed -n 's/^mem_mib=//p' env-vm.txt) MiB")):"
		echo "their timings are MEANINGLESS in absolute terms (a KVM exit costs ~240 us"
		echo "there, memory copies are emulated); they show the harness works end to"
		echo "end. Run 'make perf' on a host with /dev/kvm for numbers."
	fi
	if grep -q ',synth' pause.csv; then
		echo
		echo "The synth cells ran natively on this host: the synthetic guest (no VM,"
		echo "kemari-run --hv=synth) with the real engine and transports. Their harvest"
		echo "is exact and O(dirty) by construction (not KVM's); state, push, commit,"
		echo "ack are real. synth-spec: the same guest computing $(envv synth_think_us) us"
		echo "between events while speculation pushes (tcp); synth-think: the same"
		echo "think time without speculation, its baseline."
	fi
	echo
	echo "Pause per event vs. its floor (floor = memcpy of the epoch's median bytes"
	echo "+ one small-message round trip on the same transport; nearest-rank quantiles)."
	echo "wire (synth cells): the transport alone moving the same bytes as one run and"
	echo "closing the epoch (push, flush, COMMIT, ACK): what the engine adds is p50/wire."
	echo
	awk -F, "$AWK_HDR"'
	v("variant")!="standalone" {
		if (!hdr++) printf "%-11s %-10s %5s %5s %6s %9s %9s %9s %7s %7s %9s %8s %9s %9s %9s\n",
			"transport","variant","RAM","pages","events","p50 us","p99 us","floor us",
			"p50/fl","p99/fl","wire us","p50/wire","epochs/s","MB/s","alone ev/s"
		printf "%-11s %-10s %5s %5s %6s %9s %9s %9s %7s %7s %9s %8s %9s %9.1f %9s%s\n",
			lbl(), v("variant"), ram(v("ram_mib")), v("dirty_pages"), v("events"),
			v("p50_us"), v("p99_us"), v("floor_us"), v("ratio_p50"), v("ratio_p99"),
			v("wire_us")==""?"-":v("wire_us"), v("ratio_wire")==""?"-":v("ratio_wire"),
			v("epochs_per_s"), v("bytes_per_s")/1e6,
			v("standalone_events_per_s")==""?"-":v("standalone_events_per_s"),
			v("complete")==1?"":"  (incomplete)"
	}' pause.csv
	echo
	echo "Pause breakdown, median us (each column its own median):"
	awk -F, "$AWK_HDR"'
	v("variant")!="standalone" {
		if (!hdr++) printf "%-11s %-10s %5s %5s %10s %9s %9s %9s %11s %9s\n",
			"transport","variant","RAM","pages","spec-wait","harvest","state","push","commit-ack","runs"
		printf "%-11s %-10s %5s %5s %10s %9s %9s %9s %11s %9s\n", lbl(), v("variant"),
			ram(v("ram_mib")), v("dirty_pages"), v("spec_wait_us")==""?"-":v("spec_wait_us"),
			v("harvest_us"), v("state_us"), v("push_us"), v("commit_ack_us"), v("runs_p50")
	}' pause.csv
	echo
	echo "Goals (measured, never asserted):"
	awk -F, "$AWK_HDR"'
	v("transport")=="tcp" && (v("variant")=="ring" || v("variant")=="synth") && v("dirty_pages")>=256 {
		ok = v("ratio_p50")<=1.5 && v("ratio_p99")<=3
		printf "  tcp %-5s %s %sp: p50 %.2fx floor (goal <= 1.5), p99 %.2fx (goal <= 3): %s%s\n",
			v("variant"), ram(v("ram_mib")), v("dirty_pages"), v("ratio_p50"), v("ratio_p99"),
			ok ? "met" : "MISSED", v("env")=="vm" ? " (emulated VM)" : ""; n++
	}
	v("transport")=="tcp" && (v("variant")=="ring" || v("variant")=="synth") && v("dirty_pages")==64 {
		p[v("variant"), v("ram_mib")] = v("p50_us"); vs[v("variant")] = 1
	}
	END {
		if (!n) print "  tcp ring >= 256 pages: no such cell measured"
		for (var in vs) {
			lo = ""; hi = ""
			for (k in p) {
				split(k, f, SUBSEP); if (f[1] != var) continue; m = f[2]
				if (lo=="" || m+0 < lo+0) lo = m; if (hi=="" || m+0 > hi+0) hi = m
			}
			if (lo == "" || lo == hi) continue
			r = p[var, hi] / p[var, lo]
			printf "  64 dirty pages, %s vs %s (%s): p50 %s us vs %s us = %.2fx (goal <= 1.2%s): %s%s\n",
				ram(hi), ram(lo), var, p[var, hi], p[var, lo], r,
				hi == 4096 ? "" : "; the goal names 4G, which did not fit here",
				r <= 1.2 ? "met" : "MISSED",
				var == "synth" ? " (synthetic guest: collection is O(dirty) by construction; this checks the rest of the pause)" : ""
			done[var] = 1
		}
		if (!done["ring"])
			print "  64 dirty pages, 4G vs 64M (ring): not measured (needs 64-page ring cells at two RAM sizes: the full make perf adds them where memory allows)"
	}' pause.csv
	echo
	echo "Baselines:"
	awk -F, "$AWK_HDR"'
	v("variant")=="standalone" {
		printf "  standalone (no replication) %s %sp: %s events/s\n",
			ram(v("ram_mib")), v("dirty_pages"), v("epochs_per_s")
	}
	v("variant")=="ring" && v("transport")=="tcp" { ring[v("ram_mib") "/" v("dirty_pages")] = v("p50_us") }
	v("variant")=="synth" && v("transport")=="tcp" { syn[v("ram_mib") "/" v("dirty_pages")] = v("p50_us") }
	v("variant")=="synth-think" { thk[v("ram_mib") "/" v("dirty_pages")] = v("p50_us") }
	v("variant")=="synth-spec" {
		q[++m] = v("ram_mib") "|" v("dirty_pages") "|" v("p50_us")
	}
	v("variant")=="bitmap" || v("variant")=="speculate" || v("variant")=="full-copy" {
		o[++n] = v("variant") "|" v("ram_mib") "|" v("dirty_pages") "|" v("p50_us")
	}
	END {
		for (i = 1; i <= n; i++) {
			split(o[i], f, "|"); r = ring[f[2] "/" f[3]]
			printf "  %-9s %s %sp: p50 %s us%s\n", f[1], ram(f[2]), f[3], f[4],
				r != "" ? sprintf(" (%.2fx the dirty-ring p50, %s us)", f[4] / r, r) : ""
		}
		for (i = 1; i <= m; i++) {
			split(q[i], f, "|"); r = syn[f[1] "/" f[2]]; t = thk[f[1] "/" f[2]]
			printf "  synth-spec %s %sp: p50 %s us%s\n", ram(f[1]), f[2], f[3],
				t != "" ? sprintf(" (%.2fx synth-think: the same think time without speculation, %s us; native)", f[3] / t, t) : \
				r != "" ? sprintf(" (%.2fx the synth p50 without speculation nor think time, %s us; native)", f[3] / r, r) : ""
		}
	}' pause.csv
	if [ -s kvstore.jsonl ]; then
		echo
		echo "kvstore under load (kemari-kv load, 4 clients x exactly-once INCR on 8 keys):"
		sed -n 's/.*"mode":"\([^"]*\)".*"transport":\([^,]*\),.*"duration_ms":\([0-9]*\),"acked":\([0-9]*\),"requests_per_s":\([0-9.]*\),"p50_us":\([0-9]*\),"p99_us":\([0-9]*\).*"consistent":\([a-z]*\).*/\1 \2 \3 \4 \5 \6 \7 \8/p' kvstore.jsonl |
			while read -r mode tr ms acked rps p50 p99 cons; do
				[ "$tr" = null ] && tr="" || tr=" over ${tr//\"/}"
				printf '  %-22s %9s requests/s, latency p50 %6s us, p99 %7s us (%s acked in %s ms%s)\n' \
					"$mode$tr:" "$rps" "$p50" "$p99" "$acked" "$ms" \
					"$([ "$cons" = true ] && echo ", 0 lost" || echo ", CHECK FAILED")"
			done
	fi
	if [ -s skipped.txt ]; then
		echo
		echo "Skipped:"
		sed 's/^/  /' skipped.txt
	fi
} >summary.txt

# ---- plots -------------------------------------------------------------------
if ! command -v gnuplot >/dev/null; then
	echo "perf: gnuplot missing (make deps installs gnuplot-nox): no plots" >&2
	cat summary.txt
	exit 0
fi
rm -rf plot
mkdir -p plot
term="pngcairo enhanced font 'DejaVu Sans,10'"
gnuplot -e 'set terminal pngcairo' 2>/dev/null || term="png"
vmnote=""
[ $vm_kvm = 1 ] && vmnote="\\n{/:Bold measured in the EMULATED test VM: timings meaningless}"

# A panel with one point has an empty y range: gnuplot copes, and says so.
plot() { gnuplot "$1" 2> >(grep -v 'empty y range' >&2); }

# Pages on the x axis are categories (0 has no logarithm): index them.
pages_all=$(awk -F, "$AWK_HDR"'v("variant")!="standalone"{print v("dirty_pages")}' pause.csv | sort -n -u)
xtics=$(echo "$pages_all" | awk '{printf "%s\"%s\" %d", (NR>1?", ":""), $1, NR-1}')
rams_all=$(awk -F, "$AWK_HDR"'v("variant")!="standalone" && v("variant")!~/^synth/{print v("ram_mib")}' pause.csv | sort -n -u)
nr=$(echo "$rams_all" | grep -c . || true)
main=$(awk -F, "$AWK_HDR"'v("variant")=="ring"{print "ring"; exit} v("variant")=="bitmap"{b=1} END{if(b)print "bitmap"}' pause.csv | head -1)
# series files: plot/<variant>_<ram>_<label>.dat with "x pages p50 p99 floor"
awk -F, -v pages="$(echo $pages_all)" "$AWK_HDR"'
	BEGIN { n = split(pages, p, " "); for (i = 1; i <= n; i++) ix[p[i]] = i - 1 }
	v("variant") != "standalone" {
		f = "plot/" v("variant") "_" v("ram_mib") "_" lbl() ".dat"
		gsub(/[:;]/, "_", f)
		print ix[v("dirty_pages")], v("dirty_pages"), v("p50_us"), v("p99_us"), v("floor_us") >> f
	}' pause.csv
for f in plot/*.dat; do [ -e "$f" ] || continue; sort -n -k1,1 -o "$f" "$f"; done

labels_of() { # VARIANT RAM -> transport labels with a series
	ls plot/ 2>/dev/null | sed -n "s/^$1_$2_\(.*\)\.dat$/\1/p"
}
ramname() { [ "$1" -ge 1024 ] && echo "$(($1 / 1024)) GiB" || echo "$1 MiB"; }
# panels_head PNG N TITLE YLABEL: a row of N panels over the pages axis
panels_head() {
	local w=$(($2 * 520 + 40))
	[ $w -lt 760 ] && w=760
	echo "set terminal $term size $w,480"
	echo "set output '$1'"
	echo "set multiplot layout 1,$2 title \"$3\""
	echo "set logscale y; set grid ytics mytics; set key top left"
	echo "set xtics ($xtics); set xrange [-0.3:$(($(echo "$pages_all" | wc -l) - 1)).3]"
	echo "set xlabel 'dirty pages per event'; set ylabel '$4'"
}

# pause_plot VARIANT PNG NOTE: pause vs dirty pages per transport, a panel
# per RAM size; breakdown_plot VARIANT PNG NOTE: stacked phases per cell.
pause_plot() {
	local var=$1 png=$2 note=$3 m l c d plots rams
	rams=$(awk -F, -v var="$var" "$AWK_HDR"'v("variant")==var{print v("ram_mib")}' pause.csv | sort -n -u)
	local n
	n=$(echo "$rams" | grep -c . || true)
	[ "$n" -gt 0 ] || return 0
	{
		panels_head "$png" "$n" "Pause per event vs dirty pages: p50 (solid), p99 (dashed), floor (dotted)$note" 'microseconds (log)'
		for m in $rams; do
			if [ "$var" = synth ]; then
				echo "set title '$(ramname "$m") synthetic guest (native)'"
			else
				echo "set title '$(ramname "$m") guest, $var dirty tracking'"
			fi
			plots=()
			c=0
			for l in $(labels_of "$var" "$m"); do
				c=$((c + 1))
				d="plot/${var}_${m}_$l.dat"
				local t=${l/_/:} # the label again (ofi:net), not a subscript
				plots+=("'$d' using 1:3 with linespoints lw 2 pt 7 lc $c title '$t p50' noenhanced")
				plots+=("'$d' using 1:4 with linespoints lw 1 dt 2 pt 6 lc $c title '$t p99' noenhanced")
				plots+=("'$d' using 1:5 with lines lw 2 dt 3 lc $c title '$t floor' noenhanced")
			done
			if [ ${#plots[@]} = 0 ]; then
				echo "unset logscale y; plot 2 notitle; set logscale y"
			else
				(IFS=,; echo "plot ${plots[*]}")
			fi
		done
		echo "unset multiplot"
	} >"plot/$var.gp"
	plot "plot/$var.gp"
}

breakdown_plot() {
	local var=$1 png=$2 note=$3 nb
	awk -F, -v var="$var" "$AWK_HDR"'
		v("variant") == var {
			printf "\"%s %s %sp\" %s %s %s %s %s\n", lbl(), ram(v("ram_mib")), v("dirty_pages"),
				v("harvest_us"), v("state_us"), v("push_us"), v("commit_ack_us"),
				v("spec_wait_us")==""?0:v("spec_wait_us")
		}' pause.csv >"plot/breakdown_$var.dat"
	nb=$(wc -l <"plot/breakdown_$var.dat")
	[ "$nb" -gt 0 ] || return 0
	local d="plot/breakdown_$var.dat"
	{
		echo "set terminal $term size $((nb * 60 + 300 > 900 ? nb * 60 + 300 : 900)),820"
		echo "set output '$png'"
		echo "set multiplot layout 2,1 title \"Pause breakdown per cell ($var; median of each phase)$note\""
		echo "set style data histograms; set style histogram rowstacked; set style fill solid 0.85 border -1"
		echo "set boxwidth 0.7; set grid ytics; set key outside right top; set xtics rotate by -35"
		echo "set ylabel 'microseconds'; set title 'absolute'"
		echo "plot '$d' using 6:xtic(1) title 'spec-wait' lc rgb '#b07aa1', '' using 2 title 'harvest' lc rgb '#4e79a7', '' using 3 title 'state' lc rgb '#f28e2b', '' using 4 title 'push' lc rgb '#59a14f', '' using 5 title 'commit-ack' lc rgb '#e15759'"
		echo "set ylabel 'share of the pause (%)'; set yrange [0:100]; set title 'share'"
		local tot='($2+$3+$4+$5+$6)'
		echo "plot '$d' using (100*\$6/$tot):xtic(1) title 'spec-wait' lc rgb '#b07aa1', '' using (100*\$2/$tot) title 'harvest' lc rgb '#4e79a7', '' using (100*\$3/$tot) title 'state' lc rgb '#f28e2b', '' using (100*\$4/$tot) title 'push' lc rgb '#59a14f', '' using (100*\$5/$tot) title 'commit-ack' lc rgb '#e15759'"
		echo "unset multiplot"
	} >"plot/breakdown_$var.gp"
	plot "plot/breakdown_$var.gp"
}

if [ -n "$main" ]; then
	pause_plot "$main" pause_vs_pages.png "$vmnote"
	breakdown_plot "$main" breakdown.png "$vmnote"
fi
if grep -q ',synth,' pause.csv; then
	pause_plot synth synth_pause_vs_pages.png "\\n{/:Bold synthetic guest, measured natively: engine + transport}"
	breakdown_plot synth synth_breakdown.png "\\n{/:Bold synthetic guest, measured natively}"
fi

# Baselines over tcp: ring vs bitmap vs speculate vs full-copy.
[ "$nr" -gt 0 ] && {
	panels_head baselines.png "$nr" "Baselines over tcp: p50 pause per variant; the dirty-ring floor dotted$vmnote" 'p50 microseconds (log)'
	for m in $rams_all; do
		echo "set title '$(ramname "$m") guest'"
		plots=()
		c=0
		for var in ring bitmap speculate full-copy; do
			c=$((c + 1))
			d="plot/${var}_${m}_tcp.dat"
			[ -f "$d" ] || continue
			plots+=("'$d' using 1:3 with linespoints lw 2 pt $((c + 4)) lc $c title '$var'")
			[ $var = ring ] && plots+=("'$d' using 1:5 with lines lw 2 dt 3 lc $c title 'floor'")
			[ $var = full-copy ] && plots+=("'$d' using 1:5 with points pt 8 ps 1.2 lc $c title 'full-copy floor'")
		done
		if [ ${#plots[@]} = 0 ]; then
			echo "unset logscale y; plot 2 notitle; set logscale y"
		else
			(IFS=,; echo "plot ${plots[*]}")
		fi
	done
	echo "unset multiplot"
} >plot/baselines.gp && plot plot/baselines.gp

cat summary.txt
echo
echo "perf: results in $R: pause.json pause.csv kvstore.json summary.txt $(ls *.png 2>/dev/null | tr '\n' ' ')"
