"""What dnsd serves, for people: the table as JSON (``GET /v1/table``), as a
small HTML status page (``GET /``) and as text (``dnsd table``).

Pure functions of the current snapshot, each source's last view and status; no
I/O. The JSON is the contract the other two are drawn from::

    {"version": N, "built_at": "2026-...Z", "local_datacenter": "dc1", "ready": true,
     "sources": {name: {"state": "up"|"stale"|"syncing", "reason": str}},
     "services": [{"name", "datacenter",
                   "instances": [{"id", "address", "port", "tags", "node", "health",
                                  "source"}]}]}

Imports: ``model``, ``status``, ``table``.
"""

from __future__ import annotations

import datetime
import html
from collections.abc import Mapping
from typing import Any

from dnsd.model import View
from dnsd.status import SourceStatus
from dnsd.table import Snapshot


def table_json(snapshot: Snapshot, views: Mapping[str, View],
               statuses: Mapping[str, SourceStatus], ready: bool = True) -> dict[str, Any]:
    """The table as the ``/v1/table`` object (see the module docstring)."""
    origin: dict[tuple[str, str, str], str] = {}
    for source in sorted(views):  # the table keeps the first source's copy of an id
        for inst in views[source].instances:
            origin.setdefault((inst.datacenter.lower(), inst.service.lower(), inst.id), source)
    services = []
    for (dc, name), group in sorted(snapshot.services.items()):
        services.append({
            "name": group[0].service if group else name,
            "datacenter": dc,
            "instances": [{
                "id": inst.id,
                "address": inst.effective_address,
                "port": inst.port,
                "tags": list(inst.tags),
                "node": inst.node,
                "health": inst.health.value,
                "source": origin.get((dc, name, inst.id), ""),
            } for inst in group],
        })
    built = datetime.datetime.fromtimestamp(snapshot.built_at, tz=datetime.UTC)
    return {
        "version": snapshot.version,
        "built_at": built.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "local_datacenter": snapshot.local_datacenter,
        "ready": ready,
        "sources": {name: {"state": status.state.value, "reason": status.reason}
                    for name, status in sorted(statuses.items())},
        "services": services,
    }


_STYLE = """
body{font:15px/1.4 system-ui,sans-serif;margin:0 auto;max-width:60rem;padding:0 .8rem;color:#222}
h1{font-size:1.3rem}h2{font-size:1.05rem;margin:1.4rem 0 .4rem}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.25rem .4rem;
border-bottom:1px solid #ddd;vertical-align:top;overflow-wrap:anywhere}
.state{font-weight:600;padding:.05rem .4rem;border-radius:.3rem;white-space:nowrap}
.up{background:#dfd}.syncing{background:#ffd}.stale{background:#c00;color:#fff}
.critical{color:#c00}.warning{color:#a60}.muted{color:#777}
@media (max-width:35rem){.wide{display:none}}
"""


def table_html(data: Mapping[str, Any]) -> str:
    """The status page: sources (stale ones stand out), then every service."""
    esc = html.escape
    rows = []
    for name, source in data["sources"].items():
        state = source["state"]
        rows.append(f'<tr class="source {esc(state)}"><td>{esc(name)}</td>'
                    f'<td><span class="state {esc(state)}">{esc(state)}</span></td>'
                    f'<td>{esc(source["reason"])}</td></tr>')
    sources = ("<table><tr><th>source</th><th>state</th><th>reason</th></tr>"
               + "".join(rows) + "</table>") if rows else '<p class="muted">no sources</p>'
    blocks = []
    for service in data["services"]:
        lines = []
        for inst in service["instances"]:
            health = esc(inst["health"])
            lines.append(
                f'<tr class="instance"><td>{esc(inst["address"])}:{inst["port"]}</td>'
                f'<td class="{health}">{health}</td><td>{esc(", ".join(inst["tags"]))}</td>'
                f'<td class="wide">{esc(inst["node"])}</td>'
                f'<td class="wide muted">{esc(inst["source"])}</td></tr>')
        title = f'{esc(service["name"])}.service.{esc(service["datacenter"])}'
        blocks.append(
            f'<h2 class="service">{title}</h2><table><tr><th>address</th><th>health</th>'
            '<th>tags</th><th class="wide">node</th><th class="wide">source</th></tr>'
            + "".join(lines) + "</table>")
    services = "".join(blocks) or '<p class="muted">no services</p>'
    ready = "ready" if data.get("ready", True) else "not ready"
    return ("<!doctype html><html lang=en><head><meta charset=utf-8>"
            '<meta name=viewport content="width=device-width,initial-scale=1">'
            f"<title>dnsd: table version {data['version']}</title><style>{_STYLE}</style>"
            f"</head><body><h1>dnsd</h1><p>table version {data['version']}, built "
            f"{esc(data['built_at'])}; local datacenter {esc(data['local_datacenter'])}; "
            f"{ready}.</p><h2>Sources</h2>{sources}<h2>Services</h2>{services}"
            '<p class="muted">JSON: <a href="/v1/table">/v1/table</a>, metrics: '
            '<a href="/metrics">/metrics</a></p></body></html>')


def table_text(data: Mapping[str, Any]) -> str:
    """``dnsd table``: sources, then one line per instance under each service."""
    out = [f"table version {data['version']}, built {data['built_at']}, "
           f"local datacenter {data['local_datacenter']}"
           + ("" if data.get("ready", True) else " (not ready)"), ""]
    width = max((len(n) for n in data["sources"]), default=0)
    for name, source in data["sources"].items():
        reason = f"  {source['reason']}" if source["reason"] else ""
        marker = "!" if source["state"] == "stale" else " "
        out.append(f"{marker} {name:<{width}}  {source['state']}{reason}")
    if not data["sources"]:
        out.append("  (no sources)")
    for service in data["services"]:
        out.append("")
        out.append(f"{service['name']}.service.{service['datacenter']}")
        for inst in service["instances"]:
            tags = f"  [{', '.join(inst['tags'])}]" if inst["tags"] else ""
            out.append(f"  {inst['address']}:{inst['port']}  {inst['health']}"
                       f"  node {inst['node']}{tags}  ({inst['source']})")
    return "\n".join(out) + "\n"
