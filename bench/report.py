#!/usr/bin/env python3
"""bench/report.py: turns the raw JSON lines of bench/run.sh into the markdown table (median and
min-max per system, ratios to the baselines of the same run, goals) and bench/results.json."""
import argparse
import datetime
import json
import os
import platform
import statistics
import sys

SYSTEMS = [("switchboard", "Switchboard"), ("forwarder", "TCP forwarder"),
           ("direct", "Direct TCP"), ("nats", "nats-server")]

# (workload, metric, label, unit)
ROWS = [
    ("rr-lat", "p50_us", "rr-lat: p50", "µs"),
    ("rr-lat", "p99_us", "rr-lat: p99", "µs"),
    ("rr-lat", "p999_us", "rr-lat: p99.9", "µs"),
    ("rr-lat", "rps", "rr-lat: req/s", "req/s"),
    ("rr-conc", "rps", "rr-conc 16→1: req/s", "req/s"),
    ("rr-conc", "p50_us", "rr-conc 16→1: p50", "µs"),
    ("rr-conc", "p99_us", "rr-conc 16→1: p99", "µs"),
    ("rr-conc-any", "rps", "rr-conc 16→any of 2: req/s", "req/s"),
    ("rr-conc-any", "p50_us", "rr-conc 16→any of 2: p50", "µs"),
    ("rr-conc-any", "p99_us", "rr-conc 16→any of 2: p99", "µs"),
    ("stream", "mb_s", "stream: MB/s at receiver", "MB/s"),
    ("stream", "server_hwm_mib", "stream: server peak RSS", "MiB"),
    ("small", "msgs_s", "small: msgs/s at receiver", "msg/s"),
    ("small", "lost", "small: messages lost", "msgs"),
    ("discrete-64k", "mb_s", "discrete 65,516 B messages: MB/s at receiver", "MB/s"),
    ("discrete-64k", "relay_cpu_us_per_msg", "discrete 65,516 B: relay CPU per message", "µs"),
    ("discrete-16b", "msgs_s", "discrete 16 B messages: msg/s at receiver", "msg/s"),
    ("discrete-16b", "relay_cpu_us_per_msg", "discrete 16 B: relay CPU per message", "µs"),
    ("fanout", "aggregate_mb_s", "fanout 1→8: aggregate MB/s", "MB/s"),
    ("fanout", "server_hwm_mib", "fanout: server peak RSS", "MiB"),
    ("conns", "kib_per_peer", "conns: relay RSS per idle peer", "KiB"),
    ("conns", "join_rate", "conns: join rate", "peers/s"),
    ("join-storm", "join_rate", "join-storm: peers/s to exact presence", "peers/s"),
    ("join-storm", "storm_seconds", "join-storm: time to exact presence", "s"),
    ("join-storm", "server_cpu_s", "join-storm: server CPU time", "s"),
    ("join-storm-raw", "join_rate", "join-storm, raw-socket peers: peers/s to exact presence",
     "peers/s"),
    ("join-storm-raw", "storm_seconds", "join-storm, raw-socket peers: time to exact presence",
     "s"),
]

# The gateway table: a gRPC sender through the relay (to a native or a gRPC responder), and the
# direct gRPC baselines without a relay (one stream; one RPC per request).
GW_SYSTEMS = [("gw-native", "gRPC → relay → native"), ("gw-grpc", "gRPC → relay → gRPC"),
              ("gw-native-mux", "gRPC → relay → native, one Requests stream"),
              ("gw-grpc-mux", "gRPC → relay → gRPC, one Requests stream"),
              ("grpc-direct", "Direct gRPC (one stream)"),
              ("grpc-direct-rpc", "Direct gRPC, 1 RPC per request"),
              ("grpc-forward", "gRPC → trivial gRPC forwarder → gRPC (one stream)")]
# The systems each gateway goal is checked for (native responder, gRPC responder): a stream is
# one Send RPC; request-reply is measured on one Requests stream, the gateway's way to make
# many requests (one Send RPC per request is shown beside it).
GW_GOAL_SYSTEMS = {"gw-stream": ("gw-native", "gw-grpc"),
                   "gw-rr": ("gw-native-mux", "gw-grpc-mux")}
GW_ROWS = [
    ("gw-stream", "mb_s", "gw-stream: MB/s at receiver", "MB/s"),
    ("gw-stream", "server_hwm_mib", "gw-stream: relay (or direct server) peak RSS", "MiB"),
    ("gw-rr", "p50_us", "gw-rr: p50", "µs"),
    ("gw-rr", "p99_us", "gw-rr: p99", "µs"),
    ("gw-rr", "p999_us", "gw-rr: p99.9", "µs"),
    ("gw-rr", "rps", "gw-rr: req/s", "req/s"),
]

