"""bench/cluster_report.py: turns the JSON lines of bench/cluster_bench.sh into the "Cluster"
section of bench/RESULTS.md (between its markers; the rest of the file is left as it is)."""

import argparse
import datetime
import json
import os
import platform
import re
import statistics

BEGIN = "<!-- cluster-bench:begin -->"
END = "<!-- cluster-bench:end -->"


def load(path):
    records = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                records.append(json.loads(line))
    return records


def num(v, digits=3):
    """A figure with about `digits` significant digits; thousands separated."""
    if v is None:
        return "—"
    if abs(v) >= 10 ** digits:
        return f"{v:,.0f}"
    if v == 0:
        return "0"
    text = f"{v:.{digits}g}"
    if "e" in text:
        text = f"{v:.{max(0, digits - 1)}f}"
    return text


def cell(values, digits=3):
    """median (min–max), or the single value."""
    values = [v for v in values if v is not None]
    if not values:
        return "—"
    med = statistics.median(values)
    if len(values) == 1:
        return num(med, digits)
    return f"{num(med, digits)} ({num(min(values), digits)}–{num(max(values), digits)})"


def of(records, workload, **match):
    return [r for r in records if r.get("workload") == workload and
            all(r.get(k) == v for k, v in match.items())]


def machine(args):
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} cores, shared, noisy (other work may run at the same "
            f"time); kernel {platform.release()}; load average {args.load} at start, "
            f"{args.load_end} at the end")


def rr_section(records, out):
    rows = [r for r in of(records, "cluster-rr") if "error" not in r]
    failed = [r for r in of(records, "cluster-rr") if "error" in r]
    if not rows and not failed:
        return None
    out.append("### cluster-rr: many channels over three relays against one relay")
    out.append("")
    out.append("| System | Idle polling | Runs | Channels × peers | req/s | relay CPU per request (µs) "
               "| relay CPU (s) | per relay (s) | relay context switches per request | p50 (µs) "
               "| p99 (µs) | etcd CPU (s) | load generator CPU (s) |")
    out.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    spins = sorted({r.get("idle_spin_us", 100) for r in rows}, reverse=True)
    verdicts = []
    for spin in spins:
        def pick(system):
            return [r for r in rows if r["system"] == system and r.get("idle_spin_us", 100) == spin]
        one, member, three = pick("1-relay"), pick("1-relay-cluster"), pick("3-relays")
        apart = pick("3-relays-apart")
        polling = f"{spin} µs" + (" (default)" if spin == 100 else " (off)" if spin == 0 else "")
        for name, group in (("1 relay, alone", one), ("cluster of 1 relay, etcd", member),
                            ("3 independent relays, no etcd", apart),
                            ("3 relays, one etcd", three)):
            if not group:
                continue
            first = group[0]
            shape = f"{first['channels']} × {first['peers'] // max(1, first['channels'])}"
            out.append(
                f"| {name} | {polling} | {len(group)} | {shape} | {cell([r['rps'] for r in group])} "
                f"| {cell([r['relay_cpu_us_per_req'] for r in group])} "
                f"| {cell([r['relay_cpu_s'] for r in group])} "
                f"| {'; '.join(r['relay_cpu_each_s'] for r in group)} "
                f"| {cell([r.get('relay_switches_per_req') for r in group])} "
                f"| {cell([r['p50_us'] for r in group])} | {cell([r['p99_us'] for r in group])} "
                f"| {cell([r.get('etcd_cpu_s') for r in group]) if 'etcd' in name else '—'} "
                f"| {cell([r['driver_cpu_s'] for r in group])} |")
        if one and member:
            ratio = (statistics.median([r["relay_cpu_us_per_req"] for r in member]) /
                     statistics.median([r["relay_cpu_us_per_req"] for r in one]))
            verdicts.append(f"- Idle polling {polling}: relay CPU per request, cluster of 1 ÷ "
                            f"relay alone: {ratio:.2f}× (etcd membership, same single process).")
        if apart and three:
            ratio = (statistics.median([r["relay_cpu_us_per_req"] for r in three]) /
                     statistics.median([r["relay_cpu_us_per_req"] for r in apart]))
            ratio_apart = (statistics.median([r["relay_cpu_us_per_req"] for r in apart]) /
                           statistics.median([r["relay_cpu_us_per_req"] for r in one])) if one else 0
            verdicts.append(f"- Idle polling {polling}: relay CPU per request, 3 relays in a cluster "
                            f"÷ 3 independent relays: {ratio:.2f}× (the same three processes; "
                            f"3 independent relays ÷ 1 relay: {ratio_apart:.2f}×).")
        if one and three:
            by_run = {r["run"]: r for r in one}
            ratios = [b["relay_cpu_us_per_req"] / by_run[b["run"]]["relay_cpu_us_per_req"]
                      for b in sorted(three, key=lambda r: r["run"])
                      if b["run"] in by_run and by_run[b["run"]]["relay_cpu_us_per_req"] > 0]
            cpu_ratio = (statistics.median([r["relay_cpu_us_per_req"] for r in three]) /
                         statistics.median([r["relay_cpu_us_per_req"] for r in one]))
            rps_ratio = (statistics.median([r["rps"] for r in three]) /
                         statistics.median([r["rps"] for r in one]))
            met = abs(cpu_ratio - 1) <= 0.10
            verdicts.append(
                f"- Idle polling {polling}: relay CPU per request, 3 relays ÷ 1 relay: "
                f"**{cpu_ratio:.2f}×** (medians; per run: {', '.join(f'{x:.2f}×' for x in ratios)}); "
                f"within 10% of one relay: {'✅ yes' if met else '❌ no'}. Requests/s, 3 relays ÷ "
                f"1 relay: {rps_ratio:.2f}×.")
    for r in failed:
        out.append(f"| {r.get('system')} | run {r.get('run')} failed: {r['error']} |||||||||||")
    out.append("")
    out.extend(verdicts)
    out.append("")
    return True


