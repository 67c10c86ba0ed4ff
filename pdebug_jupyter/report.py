"""The privacy report: what a privacy officer attaches to a privacy impact assessment.

Built from the ledger alone (charges, releases, grants, alerts, the audit chain) and the
policy, per dataset and optionally for one user: epsilon spent over time, releases by kind,
mechanisms and thresholds, suppressed cells, grants, budget alerts, who released what and
why, and whether the audit chain verifies. It reads released metadata only, never the data.

The HTML is one self-contained file with no script and no network reference: each Altair
chart is rendered to inline SVG at build time by ``vl-convert-python`` (a Rust/Deno wheel
that bundles Vega, so neither node nor a CDN is needed, and the page survives mail, archives
and printing to PDF). Its Vega-Lite spec is embedded next to it as JSON, so the chart can be
redrawn elsewhere. Without ``vl-convert-python`` the figures say what to install and the
tables and the JSON report are complete anyway.
"""

from __future__ import annotations

import html
import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import altair as alt
import pandas as pd

from .charts._spec import inline
from .ledger import Ledger, Limits
from .policy import DatasetPolicy, Policy, PolicyError, load_policy

__all__ = ["build_report", "render_html", "write_report"]


def build_report(policy_file: str | Path, *, dataset: str | None = None,
                 user: str | None = None) -> dict[str, Any]:
    """The report as JSON-ready data (``render_html`` draws it)."""
    policy = load_policy(policy_file, require_tokens=False)
    if not policy.ledger.exists():  # never create an empty ledger by looking at it
        raise PolicyError(f"{policy_file}: service.ledger: no ledger at {policy.ledger}")
    if dataset is not None and dataset not in policy.datasets:
        raise PolicyError(f"{policy_file}: no dataset {dataset!r} in the policy")
    names = [dataset] if dataset else sorted(policy.datasets)
    ledger = Ledger(policy.ledger)
    try:
        check = ledger.verify()
        sections = {n: _dataset(ledger, policy, policy.datasets[n], user) for n in names}
    finally:
        ledger.close()
    times = [t for s in sections.values() for t in s.pop("_times")]
    report = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "policy": {"path": str(Path(policy_file).resolve()), "hash": policy.digest,
                   "ledger": str(policy.ledger), "retention_days": policy.retention_days,
                   "alerts": list(policy.alerts)},
        "filters": {"dataset": dataset, "user": user},
        "time_range": {"from": min(times, default=None), "to": max(times, default=None)},
        "audit": check.public(),
        "datasets": sections,
    }
    report["summary"] = _summary(report)
    return report


