#!/usr/bin/env python3
"""Checks every waba_monitor_* metric name used by the Grafana dashboard and the Prometheus rules
against the /metrics of a running waba-monitor (deploy/check.sh starts one with `demo`).

    check_metrics.py --pid PID --demo-output FILE --demo-log FILE [--timeout SECONDS] FILE...

PID is a running `waba-monitor demo` whose standard output goes to --demo-output (the address
of /metrics is read from it) and its log to --demo-log (shown if it dies). FILEs are the
dashboard (.json: every string in it is searched) and rule or rule-test files (.yml: the whole
text, comments included, so annotations and examples are checked too).

It waits (bounded) until the daemon has finished a cycle, so the per-number series exist; then
it makes one source fail by writing a wrong token into that source's token file (the daemon
re-reads it every cycle), so the failure counters exist too; then it reads /metrics once with
prometheus_client's strict OpenMetrics parser and checks, for every name used:

- the name is exported (a counter `x` is exposed as `x_total`, a histogram as `x_bucket`,
  `x_sum` and `x_count`, an info family `x` as `x_info`);
- rate(), irate() and increase() are applied only to counters (`_total`) and to histogram or
  summary `_bucket`/`_sum`/`_count`; delta(), idelta(), deriv() and predict_linear() never to a
  counter;
- every label named in a selector `name{label=...}` is one the daemon puts on that series
  (`job` and `instance` are Prometheus's);
- none of the per-state families that the daemon exports only with `[daemon] metrics_detail =
  "full"` is used: the rules and the dashboard must work on the compact series (the `_level`
  gauges and the labels of the `_info` series), which are always exported.

Exit 0 when all is well, 1 with one line per problem otherwise.
"""

import argparse
import json
import os
import re
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from prometheus_client.openmetrics.parser import text_string_to_metric_families

NAME = re.compile(r"(?<![A-Za-z0-9_:])waba_monitor_[A-Za-z0-9_:]*")
# A function whose first argument is a range selector of one metric, e.g. `increase(\n  x[1h])`.
CALL = re.compile(
    r"\b(rate|irate|increase|delta|idelta|deriv|predict_linear|holt_winters)\s*\(\s*"
    r"(waba_monitor_[A-Za-z0-9_:]*)"
)
SELECTOR = re.compile(r"(waba_monitor_[A-Za-z0-9_:]*)\s*\{([^{}]*)\}")
MATCHER = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)")
COUNTER_ONLY = {"rate", "irate", "increase"}
NOT_FOR_COUNTERS = {"delta", "idelta", "deriv", "predict_linear", "holt_winters"}
PROMETHEUS_LABELS = {"job", "instance", "__name__"}

# Families the daemon declares only once a series of them exists, and that a demo run cannot
# produce: (type, why). Their names and types are taken on trust here, so keep this list short.
NOT_PRODUCED_BY_THE_DEMO = {
    "waba_monitor_graph_business_usage_percent": (
        "gauge",
        "exported once Meta answered with X-Business-Use-Case-Usage for a WABA; the demo's "
        "portfolio reads carry none",
    ),
}

# The per-state families (one 0/1 series per state) exported only with [daemon] metrics_detail =
# "full": {name: what to use instead}. The demo runs with the default ("compact"), so they would
# also be reported as not exported; this says why.
FULL_ONLY = {
    "waba_monitor_phone_quality": "waba_monitor_phone_quality_level",
    "waba_monitor_phone_status": "waba_monitor_phone_status_level, or the status label of waba_monitor_phone_info",
    "waba_monitor_phone_health": "waba_monitor_phone_health_level",
    "waba_monitor_waba_review_status": "waba_monitor_waba_review_level, or the review_status label of waba_monitor_waba_info",
    "waba_monitor_waba_verification_status": "the verification_status label of waba_monitor_waba_info",
    "waba_monitor_waba_health": "waba_monitor_waba_health_level",
}

FAILURE_SERIES = "waba_monitor_poll_failures_total"
# A per-number series of the compact metrics (always exported): present once a cycle finished.
FIRST_CYCLE_SERIES = "waba_monitor_phone_quality_level"


def fail(msg):
    print(f"check_metrics: error: {msg}", file=sys.stderr)
    sys.exit(1)


