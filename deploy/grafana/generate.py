#!/usr/bin/env python3
"""Generate the moltbot Grafana dashboard (deploy/grafana/moltbot.json) from code.

Run `python3 deploy/grafana/generate.py` after editing; `--check` exits non-zero when the committed JSON
is out of date (CI). Every panel's queries are checked against a real Prometheus scraping a real
moltbot by tests/ops/dashboard_check.py, keyed by panel title.
"""
import json
import sys
from pathlib import Path

OUT = Path(__file__).with_name("moltbot.json")
SEL = 'job="$job",instance=~"$instance"'
CHAT = SEL + ',listener="chat"'
RI = "$__rate_interval"


def q(expr, legend, ref):
    return {"datasource": {"type": "prometheus", "uid": "${datasource}"}, "expr": expr,
            "legendFormat": legend, "refId": ref}


def quantile(p, metric, extra=""):
    return f"histogram_quantile({p}, sum by (le) (rate({metric}_bucket{{{extra}}}[{RI}])))"


# (title, unit, panel type, [(expr, legend)], description)
PANELS = [
    ("Requests per second by status", "reqps", "timeseries",
     [(f"sum by (status) (rate(http_requests_total{{{CHAT}}}[{RI}]))", "{{status}}")],
     "Dialog listener requests per second; streams are counted when they end."),
    ("Error ratio (5xx)", "percentunit", "timeseries",
     [(f'sum(rate(http_requests_total{{{CHAT},status=~"5.."}}[{RI}])) / sum(rate(http_requests_total{{{CHAT}}}[{RI}]))',
       "5xx ratio")],
     "Share of dialog requests answered with 5xx. The MoltbotHighErrorRate alert fires above 5% for 10m."),
    ("Latency, non-streaming", "s", "timeseries",
     [(quantile(0.5, "http_request_duration_seconds", CHAT + ',stream="false"'), "p50"),
      (quantile(0.95, "http_request_duration_seconds", CHAT + ',stream="false"'), "p95"),
      (quantile(0.99, "http_request_duration_seconds", CHAT + ',stream="false"'), "p99")],
     "Request duration of non-streaming requests (streams last as long as the reply)."),
    ("Time to first token", "s", "timeseries",
     [(quantile(0.5, "moltbot_time_to_first_token_seconds", SEL + ',stream="true"'), "p50"),
      (quantile(0.95, "moltbot_time_to_first_token_seconds", SEL + ',stream="true"'), "p95")],
     "Streaming turns: from the chat request to the first generated delta (a non-streaming turn's first delta is "
     "its whole reply from a remote model)."),
    ("Inter-token latency", "s", "timeseries",
     [(quantile(0.5, "moltbot_inter_token_seconds", SEL), "p50"),
      (quantile(0.95, "moltbot_inter_token_seconds", SEL), "p95")],
     "Time between consecutive generated deltas."),
    ("Tokens per second", "short", "timeseries",
     [(f"sum by (kind) (rate(moltbot_tokens_total{{{SEL}}}[{RI}]))", "{{kind}}")],
     "Prompt and completion tokens of completed turns."),
    ("Requests in flight", "short", "timeseries",
     [(f"sum(http_requests_in_flight{{{CHAT}}})", "in flight")],
     "Dialog requests whose response has not finished (open streams included)."),
    ("Chat outcomes", "reqps", "timeseries",
     [(f"sum by (model, outcome) (rate(moltbot_chat_requests_total{{{SEL}}}[{RI}]))", "{{model}} {{outcome}}")],
     "Chat turns by model and outcome."),
    ("Upstream requests by status", "reqps", "timeseries",
     [(f"sum by (backend, status) (rate(moltbot_upstream_requests_total{{{SEL}}}[{RI}]))", "{{backend}} {{status}}")],
     "Every attempt to a model platform, retries included."),
    ("Upstream retries", "reqps", "timeseries",
     [(f"sum by (backend) (rate(moltbot_upstream_retries_total{{{SEL}}}[{RI}]))", "{{backend}}")],
     "Attempts that retried an earlier failure (5xx, 429, timeouts, connection errors)."),
    ("Rate limited", "reqps", "timeseries",
     [(f"sum by (reason) (rate(moltbot_rate_limited_total{{{SEL}}}[{RI}]))", "{{reason}}")],
     "Requests refused for rate reasons: upstream 429s after retries, moltbot's own limits."),
    ("Circuit breaker state", "short", "stat",
     [(f"max by (backend) (moltbot_backend_circuit_state{{{SEL}}})", "{{backend}}")],
     "0 closed, 1 half-open, 2 open."),
    ("CPU (cores)", "short", "timeseries",
     [(f"rate(process_cpu_seconds_total{{{SEL}}}[{RI}])", "{{instance}}")],
     "CPU seconds per second per process. MoltbotHighCpu fires above 0.8 for 5m."),
    ("Resident memory", "bytes", "timeseries",
     [(f"process_resident_memory_bytes{{{SEL}}}", "{{instance}}")],
     "Resident set size per process."),
]


def panel(i, title, unit, kind, targets, description):
    width = 8 if kind == "stat" else 12
    p = {
        "id": i + 1,
        "title": title,
        "description": description,
        "type": kind,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": 8, "w": width, "x": (i % 2) * 12, "y": (i // 2) * 8},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {},
        "targets": [q(expr, legend, chr(ord("A") + j)) for j, (expr, legend) in enumerate(targets)],
    }
    if kind == "stat":
        p["fieldConfig"]["defaults"]["mappings"] = [{
            "type": "value",
            "options": {"0": {"text": "closed", "color": "green"}, "1": {"text": "half-open", "color": "yellow"},
                        "2": {"text": "open", "color": "red"}},
        }]
    return p


def dashboard():
    return {
        "uid": "moltbot",
        "title": "moltbot",
        "tags": ["moltbot"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": [
            {"name": "datasource", "type": "datasource", "query": "prometheus", "current": {}},
            {"name": "job", "type": "query", "datasource": {"type": "prometheus", "uid": "${datasource}"},
             "query": "label_values(up, job)", "current": {"text": "moltbot", "value": "moltbot"}, "refresh": 1},
            {"name": "instance", "type": "query", "datasource": {"type": "prometheus", "uid": "${datasource}"},
             "query": 'label_values(up{job="$job"}, instance)', "includeAll": True, "allValue": ".*",
             "multi": True, "current": {"text": "All", "value": "$__all"}, "refresh": 1},
        ]},
        "panels": [panel(i, *p) for i, p in enumerate(PANELS)],
    }


def render():
    return json.dumps(dashboard(), indent=2) + "\n"


if __name__ == "__main__":
    if "--check" in sys.argv:
        if OUT.read_text() != render():
            sys.exit(f"{OUT} is out of date: run python3 {sys.argv[0]}")
    else:
        OUT.write_text(render())