def _dataset(ledger: Ledger, policy: Policy, ds: DatasetPolicy, user: str | None
             ) -> dict[str, Any]:
    charges = ledger.charges(dataset=ds.name, user=user)
    metas = list(reversed(ledger.releases(dataset=ds.name, user=user, limit=2**62)))
    releases = []
    for m in metas:
        payload = ledger.release(m["release_id"]) or {}
        prov = payload.get("provenance", {})
        releases.append({
            "release_id": m["release_id"], "created_at": m["created_at"], "user": m["user"],
            "purpose": m["purpose"], "kind": m["kind"], "epsilon": m["epsilon"],
            "query": m["query"], "fingerprint": m["fingerprint"],
            "model_version": prov.get("model_version", ""),
            "policy_hash": prov.get("policy_hash", ""),
            "mechanism": payload.get("mechanism", ""), "threshold": payload.get("threshold"),
            "cells": len(payload.get("cells", [])),
            "suppressed_cells": len(payload.get("suppressed", []))})
    audit = ledger.audit_rows(dataset=ds.name, user=user, limit=2**62)
    limits = Limits(ds.epsilon_per_user, ds.epsilon_total, policy.alerts)
    users: dict[str, dict[str, Any]] = {}
    for c in charges:
        u = users.setdefault(c["user"], {"releases": 0, "epsilon": 0.0})
        u["releases"] += 1
        u["epsilon"] += c["epsilon"]
    for name, u in users.items():
        now = ledger.budget(name, ds.name, limits)
        mine = [r for r in releases if r["user"] == name]
        u.update(epsilon=round(u["epsilon"], 12), limit_now=now.limit, granted_now=now.granted,
                 purposes=sorted({r["purpose"] for r in mine}))
    kinds: dict[str, dict[str, Any]] = {}
    for r in releases:
        k = kinds.setdefault(r["kind"], {"releases": 0, "epsilon": 0.0, "cells": 0,
                                         "suppressed_cells": 0})
        k["releases"] += 1
        k["epsilon"] = round(k["epsilon"] + r["epsilon"], 12)
        k["cells"] += r["cells"]
        k["suppressed_cells"] += r["suppressed_cells"]
    purged = [c for c in charges if c["kind"] is None]
    fingerprints: dict[str, dict[str, Any]] = {}
    for r in releases:
        f = fingerprints.setdefault(r["fingerprint"], {
            "fingerprint": r["fingerprint"], "releases": 0, "first": r["created_at"],
            "model_versions": []})
        f["releases"] += 1
        f["last"] = r["created_at"]
        if r["model_version"] not in f["model_versions"]:
            f["model_versions"].append(r["model_version"])
    alerts = [a for a in ledger.alerts(dataset=ds.name)
              if user is None or a["user"] in (user, "")]
    grants = [g.public(ledger.clock()) for g in ledger.grants(user=user, dataset=ds.name)]
    return {
        "settings": {"privacy_unit": ds.privacy_unit, "max_rows_per_unit": ds.max_rows_per_unit,
                     "min_cohort": ds.min_cohort, "epsilon_per_user": ds.epsilon_per_user,
                     "epsilon_total": ds.epsilon_total,
                     "max_epsilon_per_query": ds.max_epsilon_per_query,
                     "dataset_policy_hash": ds.digest, "model_version": ds.model_version,
                     "synthetic": ds.synthetic},
        "epsilon": {"spent": round(sum(c["epsilon"] for c in charges), 12),
                    "dataset_spent_all_users": ledger.budget("", ds.name, limits).dataset_spent,
                    "cap": ds.epsilon_total},
        "users": users,
        "releases_by_kind": kinds,
        "mechanisms": dict(Counter(r["mechanism"] for r in releases)),
        "thresholds": sorted({r["threshold"] for r in releases if r["threshold"] is not None}),
        "policy_hashes": dict(Counter(r["policy_hash"] for r in releases)),
        "fingerprints": list(fingerprints.values()),
        "suppressed_cells": sum(r["suppressed_cells"] for r in releases),
        "cells": sum(r["cells"] for r in releases),
        "purged": {"charges": len(purged),
                   "epsilon": round(sum(c["epsilon"] for c in purged), 12)},
        "cached_answers": sum(a["action"] == "query" and a["outcome"] == "cached"
                              for a in audit),
        "refusals": sum(a["outcome"] not in ("released", "cached") and a["action"] == "query"
                        for a in audit),
        "audit_actions": dict(Counter(f"{a['action']}:{a['outcome']}" for a in audit)),
        "charges": [{k: c[k] for k in ("at", "user", "epsilon", "release_id", "kind")}
                    for c in charges],
        "releases": releases,
        "grants": grants,
        "alerts": alerts,
        "_times": [a["at"] for a in audit] + [c["at"] for c in charges],
    }


def _summary(report: dict[str, Any]) -> str:
    span = report["time_range"]
    who = f" for user {report['filters']['user']!r}" if report["filters"]["user"] else ""
    out = [f"This report covers {span['from'] or 'no activity'} to {span['to'] or '-'}{who}."]
    for name, d in report["datasets"].items():
        s, eps = d["settings"], d["epsilon"]
        top = max(d["users"].items(), key=lambda kv: kv[1]["epsilon"], default=None)
        out.append(
            f"On dataset {name!r}, {len(d['users'])} user(s) made {len(d['charges'])} "
            f"differentially private release(s), spending epsilon {eps['spent']:.4g} "
            f"(all users: {eps['dataset_spent_all_users']:.4g} of the dataset-wide cap of "
            f"{eps['cap']:g}). Each release was charged before it was returned; "
            f"{d['cached_answers']} repeated quer(ies) were answered from the cache at no cost "
            f"and {d['refusals']} were refused without cost."
            + (f" The largest spender is {top[0]} (epsilon {top[1]['epsilon']:.4g}; per-user "
               f"limit {s['epsilon_per_user']:g})." if top else "")
            + f" {d['suppressed_cells']} of {d['cells']} released cells were suppressed "
            f"because their noisy count fell below the minimum cohort of {s['min_cohort']}. "
            f"Contributions are bounded to {s['max_rows_per_unit']} row(s) per "
            f"{s['privacy_unit']!r}. {len(d['grants'])} temporary grant(s), "
            f"{len(d['alerts'])} budget alert(s).")
    a = report["audit"]
    out.append(f"The audit log's hash chain is intact over {a['rows']} row(s)." if a["ok"] else
               f"The audit log's hash chain is BROKEN: the first bad row is seq "
               f"{a['first_bad_seq']} of {a['rows']}.")
    return " ".join(out)