class Daemon:
    def __init__(self, pid, output, log):
        self.pid, self.output, self.log = pid, Path(output), Path(log)

    def alive(self):
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        try:
            # An exited child that its parent has not reaped yet is a zombie.
            stat = Path(f"/proc/{self.pid}/stat").read_text()
            return stat.rsplit(")", 1)[1].split()[0] != "Z"
        except (OSError, IndexError):
            return True

    def died(self, waiting_for):
        log = self.log.read_text(errors="replace") if self.log.exists() else ""
        out = self.output.read_text(errors="replace") if self.output.exists() else ""
        fail(
            f"waba-monitor demo (pid {self.pid}) exited while waiting for {waiting_for}.\n"
            f"--- its output ---\n{out[-3000:]}\n--- its log ---\n{log[-3000:]}"
        )

    def printed(self, pattern):
        if not self.output.exists():
            return None
        m = re.search(pattern, self.output.read_text(errors="replace"))
        return m.group(1) if m else None


def wait_for(daemon, what, deadline, probe, interval=0.25):
    """Calls probe() until it returns something, the daemon dies or the deadline passes."""
    while True:
        if not daemon.alive():
            daemon.died(what)
        got = probe()
        if got:
            return got
        if time.monotonic() > deadline:
            return None
        time.sleep(interval)