# (workload, metric) -> list of (description, baseline system or None, factor, comparison,
# statistic[, systems]): "le" means switchboard <= factor * baseline (or <= factor when no
# baseline). Goals met by earlier bars stay in the table beside the current ones; the optional
# last element limits a gateway goal to some of GW_GOAL_SYSTEMS' systems.
GOALS = {
    ("rr-lat", "p50_us"): [("≤ 1.3× forwarder", "forwarder", 1.3, "le", "median"),
                           ("≤ 0.7× NATS", "nats", 0.7, "le", "median"),
                           ("≤ 0.8× forwarder", "forwarder", 0.8, "le", "median")],
    ("rr-lat", "p99_us"): [("≤ NATS", "nats", 1.0, "le", "median")],
    ("rr-lat", "p999_us"): [("≤ forwarder", "forwarder", 1.0, "le", "median")],
    ("rr-conc", "rps"): [("≥ 1.5× NATS", "nats", 1.5, "ge", "median")],
    ("rr-conc-any", "rps"): [("≥ 1.5× NATS", "nats", 1.5, "ge", "median")],
    ("stream", "mb_s"): [("≥ 0.7× forwarder", "forwarder", 0.7, "ge", "median")],
    ("stream", "server_hwm_mib"): [("≤ 32 MiB (max of runs)", None, 32.0, "le", "max")],
    ("small", "msgs_s"): [("≥ NATS", "nats", 1.0, "ge", "median")],
    ("small", "lost"): [("0 (every run)", None, 0.0, "le", "max")],
    ("discrete-64k", "mb_s"): [("≥ 0.7× forwarder", "forwarder", 0.7, "ge", "median")],
    ("discrete-16b", "msgs_s"): [("≥ 2× NATS", "nats", 2.0, "ge", "median")],
    ("fanout", "aggregate_mb_s"): [("≥ 2× NATS", "nats", 2.0, "ge", "median")],
    ("fanout", "server_hwm_mib"): [("≤ 32 MiB (max of runs)", None, 32.0, "le", "max")],
    ("conns", "kib_per_peer"): [("≤ 8 KiB", None, 8.0, "le", "median")],
    ("join-storm", "join_rate"): [("≥ NATS", "nats", 1.0, "ge", "median")],
    ("join-storm", "storm_seconds"): [("≤ 1.5 s", None, 1.5, "le", "median")],
}
# The same, checked for each system of GW_GOAL_SYSTEMS.
GW_GOALS = {
    ("gw-stream", "mb_s"): [("≥ 0.6× direct gRPC", "grpc-direct", 0.6, "ge", "median"),
                            ("≥ 1.5× direct gRPC", "grpc-direct", 1.5, "ge", "median")],
    ("gw-rr", "p50_us"): [("≤ 2× direct gRPC ping-pong", "grpc-direct", 2.0, "le", "median"),
                          ("≤ 1.2× direct gRPC ping-pong", "grpc-direct", 1.2, "le", "median",
                           ("gw-native-mux",)),
                          ("≤ 0.6× trivial gRPC forwarder", "grpc-forward", 0.6, "le", "median",
                           ("gw-grpc-mux",))],
}


def fmt(v):
    if v is None:
        return "—"
    a = abs(v)
    if a >= 10000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if 0 < a < 0.005:
        return f"{v:.1e}"  # a rare allocation must not print as 0.00
    return f"{v:.2f}"


def stats(values):
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "n": len(values)}


def cell(s, errors):
    if s is None:
        return f"error ×{errors}" if errors else "—"
    text = fmt(s["median"])
    if s["n"] > 1:
        text += f" ({fmt(s['min'])}–{fmt(s['max'])})"
    if errors:
        text += f" +{errors} err"
    return text


def load_raw(path):
    records = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    print(f"report: bad line {line!r}", file=sys.stderr)
    for r in records:
        if "server_hwm_kib" in r:
            r["server_hwm_mib"] = r["server_hwm_kib"] / 1024.0
    return records


# A workload measured against another's baselines, taken in the same run: the raw-socket storm
# of the relay is compared with the NATS storm of join-storm.
SHARED_BASELINES = {"join-storm-raw": "join-storm"}


