"""Every metric the Grafana dashboard (docs/grafana/switchboard.json) queries is one a live relay
exports: the PromQL of every panel and template variable is reduced to its metric names, which
are looked up in the /metrics of a relay started for the test, as a one-relay cluster on a test
etcd so that the cluster metrics are there too."""

import argparse
import json
import re
import sys
import time
from pathlib import Path

from relay_process import Relay

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "support"))
from cluster import Etcd  # noqa: E402

ETCD_START_TIMEOUT_S = 20

PROMQL_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
    "offset", "inf", "nan",
    # Aggregation operators, which may be followed by "by (...)" rather than "(".
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile",
    "count_values", "group",
}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def queries(node):
    """Every PromQL text of the dashboard: panel targets' expr and template variables' queries."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "definition") and isinstance(value, str):
                yield value
            elif key == "query" and isinstance(value, str) and node.get("type") != "datasource":
                yield value
            else:
                yield from queries(value)
    elif isinstance(node, list):
        for item in node:
            yield from queries(item)


def metric_names(expr):
    """Metric names in one PromQL expression (or label_values(...) variable query)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)           # string literals
    text = re.sub(r"\{[^}]*\}", "", text)                     # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)                    # range selectors
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", r"\1", text)
    text = re.sub(r"\$\{?\w+\}?", "", text)                   # dashboard variables
    # label_values(metric, label): the label is not a metric.
    text = re.sub(r"label_values\(\s*([a-zA-Z_:][\w:]*)\s*,\s*\w+\s*\)", r"\1", text)
    names = set()
    for match in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", text):
        name = match.group(0)
        rest = text[match.end():].lstrip()
        if rest.startswith("("):
            continue  # a function
        if name.lower() in PROMQL_KEYWORDS:
            continue
        if re.fullmatch(r"\d+[smhdwy]", name):
            continue
        names.add(name)
    return names


def exported(metrics_text):
    """(sample names, {family: type}) of a Prometheus text exposition."""
    samples, types = set(), {}
    for line in metrics_text.splitlines():
        if line.startswith("# TYPE "):
            _, _, family, kind = line.split(maxsplit=3)
            types[family] = kind
        elif line and not line.startswith("#"):
            samples.add(re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line).group(0))
    return samples, types


def is_exported(name, samples, types):
    if name in samples or name in types:
        return True
    for suffix in HISTOGRAM_SUFFIXES:
        base = name[: -len(suffix)]
        if name.endswith(suffix) and types.get(base) in ("histogram", "summary"):
            return True
    return False


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", required=True)
    parser.add_argument("--dashboard", required=True)
    args = parser.parse_args()

    with open(args.dashboard) as f:
        dashboard = json.load(f)
    used = {}
    for expr in queries(dashboard):
        for name in metric_names(expr):
            used.setdefault(name, expr)
    # The extraction itself must work, or the test would pass on nothing.
    for expected in ("switchboard_bytes_sent_total", "switchboard_streams_total",
                     "switchboard_build_info", "switchboard_cluster_fenced"):
        assert expected in used, f"{expected} not found among the dashboard's metric names"
    assert all(name.startswith("switchboard_") for name in used), sorted(used)

    etcd = Etcd()
    try:
        relay = Relay(args.server, "--cluster-etcd", etcd.url, "--node-id", "grafana-test")
        try:
            # The cluster metrics appear once the relay has its first membership view.
            deadline = time.monotonic() + ETCD_START_TIMEOUT_S
            while True:
                status, _, body = relay.get("/metrics")
                assert status == 200, f"/metrics: {status}"
                if b"switchboard_cluster_members 1" in body or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
        finally:
            relay.stop()
    finally:
        etcd.stop()
    samples, types = exported(body.decode())

    missing = sorted(n for n in used if not is_exported(n, samples, types))
    print(f"dashboard uses {len(used)} metric names; the relay exports {len(types)} families")
    for name in sorted(used):
        print(f"  {name}: {'MISSING' if name in missing else 'exported'}")
    if missing:
        for name in missing:
            print(f"not ok - {name} (in: {used[name]}) is not in /metrics", file=sys.stderr)
        return 1
    print("ok - every metric of the dashboard is exported")
    return 0


if __name__ == "__main__":
    sys.exit(main())
