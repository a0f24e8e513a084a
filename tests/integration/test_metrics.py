"""The operations endpoint: Prometheus metrics, /health and /ready."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import SERVICES
from tests.dnsd_process import DnsdProcess
from tests.upstreams import Dnsmasq, ScriptedUpstream, free_port


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _value(text: str, metric: str) -> float:
    match = re.search(rf"^{re.escape(metric)} (\S+)$", text, re.M)
    assert match, f"{metric} not in metrics"
    return float(match.group(1))


def test_metrics_count_replies_by_type_rcode_and_transport() -> None:
    port = free_port()
    with DnsdProcess(["--static", str(SERVICES), "--metrics", f"127.0.0.1:{port}"]) as proc:
        proc.wait_for_log("metrics on")
        for _ in range(3):
            proc.query("web.service.consul", "A")
        proc.query("nope.service.consul", "A")
        proc.query("web.service.consul", "SRV", tcp=True)
        status, text = _get(f"http://127.0.0.1:{port}/metrics")
        assert status == 200
        assert _value(text, 'dnsd_responses_total{qtype="A",rcode="NOERROR",'
                            'transport="udp"}') == 3
        assert _value(text, 'dnsd_responses_total{qtype="A",rcode="NXDOMAIN",'
                            'transport="udp"}') == 1
        assert _value(text, 'dnsd_responses_total{qtype="SRV",rcode="NOERROR",'
                            'transport="tcp"}') == 1
        assert _value(text, "dnsd_response_seconds_count") == 5
        assert _value(text, "dnsd_table_instances") == 16
        assert _value(text, "dnsd_ready") == 1
        assert _value(text, f'dnsd_source_state{{source="static:{SERVICES}",state="up"}}') == 1
        assert _get(f"http://127.0.0.1:{port}/health") == (200, "ok\n")
        assert _get(f"http://127.0.0.1:{port}/ready")[0] == 200
        assert _get(f"http://127.0.0.1:{port}/other")[0] == 404


def test_ready_reports_a_stale_source(tmp_path: Path) -> None:
    path = tmp_path / "services.toml"
    path.write_text('[[services]]\nname = "web"\naddress = "10.0.0.1"\n')
    port = free_port()
    with DnsdProcess(["--static", str(path), "--metrics", f"127.0.0.1:{port}"]) as proc:
        proc.wait_for_log("metrics on")
        path.write_text("broken = [")
        proc.wait_for_log("still serving")
        status, body = _get(f"http://127.0.0.1:{port}/ready")
        assert status == 200  # it has data to serve ...
        assert "stale" in body and "not valid TOML" in body  # ... and says it is stale
        _, text = _get(f"http://127.0.0.1:{port}/metrics")
        assert _value(text, f'dnsd_source_state{{source="static:{path}",state="stale"}}') == 1


def test_bad_metrics_address_is_one_line() -> None:
    with pytest.raises(RuntimeError, match="--metrics"):
        DnsdProcess(["--metrics", "nowhere"])


def test_upstream_metrics() -> None:
    port = free_port()
    with Dnsmasq(["--host-record=up.example.test,10.1.1.1"]) as upstream, \
            DnsdProcess(["--upstream", upstream.spec, "--upstream", "127.0.0.1:9",
                         "--metrics", f"127.0.0.1:{port}"]) as proc:
        proc.wait_for_log("metrics on")
        for _ in range(3):
            assert proc.query("up.example.test", "A").answer
        _, text = _get(f"http://127.0.0.1:{port}/metrics")
        assert _value(text, f'dnsd_upstream_up{{upstream="{upstream.spec}"}}') == 1
        assert _value(text, f'dnsd_upstream_queries_total{{upstream="{upstream.spec}"}}') == 1
        assert _value(text, "dnsd_forward_cache_entries") == 1
        assert _value(text, "dnsd_forward_cache_hits_total") == 2
        assert _value(text, 'dnsd_responses_total{qtype="A",rcode="NOERROR",'
                            'transport="udp"}') == 3


DASHBOARD = Path(__file__).resolve().parents[2] / "resolv-examples" / "grafana-dashboard.json"


def _exported(text: str) -> set[str]:
    """Every sample name /metrics can carry, from its TYPE lines."""
    names: set[str] = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M):
        names.add(name)
        if kind == "counter":
            names.update({name, f"{name}_total", f"{name}_created"})
        if kind == "histogram":
            names.update(f"{name}_{suffix}" for suffix in ("bucket", "sum", "count"))
    return names


def test_grafana_dashboard_queries_only_metrics_dnsd_exports() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [v["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    used = {name for expr in exprs
            for name in re.findall(r"\b((?:dnsd|process|python)_[a-z0-9_]+)\b", expr)}
    assert len(used) > 15
    port = free_port()
    with ScriptedUpstream(["a.test. 60 IN A 10.0.0.1"]) as up, \
            DnsdProcess(["--static", str(SERVICES), "--upstream", up.spec,
                         "--consul", f"http://127.0.0.1:{free_port()}",
                         "--metrics", f"127.0.0.1:{port}"]) as proc:
        proc.query("a.test.", "A")
        _, text = _get(f"http://127.0.0.1:{port}/metrics")
    missing = used - _exported(text)
    assert not missing, f"the dashboard queries metrics dnsd does not export: {missing}"
    assert 'dnsd_build_info{python="' in text and "process_resident_memory_bytes" in text