def summarise(records):
    summary, errors = {}, {}
    for r in records:
        key = (r.get("workload"), r.get("system"))
        if "error" in r:
            errors[key] = errors.get(key, 0) + 1
            continue
        for metric, value in r.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                summary.setdefault(key, {}).setdefault(metric, []).append(float(value))
    for workload, source in SHARED_BASELINES.items():
        for system, _ in SYSTEMS:
            if system != "switchboard" and (source, system) in summary:
                summary.setdefault((workload, system), summary[(source, system)])
    return {k: {m: stats(v) for m, v in ms.items()} for k, ms in summary.items()}, errors


def hotpath_rows(path):
    """Google Benchmark JSON -> {label: stats of allocs_per_frame / allocs_per_request}."""
    if not path or not os.path.exists(path):
        return {}
    with open(path) as f:
        data = json.load(f)
    values = {}
    for b in data.get("benchmarks", []):
        if b.get("run_type") != "iteration":
            continue
        name = b.get("run_name", b["name"]).replace("/real_time", "")
        for counter in ("allocs_per_frame", "allocs_per_request"):
            if counter in b:
                values.setdefault((name, counter), []).append(float(b[counter]))
    return {k: stats(v) for k, v in values.items()}


def check_goals(summary, goal_table, system):
    goals = []
    for (workload, metric), checks in goal_table.items():
        sb = summary.get((workload, system), {}).get(metric)
        for check in checks:
            description, baseline, factor, op, stat = check[:5]
            if len(check) > 5 and system not in check[5]:
                continue
            goal = {"workload": workload, "metric": metric, "goal": description}
            if system != "switchboard":
                goal["system"] = system
            if sb is None:
                goal.update(met=None, note=f"no {system} result")
                goals.append(goal)
                continue
            value = sb[stat]
            if baseline:
                base = summary.get((workload, baseline), {}).get(metric)
                if base is None:
                    goal.update(value=value, met=None, note=f"no {baseline} result")
                    goals.append(goal)
                    continue
                limit = factor * base["median"]
                goal["ratio"] = value / base["median"] if base["median"] else None
            else:
                limit = factor
            goal.update(value=value, limit=limit, met=value <= limit if op == "le" else value >= limit)
            goals.append(goal)
    return goals


def evaluate(summary, hot, workloads):
    goals = [g for g in check_goals(summary, GOALS, "switchboard") if g["workload"] in workloads]
    for (workload, metric), checks in GW_GOALS.items():
        if workload not in workloads:
            continue
        for system in GW_GOAL_SYSTEMS[workload]:
            goals += check_goals(summary, {(workload, metric): checks}, system)
    frame_stats = [s for (name, counter), s in hot.items() if counter == "allocs_per_frame"]
    if frame_stats:
        worst = max(s["max"] for s in frame_stats)
        goals.append({"workload": "hotpath", "metric": "allocs_per_frame",
                      "goal": "0 heap allocations per forwarded frame", "value": worst,
                      "limit": 0.0, "met": worst == 0.0})
    return goals


def machine_note(args):
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": model, "kernel": platform.release(),
            "note": f"{os.cpu_count()} cores, shared, noisy (other work may run at the same time)",
            "loadavg_at_start": args.load, "loadavg_at_end": args.load_end,
            "relay_threads": args.relay_threads, "source": args.source,
            "relay_grpc_door": bool(int(args.grpc))}


def loaded_machine_note(machine):
    """A warning when other work kept the cores busy: figures are then not comparable with a
    run on a quiet machine (ratios within the run still are)."""
    try:
        load = float(str(machine["loadavg_at_start"]).split()[0])
    except (ValueError, IndexError):
        return ""
    cores = machine.get("nproc") or 1
    if load <= 2 * cores:
        return ""
    return (f"**Busy machine**: load average {load:g} on {cores} cores when the run started. "
            "Every figure is lower and noisier than on a quiet machine; compare ratios within "
            "this run, not figures across runs.")