def join_section(records, out):
    rows = [r for r in of(records, "cluster-join") if "error" not in r]
    if not rows:
        return None
    out.append("### Join latency with and without a REDIRECT")
    out.append("")
    out.append("| Join | 1 relay: p50 (µs) | p99 (µs) | 3 relays: p50 (µs) | p99 (µs) | n |")
    out.append("|---|---|---|---|---|---|")
    labels = {
        "warm-direct": "to the owner of a channel already served",
        "warm-redirect": "to another relay, REDIRECT to the owner (channel already served)",
        "cold-direct": "to the owner, first peer of a new channel (claims it)",
        "cold-redirect": "to another relay, REDIRECT, first peer of a new channel",
    }
    for variant, label in labels.items():
        one = [r for r in rows if r["variant"] == variant and r["system"] == "1-relay"]
        three = [r for r in rows if r["variant"] == variant and r["system"] == "3-relays"]
        if not one and not three:
            continue
        n = (three or one)[0]["n"]
        out.append(f"| {label} | {cell([r['p50_us'] for r in one])} "
                   f"| {cell([r['p99_us'] for r in one])} "
                   f"| {cell([r['p50_us'] for r in three])} | {cell([r['p99_us'] for r in three])} "
                   f"| {n} |")
    out.append("")
    return True


def grpc_section(records, out):
    rows = of(records, "cluster-grpc")
    if not rows:
        return None
    out.append("### gRPC requests straight to the owner and through another relay")
    out.append("")
    out.append("| Call (128 B request, 128 B answer, sequential) | p50 (µs) | p99 (µs) | n |")
    out.append("|---|---|---|---|")
    labels = {
        "locate": "Locate asked of a relay that does not serve the channel",
        "owner-rpc": "after Locate, straight to the owner: one Send RPC per request",
        "owner-mux": "after Locate, straight to the owner: one Requests stream",
        "through-rpc": "through a relay that does not own the channel: one Send RPC per request",
        "through-mux": "through a relay that does not own the channel: one Requests stream",
    }
    for variant, label in labels.items():
        for r in (x for x in rows if x.get("variant") == variant):
            if "refused" in r:
                out.append(f"| {label} | {r['refused']} | — | — |")
            elif "error" in r:
                out.append(f"| {label} | error: {r['error']} | — | — |")
            else:
                out.append(f"| {label} | {num(r['p50_us'])} | {num(r['p99_us'])} | {r['n']} |")
    for r in rows:
        if "variant" not in r and "error" in r:
            out.append(f"| (run failed) | error: {r['error']} | — | — |")
    out.append("")
    return True