def scrape(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.read().decode("utf-8")
    except (urllib.error.URLError, OSError):
        return None


def has_series(text, name):
    return text is not None and re.search(rf"(?m)^{re.escape(name)}[{{ ]", text) is not None


def break_a_token(config_path):
    """Overwrites the token file of the config's first source that has one; returns its path."""
    import tomllib

    config = tomllib.loads(Path(config_path).read_text())
    for block, key in (("bsp", "token_file"), ("meta", "access_token_file")):
        for source in config.get(block, []):
            if key in source:
                path = Path(config_path).parent / source[key]
                path.write_text("check-metrics-wrong-token\n")
                return path, source.get("name", "?")
    return None, None


def exported(exposition):
    """{sample name: (family, type)} and {sample name: set of label names} of the exposition."""
    samples, labels = {}, {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            samples[sample.name] = (family.name, family.type)
            labels.setdefault(sample.name, set()).update(sample.labels)
    return samples, labels


def usages(path):
    """(location, text) pairs to search for names in one dashboard or rule file."""
    if path.suffix == ".json":
        dash = json.loads(path.read_text(encoding="utf-8"))
        out = []

        def walk(node, where):
            if isinstance(node, dict):
                if node.get("type") not in (None, "row") and "id" in node and "title" in node:
                    where = f'panel {node["id"]} "{node["title"]}"'
                elif "name" in node and ("query" in node or "definition" in node):
                    where = f'variable ${node["name"]}'
                for key, value in node.items():
                    if key == "targets" and isinstance(value, list):
                        for target in value:
                            walk(target, f'{where} query {target.get("refId", "?")}')
                    else:
                        walk(value, where or key)
            elif isinstance(node, list):
                for item in node:
                    walk(item, where)
            elif isinstance(node, str) and "waba_monitor_" in node:
                out.append((where, node))

        walk(dash, "")
        return [(f"{path}: {where}", text) for where, text in out]
    text = path.read_text(encoding="utf-8")
    return [(str(path), text)]


def located(location, text, offset):
    """file:line for rule files (the whole text is one usage), the panel otherwise."""
    if location.endswith((".yml", ".yaml")):
        return f"{location}:{text.count(chr(10), 0, offset) + 1}"
    return location


def hint(name, samples):
    if name + "_total" in samples:
        return f" (it is a counter: use {name}_total)"
    if name.endswith("_total") and name[: -len("_total")] in samples:
        base = name[: -len("_total")]
        return f" ({base} is a {samples[base][1]}, exported without _total)"
    if name + "_info" in samples:
        return f" (an info family: use {name}_info)"
    for suffix in ("_bucket", "_sum", "_count"):
        if name + suffix in samples:
            return f" (a {samples[name + suffix][1]}: use {name}_bucket, _sum or _count)"
    return ""


def check(files, samples, labels):
    """Problems (one line each; a name not exported is one problem listing every place that
    uses it), {name: places used}, and the names taken on trust."""
    problems, missing, used, trusted, full_only = [], {}, {}, set(), {}

    def kind(name):
        if name in samples:
            return samples[name][1]
        if name in NOT_PRODUCED_BY_THE_DEMO:
            trusted.add(name)
            return NOT_PRODUCED_BY_THE_DEMO[name][0]
        return None

    for path in files:
        for location, text in usages(Path(path)):
            for m in NAME.finditer(text):
                name = m.group(0)
                where = located(location, text, m.start())
                used.setdefault(name, []).append(where)
                if name in FULL_ONLY:
                    full_only.setdefault(name, []).append(where)
                elif kind(name) is None:
                    missing.setdefault(name, []).append(where)
            for m in CALL.finditer(text):
                func, name = m.groups()
                if name in FULL_ONLY:
                    continue  # reported above
                typ = kind(name)
                if typ is None:
                    continue  # reported above
                where = located(location, text, m.start())
                is_counter_like = typ == "counter" or (
                    typ in ("histogram", "summary", "gaugehistogram")
                    and name.endswith(("_bucket", "_sum", "_count"))
                )
                if func in COUNTER_ONLY and not is_counter_like:
                    problems.append(
                        f"{where}: {func}() over {name}, a {typ}: {func}() needs a counter "
                        "(a gauge is read as it is, or with delta()/deriv())"
                    )
                if func in NOT_FOR_COUNTERS and typ == "counter":
                    problems.append(
                        f"{where}: {func}() over {name}, a counter: use rate() or increase()"
                    )
            for m in SELECTOR.finditer(text):
                name, matchers = m.groups()
                if name not in labels:
                    continue  # not exported (reported above) or no series to compare with
                known = labels[name] | PROMETHEUS_LABELS
                for label in MATCHER.findall(matchers):
                    if label not in known:
                        problems.append(
                            f"{located(location, text, m.start())}: {name} has no label "
                            f"{label!r} (it has: {', '.join(sorted(labels[name])) or 'none'})"
                        )
    not_exported = [
        f"{name} is not exported by the daemon{hint(name, samples)}; used at:\n      "
        + "\n      ".join(dict.fromkeys(places))
        for name, places in missing.items()
    ]
    not_compact = [
        f"{name} is exported only with [daemon] metrics_detail = \"full\"; use {FULL_ONLY[name]}"
        "; used at:\n      " + "\n      ".join(dict.fromkeys(places))
        for name, places in full_only.items()
    ]
    return not_compact + not_exported + problems, used, trusted


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--demo-output", required=True)
    ap.add_argument("--demo-log", required=True)
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--save", help="write the /metrics text that was checked here")
    ap.add_argument("files", nargs="+")
    args = ap.parse_args()

    daemon = Daemon(args.pid, args.demo_output, args.demo_log)
    deadline = time.monotonic() + args.timeout
    url = wait_for(daemon, "its address", deadline, lambda: daemon.printed(r"metrics:\s+(http://\S+/metrics)"))
    if url is None:
        fail(f"waba-monitor demo printed no `metrics: http://.../metrics` line in {args.timeout:.0f} s")
    config = daemon.printed(r"(?m)^\s*config:\s+(.+?)\s*$")
    print(f"  daemon: {url} (pid {args.pid})")

    first = wait_for(
        daemon,
        "its first poll cycle",
        deadline,
        lambda: (lambda t: t if has_series(t, FIRST_CYCLE_SERIES) else None)(scrape(url)),
    )
    if first is None:
        fail(f"{url} had no {FIRST_CYCLE_SERIES} series after {args.timeout:.0f} s: no poll cycle finished")
    print("  first cycle done: per-number series present")

    # The failure counters only exist once something failed: make one source fail.
    if not has_series(first, FAILURE_SERIES) and config:
        token, source = break_a_token(config)
        if token is not None:
            print(f"  wrote a wrong token into {token} so that source {source!r} fails")
            # A few cycles; what did not appear by then is reported below as not exported.
            failures_deadline = min(deadline, time.monotonic() + 30)
            wait_for(
                daemon,
                FAILURE_SERIES,
                failures_deadline,
                lambda: has_series(scrape(url), FAILURE_SERIES),
            )

    text = scrape(url)
    if text is None:
        fail(f"{url} stopped answering")
    if args.save:
        Path(args.save).write_text(text)
    try:
        samples, labels = exported(text)
    except ValueError as e:
        fail(f"{url} is not valid OpenMetrics text: {e}")

    problems, used, trusted = check(args.files, samples, labels)
    for name in sorted(trusted):
        print(f"  not checked live: {name} ({NOT_PRODUCED_BY_THE_DEMO[name][1]})")
    if problems:
        print(f"check_metrics: {len(problems)} problem(s) with the metric names used:", file=sys.stderr)
        for p in dict.fromkeys(problems):
            print(f"  {p}", file=sys.stderr)
        sys.exit(1)
    names = sorted(used)
    print(f"  SUCCESS: {len(names)} metric names, all exported with fitting types and labels:")
    for name in names:
        typ = samples[name][1] if name in samples else NOT_PRODUCED_BY_THE_DEMO[name][0] + ", trusted"
        print(f"    {name} ({typ})")


if __name__ == "__main__":
    main()