def markdown(summary, errors, hot, goals, machine, args, date):
    out = []
    size = "quick (~1/10 sizes)" if args.quick else "full"
    out.append("# Switchboard benchmark results\n")
    out.append(f"Latest run: **{date}**, {size}, {args.runs} runs per workload, "
               f"{args.elapsed} s in all (`bench/run.sh`).\n")
    out.append(f"Machine: {machine['cpu']}, {machine['note']}; kernel {machine['kernel']}; "
               f"load average {machine['loadavg_at_start']} at start, "
               f"{machine['loadavg_at_end']} at the end. Relay: "
               f"`--threads {machine['relay_threads']}`, gRPC door "
               f"{'on (random port; idle but in the gw-* workloads)' if machine['relay_grpc_door'] else 'off (on in the gw-* workloads)'}. "
               f"Code: {machine['source']}. Everything on 127.0.0.1.\n")
    load_note = loaded_machine_note(machine)
    if load_note:
        out.append(load_note + "\n")
    out.append("Reproduce: `bench/run.sh` (builds the `release` preset, installs nats-server and "
               "libnats-dev if missing; about 5–6 min) or `bench/run.sh --quick` (smoke run, "
               "~1/10 sizes). Raw numbers: `bench/results.json`.\n")
    out.append("Cells: median (min–max) over the runs. Ratios: Switchboard median ÷ baseline "
               "median of the same run. Met: ✅ / ❌ / ? (missing data).\n")
    head = ["Workload: metric", "Unit"] + [n for _, n in SYSTEMS] + ["SB ÷ fwd", "SB ÷ NATS",
                                                                        "Goal", "Met"]
    table = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    goal_index = {}
    for g in goals:
        goal_index.setdefault((g["workload"], g["metric"]), []).append(g)
    for workload, metric, label, unit in ROWS:
        if not any(w == workload for w, _ in summary) and not any(w == workload
                                                                  for w, _ in errors):
            continue
        row = [label, unit]
        medians = {}
        for system, _ in SYSTEMS:
            s = summary.get((workload, system), {}).get(metric)
            errs = errors.get((workload, system), 0)
            if s is None and not errs and (workload, system) not in summary:
                row.append("—")
                continue
            row.append(cell(s, errs))
            if s is not None:
                medians[system] = s["median"]
        for base in ("forwarder", "nats"):
            sb, b = medians.get("switchboard"), medians.get(base)
            row.append(f"{sb / b:.2f}×" if sb is not None and b else "—")
        gs = [g for g in goal_index.get((workload, metric), []) if "system" not in g]
        row.append("; ".join(g["goal"] for g in gs) if gs else "")
        row.append(" ".join("?" if g.get("met") is None else ("✅" if g["met"] else "❌")
                            for g in gs))
        table.append("| " + " | ".join(row) + " |")
    for (name, counter), s in sorted(hot.items()):
        what = "per forwarded frame" if counter == "allocs_per_frame" else "per 1-frame request"
        met = ("✅" if s["max"] == 0 else "❌") if counter == "allocs_per_frame" else ""
        goal = "0" if counter == "allocs_per_frame" else ""
        table.append(f"| hot path {name}: relay heap allocs {what} | allocs | {cell(s, 0)} | — "
                     f"| — | — | — | — | {goal} | {met} |")
    if len(table) > 2:  # a run of only some workloads (--only) may have none of these
        out.extend(table)
        out.append("")
    out.extend(gateway_table(summary, errors, goal_index))
    out.append("")
    met = sum(1 for g in goals if g.get("met"))
    out.append(f"Goals met: **{met} of {len(goals)}**.\n")
    for g in goals:
        mark = "?" if g.get("met") is None else ("met" if g["met"] else "NOT met")
        detail = g.get("note", "")
        if "value" in g:
            detail = f"value {fmt(g['value'])}, limit {fmt(g.get('limit'))}"
            if g.get("ratio") is not None:
                detail += f", ratio {g['ratio']:.2f}×"
        who = f" ({g['system']})" if "system" in g else ""
        out.append(f"- {g['workload']} {g['metric']}{who} {g['goal']}: **{mark}** ({detail})")
    out.append("")
    out.append(WORKLOAD_NOTES)
    out.append("Where the native door's time goes in the rows that miss their goal: "
               "[NATIVE_PROFILE.md](NATIVE_PROFILE.md).\n")
    return "\n".join(out)