def failover_section(records, out):
    rows = of(records, "cluster-failover")
    if not rows:
        return None
    good = [r for r in rows if "p99_s" in r]
    out.append("### Failover after kill -9 (lease TTL 1 s)")
    out.append("")
    out.append("| Run | Peers | Back and exact: p50 (s) | p99 (s) | max (s) | Reconnected: first (s) "
               "| p50 (s) | p99 (s) | max (s) | All exact |")
    out.append("|---|---|---|---|---|---|---|---|---|---|")
    for r in sorted(rows, key=lambda r: r.get("run", 0)):
        if "p99_s" not in r:
            out.append(f"| {r.get('run', '?')} | error: {r.get('error')} ||||||||")
            continue
        out.append(f"| {r['run']} | {r['peers']} | {r['p50_s']:.3f} | {r['p99_s']:.3f} "
                   f"| {r['max_s']:.3f} | {r.get('back_min_s', 0):.3f} | {r['back_p50_s']:.3f} "
                   f"| {r['back_p99_s']:.3f} "
                   f"| {r['back_max_s']:.3f} | {'yes' if r['all_exact'] else 'NO'} |")
    if good:
        worst = max(r["p99_s"] for r in good)
        ttl = (good[0].get("ttl_ms") or 1000) / 1000
        within = [r for r in good if r["all_exact"] and r["p99_s"] < ttl + 1]
        met = len(within) == len(rows)
        out.append("")
        out.append(f"p99 over the runs: median {statistics.median(r['p99_s'] for r in good):.3f} s, "
                   f"worst {worst:.3f} s. Goal p99 < TTL + 1 s = {ttl + 1:.0f} s with every peer "
                   f"back with exact presence: met in {len(within)} of {len(rows)} runs "
                   f"({'✅' if met else '❌'} every run).")
    out.append("")
    return True


def storm_section(records, out):
    rows = of(records, "cluster-storm")
    if not rows:
        return None
    out.append("### Join storm")
    out.append("")
    out.append("| System | Runs | Peers × channels | All connected (s) | All with exact presence (s) "
               "| peers/s | Connects retried |")
    out.append("|---|---|---|---|---|---|---|")
    for system, name in (("1-relay", "1 relay, alone"), ("3-relays", "3 relays, one etcd")):
        good = [r for r in rows if r.get("system") == system and "error" not in r]
        bad = [r for r in rows if r.get("system") == system and "error" in r]
        if good:
            first = good[0]
            out.append(f"| {name} | {len(good)} | {first['peers']:,} × {first['channels']} "
                       f"| {cell([r['joined_s'] for r in good])} "
                       f"| {cell([r['presence_s'] for r in good])} "
                       f"| {cell([r['peers_per_s'] for r in good])} "
                       f"| {cell([r['retries'] for r in good])} |")
        for r in bad:
            out.append(f"| {name} | run {r.get('run')} failed: {r['error']} ||||||")
    out.append("")
    return True


def section(records, args):
    date = args.date or datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out = [BEGIN, "## Cluster", ""]
    out.append(f"Latest cluster run: **{date}**, {'quick (smoke sizes)' if args.quick else 'full'}, "
               f"{args.elapsed} s in all (`bench/cluster_bench.sh`). Code: {args.source}.")
    out.append("")
    out.append(f"Machine: {machine(args)}. Every relay (and the relay alone) runs with "
               "`--threads 1`; the cluster is three relays on 127.0.0.1, .2 and .3 with one etcd "
               "(Debian's 3.4, heartbeat 50 ms, election 500 ms), lease TTL 3 s except for the "
               "failover (1 s); the load generator (`switchboard-cluster-bench`, one thread) and "
               "etcd run on the same two cores. Relays, etcd and the load generator share **2 "
               "cores, shared and noisy**: read the ratios, which were measured in one run, rather "
               "than the absolute figures. Cells: median (min–max) over the runs.")
    out.append("")
    out.append("Reproduce: `bench/cluster_bench.sh` (builds the `release` preset; about 6–7 min) or "
               "`bench/cluster_bench.sh --quick` (smoke run). Raw lines: "
               "`bench/cluster_results.jsonl`.")
    out.append("")
    rr_section(records, out)
    join_section(records, out)
    grpc_section(records, out)
    failover_section(records, out)
    storm_section(records, out)
    out.append(WORKLOADS)
    out.append(END)
    return "\n".join(out)