# -- charts ------------------------------------------------------------------------------------

def _ms(iso: str) -> str:
    return datetime.fromisoformat(iso).astimezone(UTC).isoformat(timespec="milliseconds")


def charts(section: dict[str, Any]) -> dict[str, alt.TopLevelMixin]:
    """The report's Altair charts for one dataset section (data inline, released only)."""
    out: dict[str, alt.TopLevelMixin] = {}
    if section["charges"]:
        frame = pd.DataFrame(section["charges"])
        frame["at"] = frame["at"].map(_ms)
        frame["cumulative"] = frame.groupby("user")["epsilon"].cumsum()
        line = alt.Chart(inline(frame[["at", "user", "epsilon", "cumulative"]])).mark_line(
            interpolate="step-after", point=True).encode(
            x=alt.X("at:T", title="time (UTC)"), y=alt.Y("cumulative:Q", title="epsilon spent"),
            color=alt.Color("user:N"), tooltip=["user:N", "at:T", "epsilon:Q", "cumulative:Q"])
        limit = alt.Chart(inline(pd.DataFrame(
            {"limit": [section["settings"]["epsilon_per_user"]]}))).mark_rule(
            strokeDash=[4, 4], color="#b22").encode(y="limit:Q")
        out["epsilon over time"] = alt.layer(line, limit).properties(
            width=520, height=220, title={"text": "cumulative epsilon per user",
                                          "subtitle": "dashed: the per-user limit"})
    if section["releases_by_kind"]:
        kinds = pd.DataFrame([{"kind": k, **v} for k, v in
                              section["releases_by_kind"].items()])
        out["releases by kind"] = alt.Chart(inline(kinds)).mark_bar().encode(
            y=alt.Y("kind:N", title=None), x=alt.X("releases:Q", title="releases"),
            tooltip=["kind:N", "releases:Q", "epsilon:Q"]).properties(
            width=520, title="releases by kind")
        cells = kinds.melt(id_vars=["kind"], value_vars=["cells", "suppressed_cells"],
                           var_name="cell", value_name="n")
        cells["cell"] = cells["cell"].map({"cells": "released (all)",
                                           "suppressed_cells": "suppressed"})
        out["suppressed cells"] = alt.Chart(inline(cells)).mark_bar().encode(
            y=alt.Y("kind:N", title=None), yOffset="cell:N", x=alt.X("n:Q", title="cells"),
            color=alt.Color("cell:N", title=None), tooltip=["kind:N", "cell:N", "n:Q"]
        ).properties(width=520, title="cells per kind: all released and suppressed")
    return out


def _figure(title: str, chart: alt.TopLevelMixin) -> str:
    spec = chart.to_dict()
    try:
        import vl_convert as vlc
    except ImportError:
        drawn = ("<p class='note'>chart not drawn: install vl-convert-python "
                 "(<code>pip install vl-convert-python</code>) to draw charts offline</p>")
    else:
        drawn = vlc.vegalite_to_svg(spec)
    embedded = json.dumps(spec).replace("</", "<\\/")
    return (f"<figure data-chart='{html.escape(title)}'>{drawn}"
            f"<script type='application/json' class='vega-lite'>{embedded}</script></figure>")


# -- HTML --------------------------------------------------------------------------------------

def _table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    if not rows:
        return "<p class='note'>none</p>"
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(c)))}</td>" for c in columns)
                   + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, list | dict):
        return json.dumps(v)
    return "" if v is None else str(v)