def gateway_table(summary, errors, goal_index):
    """The gRPC gateway rows: their own columns (gRPC paths through the relay, direct gRPC)."""
    if not any(w.startswith("gw-") for w, _ in list(summary) + list(errors)):
        return []
    out = ["gRPC gateway (a C++ gRPC client sends; the relay's gRPC door; baseline: direct gRPC "
           "between two processes, no relay). Ratios: median ÷ direct gRPC median of the same "
           "run (one stream: 64 KiB chunks for gw-stream, 128 B ping-pong for gw-rr). The "
           "native and gRPC ratio columns are those of one Send for gw-stream and of the "
           "Requests stream for gw-rr.\n"]
    head = (["Workload: metric", "Unit"] + [n for _, n in GW_SYSTEMS] +
            ["native ÷ direct", "gRPC ÷ direct", "native per RPC ÷ 1-RPC direct",
             "gRPC ÷ gRPC forwarder", "Goal", "Met"])
    out.append("| " + " | ".join(head) + " |")
    out.append("|" + "---|" * len(head))
    for workload, metric, label, unit in GW_ROWS:
        row, medians = [label, unit], {}
        for system, _ in GW_SYSTEMS:
            s = summary.get((workload, system), {}).get(metric)
            errs = errors.get((workload, system), 0)
            row.append(cell(s, errs))
            if s is not None:
                medians[system] = s["median"]
        native, grpc_system = GW_GOAL_SYSTEMS[workload]
        for system, base in ((native, "grpc-direct"), (grpc_system, "grpc-direct"),
                             ("gw-native", "grpc-direct-rpc"), (grpc_system, "grpc-forward")):
            v, b = medians.get(system), medians.get(base)
            row.append(f"{v / b:.2f}×" if v is not None and b else "—")
        gs = [g for g in goal_index.get((workload, metric), []) if "system" in g]
        both = len(GW_GOAL_SYSTEMS[workload])
        texts = []
        for g in gs:
            n = sum(1 for o in gs if o["goal"] == g["goal"])
            text = g["goal"] + (" (both)" if n == both else f" ({g['system']})")
            if text not in texts:
                texts.append(text)
        row.append("; ".join(texts))
        row.append(" ".join("?" if g.get("met") is None else ("✅" if g["met"] else "❌")
                            for g in gs))
        out.append("| " + " | ".join(row) + " |")
    return out