WORKLOADS = """Workloads:

- **cluster-rr**: 300 channels, each with one responder and two requesters (900 peers); peer k
  enters through relay k mod 3 and is sent to the channel's owner by REDIRECT, so each channel's
  requests flow through its owner only. Every requester sends 128 B requests one after another
  (answer 128 B) for 15 s after 3 s of warm-up; the same load on a relay alone is the baseline.
  Relay CPU = utime + stime of each relay process from `/proc/PID/stat`, read before and after
  the timed phase, summed over the relays, ÷ requests answered.
  *What it shows on 2 cores:* the relays, etcd and the load generator share two cores, so three
  relays cannot answer more requests per second than one; what must hold is that a request costs
  the relays no more CPU in a cluster than alone (nothing per request goes through etcd or a
  second relay: a non-owner only redirects at join time, and claims are made once per channel).
  *On N cores* (N ≥ 4, so that each relay has a core of its own): a relay alone is bound by
  its cores, while each of three relays carries about a third of the channels (rendezvous
  placement) on its own core at the CPU per request of a relay alone with that load (the
  cluster-of-one row shows that membership adds nothing per request), so requests/s should grow
  about linearly with the relays until the load generators or the network are the limit; the
  wake-up cost that shows here stays per relay and is no larger than a relay alone pays at the
  same load. etcd sees no per-request traffic (one renewal per TTL/3 per relay and a transaction
  per channel claimed or emptied: 0.02–0.05 s of CPU per run here), so it does not become the
  bottleneck.
  *Reading the CPU figures:* a relay's I/O thread pays for each wake-up (epoll, a context
  switch, cold caches) and spreads that over the requests it finds; each of three relays finds a
  third of them, so where three relays spend more CPU per request than one, the context
  switches per request column shows how many more wake-ups were paid. Idle polling (the
  default) trades some of those wake-ups for polling; with it off, the difference is wake-ups
  only. Two controls separate the cost of being in a cluster from the cost of sharing the cores
  with more processes: a cluster of one relay (the process count of the relay alone, with etcd
  membership and claims), and three independent relays without etcd, each peer connecting
  straight to the relay placement names (the processes of the cluster, without the cluster). Per request, a relay in a cluster does no more than alone: the directory is
  asked at HELLO only, and a channel it holds is answered from memory.
- **Join latency**: `Connection::connect` of one peer (TCP connect, HELLO, presence snapshot;
  with a REDIRECT a second TCP connect and HELLO at the owner), closed at once, sequential, the
  four kinds interleaved. *Already served*: 20 channels each hold one peer on their owner (the
  claim is answered from memory). *New channel*: a fresh channel per join, so that the owner
  claims it in etcd (one transaction) before admitting the peer; alone, there is no claim.
  The relay alone receives every join and so is still polling (idle polling, 100 µs) when the
  next one comes; a relay of three receives a third of them and is usually asleep: part of the
  difference between the relay alone and the cluster's direct join is that wake-up. The cost of
  the REDIRECT is the difference between the two cluster rows (a second TCP connect and HELLO,
  at a second relay).
- **gRPC**: a native responder on the owner of one channel; a C++ gRPC client (sync API) asks
  `Locate` of another relay, then sends to the owner's gRPC door (as the shipped clients do after
  Locate), each request as its own `Send` RPC and all on one `Requests` stream; then the same
  calls through the relay that does not own the channel, which carries them to the owner (a
  second gRPC hop; each request of the `Requests` stream is carried as a `Send`). A relay that
  refuses such a call instead of carrying it (`UNAVAILABLE` or REFUSED, naming the owner) is
  shown as *refused (not carried)*.
- **Failover**: 100 channels × 3 peers, all placed on r1 and entering through r2 and r3
  (reconnect on: 20 ms first delay, 200 ms cap); once every peer sees exactly its channel's
  others, the load generator sends SIGKILL to r1 and polls every 2 ms. *Back and exact*: the
  time from the kill until the peer has reconnected (to the channel's new owner) and sees exactly
  the other peers of its channel; *reconnected*: until its reconnect completed (*first*: the
  first peer back, about when r1's lease expired and the new owners could claim). r1's lease
  (1 s, renewed every third of it; etcd revokes expired leases on a 500 ms tick) must expire
  before the new owners can claim the channels; the rest is the peers' reconnect delays (up to
  200 ms) and the claims.
- **Join storm**: 10,000 peers over 100 channels all connect at once (no pacing; each peer
  enters through relay k mod 3 in the cluster), without reconnect; a connect that fails is tried
  again (at most 5 attempts, 50 ms apart). *All connected*: every `connect` returned; *all with
  exact presence*: every peer sees its 99 channel mates (counted from presence events, then
  checked against the actual peer ids); peers/s = peers ÷ that time.
"""


def write_section(path, text):
    try:
        with open(path) as f:
            old = f.read()
    except FileNotFoundError:
        old = ""
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
    if pattern.search(old):
        new = pattern.sub(lambda _: text, old)
    else:
        new = old.rstrip("\n") + "\n\n" + text + "\n"
    with open(path, "w") as f:
        f.write(new)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--raw", required=True)
    p.add_argument("--markdown")
    p.add_argument("--elapsed", default="?")
    p.add_argument("--load", default="?")
    p.add_argument("--load-end", default="?")
    p.add_argument("--source", default="?")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--date", help="when the run was made (default: now)")
    args = p.parse_args()
    text = section(load(args.raw), args)
    print(text)
    if args.markdown:
        write_section(args.markdown, text)


if __name__ == "__main__":
    main()
