#!/usr/bin/python3
# Scrape kemari-run --metrics=HOST:PORT once and parse the exposition with
# prometheus_client's own parser (Debian python3-prometheus-client): the
# format must be what Prometheus reads. Checks the shapes (types, labels,
# cumulative buckets ending in +Inf == _count) and prints one
# "name value" line per number for the caller's exact checks:
#   epochs, protected, epoch, bytes, pages, heartbeats_missed, takeovers,
#   ram, vcpus, state, role, pause_count, pause_inf, pause_sum,
#   phase_count_<phase>, dirty_count, dirty_le_<bound> (cumulative).
# Exit 0, or 1 with one line on stderr saying what is wrong.
import sys
import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def fail(msg):
    print("prom_scrape: " + msg, file=sys.stderr)
    sys.exit(1)


def check_hist(fam, by_labels):
    """Buckets cumulative, +Inf last and equal to _count, per label set."""
    out = {}
    for key, samples in by_labels.items():
        buckets = [(s.labels["le"], s.value) for s in samples
                   if s.name.endswith("_bucket")]
        count = [s.value for s in samples if s.name.endswith("_count")]
        total = [s.value for s in samples if s.name.endswith("_sum")]
        if not buckets or buckets[-1][0] != "+Inf" or len(count) != 1 \
                or len(total) != 1:
            fail("%s%s: buckets, +Inf, _sum and _count expected" %
                 (fam.name, key))
        prev = 0
        for le, v in buckets:
            if v < prev:
                fail("%s%s: bucket le=%s below the previous" %
                     (fam.name, key, le))
            prev = v
        if buckets[-1][1] != count[0]:
            fail("%s%s: +Inf bucket %g != _count %g" %
                 (fam.name, key, buckets[-1][1], count[0]))
        out[key] = (buckets, count[0], total[0])
    return out


def main():
    if len(sys.argv) != 2:
        fail("usage: prom_scrape.py http://HOST:PORT/metrics")
    try:
        # Generous: inside the emulated test VM one scrape once failed
        # with an error whose text was empty (repr names its type now).
        with urllib.request.urlopen(sys.argv[1], timeout=30) as r:
            ctype = r.headers.get("Content-Type", "")
            text = r.read().decode("utf-8")
    except OSError as e:
        fail("%s: %r" % (sys.argv[1], e))
    if not ctype.startswith("text/plain; version=0.0.4"):
        fail("Content-Type %r is not the text exposition format" % ctype)
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    want = {
        "kemari_info": "gauge", "kemari_protected": "gauge",
        "kemari_epoch": "gauge", "kemari_epochs": "counter",
        "kemari_pushed_bytes": "counter", "kemari_pushed_pages": "counter",
        "kemari_heartbeats_missed": "counter", "kemari_takeovers": "counter",
        "kemari_guest_ram_bytes": "gauge", "kemari_guest_vcpus": "gauge",
        "kemari_uptime_seconds": "gauge",
        "kemari_own_pauses": "counter",
        "kemari_own_pause_max_seconds": "gauge",
        "kemari_pause_seconds": "histogram",
        "kemari_pause_phase_seconds": "histogram",
        "kemari_dirty_pages": "histogram",
    }
    for name, typ in want.items():
        if name not in fams:
            fail("no %s in the exposition" % name)
        if fams[name].type != typ:
            fail("%s is a %s, expected %s" % (name, fams[name].type, typ))
    extra = sorted(set(fams) - set(want))
    if extra:
        fail("unexpected families: %s" % ", ".join(extra))

    def one(name, sample=None):
        s = fams[name].samples
        if len(s) != 1:
            fail("%s: %d samples, expected 1" % (name, len(s)))
        return s[0]

    vals = {}
    info = one("kemari_info")
    vals["role"] = info.labels["role"]
    vals["state"] = info.labels["state"]
    for key, name in (("protected", "kemari_protected"),
                      ("epoch", "kemari_epoch"),
                      ("epochs", "kemari_epochs"),
                      ("bytes", "kemari_pushed_bytes"),
                      ("pages", "kemari_pushed_pages"),
                      ("heartbeats_missed", "kemari_heartbeats_missed"),
                      ("takeovers", "kemari_takeovers"),
                      ("ram", "kemari_guest_ram_bytes"),
                      ("vcpus", "kemari_guest_vcpus")):
        vals[key] = int(one(name).value)

    def group(fam, label=None):
        by = {}
        for s in fam.samples:
            by.setdefault(s.labels.get(label, "") if label else "",
                          []).append(s)
        return by

    pause = check_hist(fams["kemari_pause_seconds"],
                       group(fams["kemari_pause_seconds"]))[""]
    vals["pause_count"] = int(pause[1])
    vals["pause_inf"] = int(pause[0][-1][1])
    vals["pause_sum_us"] = int(round(pause[2] * 1e6))
    phases = check_hist(fams["kemari_pause_phase_seconds"],
                        group(fams["kemari_pause_phase_seconds"], "phase"))
    if sorted(phases) != ["commit_ack", "harvest", "push", "state"]:
        fail("phases %s, expected harvest, state, push, commit_ack" %
             sorted(phases))
    for ph, h in sorted(phases.items()):
        vals["phase_count_" + ph] = int(h[1])
    dirty = check_hist(fams["kemari_dirty_pages"],
                       group(fams["kemari_dirty_pages"]))[""]
    vals["dirty_count"] = int(dirty[1])
    for le, v in dirty[0]:
        if le != "+Inf":
            vals["dirty_le_%d" % int(float(le))] = int(v)
    for k in sorted(vals):
        print(k, vals[k])


main()