WORKLOAD_NOTES = """Workloads (full sizes; `--quick` divides them by about 10):

- **rr-lat**: 1 requester, 1 responder, 128 B request and 128 B response, 5,000 sequential
  after 500 warm-up; round trip per request with steady_clock. Forwarder/direct: the same
  128 B ping-pong over TCP (through `tcp-forwarder`, or straight). NATS: `natsConnection_Request`
  to a subscriber that publishes the reply (send-ASAP on both).
- **rr-conc**: 16 requester connections, each sequential, 200,000 requests in all (after 5%
  warm-up), to 1 responder, and to any of 2 responders (relay round-robin / NATS queue group).
- **stream**: 1 GiB in 64 KiB writes as one Send to a responder that reads it; MB/s (10^6 B/s)
  = bytes / (receiver's last byte − sender's start), both on CLOCK_MONOTONIC. NATS: 64 KiB
  messages with harness flow control (window 128 messages = 8 MiB, ack every 32; publisher
  send-ASAP, its fastest setting here).
- **small**: 1,000,000 broadcasts of 16 B, each one frame, 1,000 in flight (each summary sends
  the next; relay started with `--max-streams-per-connection 1024`, as its default of 256
  streams per connection would cap the window), to one receiver; the receiver counts them
  (none may be lost). NATS: 16 B publishes, window 32,768, ack every 4,096.
- **discrete**: whole messages (protocol version 3) through the public client API, one
  `Connection::publish` call per message with default options (the relay's 1 MiB message window
  bounds what is in flight), to one receiver that counts them: 16,384 messages of 65,516 B (the
  largest body in one default 64 KiB frame) against the same bytes as one raw TCP stream through
  `tcp-forwarder`, and 1,000,000 messages of 16 B against nats-server pub/sub as in **small**.
  Relay CPU per message: user + system of the relay over the run ÷ messages. Where the time
  goes: [DISCRETE_PROFILE.md](DISCRETE_PROFILE.md).
- **fanout**: one 256 MiB broadcast in 64 KiB writes to 8 receivers (one process, 8
  connections); aggregate MB/s = bytes delivered to all / time to the last receiver's last byte.
  NATS: 8 subscriptions on 8 connections, window 128 messages per subscriber.
- **conns**: 10,000 peers over 100 channels join (128 connecting at a time), then idle 1 s;
  relay VmRSS growth ÷ peers, and peers ÷ join time (joins include presence fan-out). NATS:
  10,000 raw-protocol connections (CONNECT, SUB to one of 100 subjects, PING/PONG), 128 at a
  time; nats-server VmRSS growth ÷ connections (NATS has no presence to fan out).
- **join-storm**: 10,000 peers over 100 channels connect at once (1,024 connects in flight, as a
  relay restarting sees its peers come back), from one client thread; time from the first
  connect until every peer's presence view is exact (its whole channel, the channel's version),
  and peers ÷ that time. Relay started with `--connect-rate-per-address 0` (one source address).
  NATS: the same client storms nats-server with raw connects (CONNECT, SUB, PING/PONG), same
  concurrency. Server CPU time: user + system of the relay or nats-server for the whole run.
  **join-storm, raw-socket peers**: the same storm of the relay from peers on raw sockets, as
  NATS's are (HELLO, then every PRESENCE frame applied to a view; no client library): what the
  relay and the protocol cost without the client library's share.
- **server peak RSS**: VmHWM of the relay (or nats-server / tcp-forwarder) process, restarted
  for each run of each workload.
- **hot path**: `hotpath_alloc` (Google Benchmark) runs an in-process relay with 1 I/O thread and
  counts heap allocations made by non-client threads while DATA frames stream through
  (`HOTPATH_TRACE=1` prints the allocating call stacks).
- **gw-stream**: 1 GiB in 64 KiB `chunk` messages as one `Send` RPC from a C++ gRPC client
  (sync API, `gw-bench`) through the relay's gRPC door, to a native responder
  (`switchboard-bench responder`) and to a gRPC `Respond` peer (`gw-bench respond`), each reading
  it whole; MB/s at the receiver as for **stream**. Baseline: the same client and messages on a
  direct gRPC stream to `gw-bench serve-direct` (no relay), which reads it and answers alike.
  Beside it, the same stream through `gw-bench serve-forward`, the trivial gRPC forwarder of
  gw-rr below: two gRPC legs and nothing else, the floor of any relay between gRPC peers.
- **gw-rr**: 128 B request and 128 B response, 5,000 sequential after 500 warm-up, through the
  gateway in two ways: all on one `Requests` stream (each request an `open` with the body and
  `last`, under its own id; the goal's rows), and each as its own `Send` RPC (the open message
  carries the body, half-closed with it). Baseline (the goal's): 128 B ping-pong of `chunk`s on
  one direct gRPC stream; beside it, one direct RPC per request, which separates the cost of a
  new RPC from the cost of the relay, and the same ping-pong through `gw-bench serve-forward`, a
  trivial gRPC forwarder (each message passed on unchanged over one upstream stream, a thread per
  direction, sync API): two gRPC legs and nothing else, the floor of any relay between two gRPC
  peers, which the gRPC → relay → gRPC row is compared with. Where the gateway's time goes:
  [GATEWAY_PROFILE.md](GATEWAY_PROFILE.md).
"""


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--raw", required=True)
    p.add_argument("--hotpath")
    p.add_argument("--json")
    p.add_argument("--markdown")
    p.add_argument("--elapsed", default="?")
    p.add_argument("--runs", default="3")
    p.add_argument("--load", default="?")
    p.add_argument("--load-end", default="?")
    p.add_argument("--source", default="?")
    p.add_argument("--relay-threads", default="?")
    p.add_argument("--grpc", default="1")
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()

    records = load_raw(args.raw)
    summary, errors = summarise(records)
    hot = hotpath_rows(args.hotpath)
    workloads = {w for w, _ in list(summary) + list(errors)}
    if hot:
        workloads.add("hotpath")
    goals = evaluate(summary, hot, workloads)
    machine = machine_note(args)
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    text = markdown(summary, errors, hot, goals, machine, args, date)
    print(text)
    if args.markdown:
        # The "Reading the run" section is written by hand about the latest full run; the
        # "Discrete messages" section comes from bench/discrete.sh's runs of every API,
        # the "Cluster" one from bench/cluster_report.py's own run, the "Many channels" one
        # from bench/channels.sh's and the "Cores" one from bench/cores.sh's: keep them.
        try:
            with open(args.markdown) as f:
                old = f.read()
            for name in ("reading-bench", "discrete-bench", "cluster-bench", "channels-bench",
                         "cores-bench"):
                begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
                if begin in old and end in old:
                    text += "\n\n" + old[old.index(begin):old.index(end) + len(end)]
        except FileNotFoundError:
            pass
        with open(args.markdown, "w") as f:
            f.write(text + "\n")
    if args.json:
        doc = {"date": date, "quick": args.quick, "runs": int(args.runs),
               "elapsed_s": args.elapsed, "machine": machine, "raw": records,
               "summary": {f"{w}/{s}": m for (w, s), m in summary.items()},
               "errors": {f"{w}/{s}": n for (w, s), n in errors.items()},
               "hotpath": {f"{n}/{c}": s for (n, c), s in hot.items()}, "goals": goals}
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