_CSS = ("body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}"
        "table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:12px}"
        "td,th{border:1px solid #ccc;padding:3px 6px;text-align:left;vertical-align:top}"
        "th{background:#f3f3f3}.summary{background:#f6f8fa;padding:1em;border-left:4px solid"
        " #357}.bad{color:#b00;font-weight:bold}.note{color:#666}figure{margin:1em 0}"
        "code{font-size:11px;word-break:break-all}")


def render_html(report: dict[str, Any]) -> str:
    p, a = report["policy"], report["audit"]
    verdict = (f"intact over {a['rows']} row(s)" if a["ok"] else
               f"<span class='bad'>BROKEN at seq {a['first_bad_seq']}</span>")
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        "<title>pdebug-jupyter privacy report</title>", f"<style>{_CSS}</style></head><body>",
        "<h1>Privacy report</h1>",
        f"<p class='summary'>{html.escape(report['summary'])}</p>",
        _table([{"policy file": p["path"], "policy hash": p["hash"], "ledger": p["ledger"],
                 "from": report["time_range"]["from"], "to": report["time_range"]["to"],
                 "generated": report["generated_at"], "retention days": p["retention_days"],
                 "alert thresholds": p["alerts"]}],
               ["policy file", "policy hash", "ledger", "from", "to", "generated",
                "retention days", "alert thresholds"]),
        f"<p>Audit chain verification: {verdict} (the whole log, all datasets).</p>"]
    for name, d in report["datasets"].items():
        parts.append(f"<h2>Dataset {html.escape(name)}</h2>")
        parts.append("<h3>Mechanisms and thresholds</h3>" + _table(
            [{**d["settings"], "mechanisms": d["mechanisms"], "released thresholds":
              d["thresholds"], "policy hashes in releases": d["policy_hashes"]}],
            [*d["settings"], "mechanisms", "released thresholds", "policy hashes in releases"]))
        parts.append("<h3>Dataset versions (fingerprints)</h3>" + _table(
            d["fingerprints"], ["fingerprint", "releases", "first", "last", "model_versions"]))
        parts += [_figure(t, c) for t, c in charts(d).items()]
        parts.append("<h3>Epsilon per user</h3>" + _table(
            [{"user": u, **v} for u, v in d["users"].items()],
            ["user", "releases", "epsilon", "limit_now", "granted_now", "purposes"]))
        parts.append("<h3>Releases by kind</h3>" + _table(
            [{"kind": k, **v} for k, v in d["releases_by_kind"].items()],
            ["kind", "releases", "epsilon", "cells", "suppressed_cells"]))
        if d["purged"]["charges"]:
            parts.append(f"<p>{d['purged']['charges']} charge(s) (epsilon "
                         f"{d['purged']['epsilon']:g}) belong to releases deleted by retention; "
                         "the charges and audit rows remain.</p>")
        parts.append("<h3>Grants (temporary elevations)</h3>" + _table(
            d["grants"], ["id", "user", "epsilon", "role", "purpose", "granted_by",
                          "created_at", "expires_at", "state", "ended_at"]))
        parts.append("<h3>Budget alerts</h3>" + _table(
            d["alerts"], ["at", "user", "scope", "threshold", "release_id"]))
        parts.append("<h3>Audit events</h3>" + _table(
            [{"event": k, "count": v} for k, v in sorted(d["audit_actions"].items())],
            ["event", "count"]))
        parts.append("<h3>Who released what and why</h3>" + _table(
            d["releases"], ["created_at", "user", "purpose", "kind", "epsilon", "cells",
                            "suppressed_cells", "threshold", "mechanism", "fingerprint",
                            "release_id", "query"]))
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(policy_file: str | Path, out: str | Path, *, json_out: str | Path | None = None,
                 dataset: str | None = None, user: str | None = None) -> dict[str, Any]:
    """Write the HTML report to ``out`` and its JSON next to it (or to ``json_out``)."""
    report = build_report(policy_file, dataset=dataset, user=user)
    out = Path(out)
    out.write_text(render_html(report))
    Path(json_out or out.with_suffix(".json")).write_text(json.dumps(report, indent=1))
    return report
