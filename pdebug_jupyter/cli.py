"""``pdebug-jupyter``: serve | synth | check | demo."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .engine import EngineError
from .policy import PolicyError


def _serve(args: argparse.Namespace) -> int:
    from .service import serve

    serve(args.policy, args.host, args.port, local=args.local, hub=args.hub)
    return 0


def _synth(args: argparse.Namespace) -> int:
    from .synth import make_loans

    files = make_loans(args.rows, args.seed, args.out, problems=not args.no_problems)
    print(f"wrote {files.data}, {files.policy} and {files.canaries}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .demo import exec_with_service, run, write_tour

    if args.write_tour:
        print(f"wrote {write_tour(Path(args.write_tour))}")
        return 0
    if args.exec is not None:
        exec_with_service(Path(args.dir), args.exec)  # returns only by raising
    return run(Path(args.dir), port=args.port, browser=not args.no_browser)


def _check(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .client import connect
    from .health import health_check

    with connect(policy=args.policy, purpose=args.purpose) as session:
        report = health_check(session.dataset(args.dataset), args.epsilon)
    if args.out:
        Path(args.out).write_text(report.to_html())
    for f in report.findings:
        print(f"FINDING {f.analysis}: {f.subject}: {f.metric} = {f.value:.4g} "
              f"[{f.low:.4g}, {f.high:.4g}] > {f.threshold:g}. {f.recommendation}")
    print(f"{len(report.findings)} finding(s); epsilon spent {args.epsilon:g} on "
          f"{args.dataset}")
    return 1 if report.findings else 0


def _scan(args: argparse.Namespace) -> int:
    import json

    from .scanner import Canaries, scan_paths

    try:
        canaries = Canaries.from_file(args.canaries) if args.canaries else None
    except (OSError, UnicodeDecodeError) as exc:
        print(f"pdebug-jupyter: cannot read canaries {args.canaries}: {exc}", file=sys.stderr)
        return 2
    report = scan_paths(args.paths, canaries=canaries, max_rows=args.max_rows, fix=args.fix)
    if args.json:
        print(json.dumps({"files": report.files, "findings": [f.to_json() for f in
                                                               report.findings],
                          "fixed": report.fixed, "errors": report.errors}, indent=1))
    else:
        for f in report.findings:
            print(f.line())
        for path in report.fixed:
            print(f"{path}: stripped the outputs and widget state above")
        for err in report.errors:
            print(err, file=sys.stderr)
        print(f"{len(report.findings)} finding(s) in {report.files} notebook(s)",
              file=sys.stderr)
    if report.errors:
        return 2
    return 1 if report.findings else 0  # fixed files fail too, so the commit is redone


def _policy_lint(args: argparse.Namespace) -> int:
    import json

    from .policy_lint import lint_policy

    problems = lint_policy(args.file)
    errors = sum(p.severity == "error" for p in problems)
    warnings = len(problems) - errors
    if args.json:
        print(json.dumps([vars(p) for p in problems], indent=1))
    else:
        for p in problems:
            print(p.line())
        print(f"{errors} error(s), {warnings} warning(s)", file=sys.stderr)
    return 1 if errors or (args.strict and warnings) else 0


def _open_ledger(policy_file: str, clock: float | None = None) -> Any:
    from .ledger import Ledger
    from .policy import load_policy

    policy = load_policy(policy_file, require_tokens=False)
    if not policy.ledger.exists():  # never create an empty ledger by looking at it
        raise PolicyError(f"{policy_file}: service.ledger: no ledger at {policy.ledger}")
    return policy, (Ledger(policy.ledger) if clock is None
                    else Ledger(policy.ledger, clock=lambda: clock))


def _purge(args: argparse.Namespace) -> int:
    from datetime import datetime

    now = None
    if args.now:
        try:
            when = datetime.fromisoformat(args.now)
        except ValueError:
            when = None
        if when is None or when.tzinfo is None:
            print("pdebug-jupyter: --now needs an ISO 8601 time with a zone, e.g. "
                  "2030-01-31T00:00:00+00:00", file=sys.stderr)
            return 2
        now = when.timestamp()
    policy, ledger = _open_ledger(args.policy, now)
    try:
        done = ledger.purge(policy.retention_days)
    finally:
        ledger.close()
    print(f"purged {done['releases']} release(s) created before {done['before']} "
          f"(retention {policy.retention_days} days); audit rows and charges kept")
    return 0


def _audit_verify(args: argparse.Namespace) -> int:
    _, ledger = _open_ledger(args.policy)
    try:
        result = ledger.verify()
    finally:
        ledger.close()
    if result.ok:
        print(f"ok: {result.rows} audit row(s) checked, the hash chain is intact")
        return 0
    print(f"FAILED: {result.rows} audit row(s) checked, the first bad row is seq "
          f"{result.first_bad}")
    return 1


def _audit_export(args: argparse.Namespace) -> int:
    import csv
    import json

    from .ledger import AUDIT_FIELDS

    _, ledger = _open_ledger(args.policy)
    fields = [*AUDIT_FIELDS, "prev", "hash"]
    out = open(args.out, "w", newline="") if args.out else sys.stdout  # noqa: SIM115
    try:
        writer = csv.DictWriter(out, fields) if args.format == "csv" else None
        if writer:
            writer.writeheader()
        after, count = 0, 0
        while rows := ledger.audit_rows(after=after, limit=1000):
            for row in rows:
                if writer:
                    writer.writerow(row)
                else:
                    out.write(json.dumps({f: row[f] for f in fields}) + "\n")
            after, count = rows[-1]["seq"], count + len(rows)
    finally:
        ledger.close()
        if args.out:
            out.close()
    if args.out:
        print(f"wrote {count} audit row(s) to {args.out}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from .report import write_report

    report = write_report(args.policy, args.out, json_out=args.json, dataset=args.dataset,
                          user=args.user)
    print(report["summary"])
    print(f"wrote {args.out} and {args.json or Path(args.out).with_suffix('.json')}")
    return 0 if report["audit"]["ok"] else 1


def _replay(args: argparse.Namespace) -> int:
    from .client import PdebugError, connect
    from .recipe import replay

    try:
        with connect(policy=args.policy, purpose=args.purpose) as session:
            comparison = replay(args.recipe, session.dataset(args.dataset))
    except PdebugError as exc:
        print(f"pdebug-jupyter: {exc}", file=sys.stderr)
        return 2
    frame = comparison.to_frame()
    if args.out:
        frame.to_csv(args.out, index=False)
    with _pandas_display():
        print(frame.drop(columns=["old_release", "new_release"]).to_string(index=False))
    print(f"{len(comparison.analyses)} analyses replayed on {args.dataset}; epsilon spent "
          f"{comparison.epsilon:g}")
    return 0


def _pandas_display() -> Any:
    import pandas as pd

    return pd.option_context("display.width", 200, "display.max_colwidth", 40,
                             "display.float_format", "{:.4g}".format)


def _attack(args: argparse.Namespace) -> int:
    """The black-box attack suite as a user with a token; it spends budget, so it says how
    much first and runs only with --yes or an --epsilon-budget that covers it."""
    import os
    from pathlib import Path

    from .attacks import ServiceTarget, planned_spend, report_html, report_json, run_suite
    from .client.local import LocalService

    local = None
    if args.url:
        token = args.token or os.environ.get("PDEBUG_TOKEN", "")
        if not token:
            print("pdebug-jupyter: --url needs --token or $PDEBUG_TOKEN", file=sys.stderr)
            return 2
        target = ServiceTarget(args.url, token)
    elif args.policy:
        local = LocalService(args.policy)
        target = ServiceTarget(local.url, local.token)
    else:
        print("pdebug-jupyter: give --policy FILE (a local service) or --url and --token",
              file=sys.stderr)
        return 2
    try:
        names = target.call("GET", "/datasets").body.get("datasets", [])
        names = [d["name"] if isinstance(d, dict) else d for d in names]
        dataset = args.dataset or (names[0] if names else "")
        schema = target.schema(dataset)
        if "columns" not in schema:
            print(f"pdebug-jupyter: dataset {dataset!r}: {schema.get('error')}", file=sys.stderr)
            return 2
        cost = planned_spend(schema, args.epsilon)
        print(f"the attack suite spends epsilon {cost:g} of your budget on {dataset!r} "
              f"(releases of epsilon {args.epsilon:g}: one per query kind and one to repeat; "
              "the rest are refusals and cached repeats, which are free)")
        if not args.yes and (args.epsilon_budget is None or args.epsilon_budget < cost):
            print("not run: pass --yes, or --epsilon-budget at least "
                  f"{cost:g}", file=sys.stderr)
            return 2
        canaries = Path(args.canaries).read_text().splitlines() if args.canaries else []
        findings = run_suite(target, dataset, args.epsilon, canaries)
    finally:
        if local is not None:
            local.stop()
    for f in findings:
        print(f"{'held' if f.passed else 'FAILED'} {f.name}: {f.summary}")
    if args.out:
        text = (report_json(dataset, findings) if args.out.endswith(".json")
                else report_html(dataset, findings))
        Path(args.out).write_text(text)
        print(f"wrote {args.out}")
    return 0 if all(f.passed for f in findings) else 1


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pdebug-jupyter", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run the privacy service for a policy file")
    s.add_argument("--policy", required=True, help="policy TOML file")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    s.add_argument("--local", action="store_true",
                   help="add the session user whose token is in $PDEBUG_LOCAL_TOKEN (connect())")
    s.add_argument("--hub", action="store_true",
                   help="run as a JupyterHub service: tokens and custom:pdebug:* scopes from "
                        "the hub, address and prefix from $JUPYTERHUB_SERVICE_URL/_PREFIX")
    s.set_defaults(run=_serve)
    g = sub.add_parser("synth", help="write synthetic loans data and a matching policy")
    g.add_argument("--rows", type=int, default=50_000)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--out", default="demo-data")
    g.add_argument("--no-problems", action="store_true", help="no planted model problems")
    g.set_defaults(run=_synth)
    c = sub.add_parser("check", help="a health check that exits 1 on a significant problem")
    c.add_argument("--policy", required=True)
    c.add_argument("--dataset", required=True)
    c.add_argument("--epsilon", type=float, default=1.0)
    c.add_argument("--out", help="write an HTML report here")
    c.add_argument("--purpose", default="pdebug-jupyter check (CI health gate)")
    c.set_defaults(run=_check)
    d = sub.add_parser("demo", help="synthetic data + JupyterLab on the tour notebook")
    d.add_argument("--dir", default="demo-data", help="where the demo data and notebook live")
    d.add_argument("--port", type=int, default=8888)
    d.add_argument("--no-browser", action="store_true")
    d.add_argument("--write-tour", metavar="PATH",
                   help="only write the tour notebook to PATH (examples/tour.ipynb)")
    d.add_argument("--exec", nargs=argparse.REMAINDER, metavar="CMD",
                   help="instead of JupyterLab, run CMD with PDEBUG_URL/PDEBUG_TOKEN set for "
                        "the demo's service, which stops when CMD ends (Binder's start)")
    d.set_defaults(run=_demo)
    n = sub.add_parser("scan", help="find raw rows, personal data and canaries saved in "
                       "notebooks; exits 1 on a finding")
    n.add_argument("paths", nargs="+", metavar="PATH", help=".ipynb files or directories")
    n.add_argument("--canaries", metavar="FILE", help="values that must not appear, one a line")
    n.add_argument("--fix", action="store_true",
                   help="strip offending outputs and widget state in place")
    n.add_argument("--max-rows", type=int, default=20,
                   help="flag tables with more rows than this that are not releases")
    n.add_argument("--json", action="store_true", help="findings as JSON")
    n.set_defaults(run=_scan)
    pol = sub.add_parser("policy", help="policy file tools").add_subparsers(
        dest="policy_command", required=True)
    lint = pol.add_parser("lint", help="flag risky settings; exits 1 on an error")
    lint.add_argument("file", help="policy TOML file")
    lint.add_argument("--strict", action="store_true", help="warnings fail too")
    lint.add_argument("--json", action="store_true", help="problems as JSON")
    lint.set_defaults(run=_policy_lint)
    r = sub.add_parser("purge", help="delete releases older than the policy's retention_days "
                       "(audit rows and charges are kept)")
    r.add_argument("--policy", required=True)
    r.add_argument("--now", help="purge as of this ISO 8601 time instead of now")
    r.set_defaults(run=_purge)
    a = sub.add_parser("audit", help="verify or export the hash-chained audit log")
    audit = a.add_subparsers(dest="audit_command", required=True)
    v = audit.add_parser("verify", help="recompute the hash chain; exit 1 if it is broken")
    v.add_argument("--policy", required=True)
    v.set_defaults(run=_audit_verify)
    x = audit.add_parser("export", help="every audit row with its hashes")
    x.add_argument("--policy", required=True)
    x.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    x.add_argument("--out", help="write here instead of standard output")
    x.set_defaults(run=_audit_export)
    rp = sub.add_parser("report", help="a privacy report (HTML with charts, plus JSON) from "
                        "the ledger: epsilon over time, releases, suppressions, grants, alerts")
    rp.add_argument("--policy", required=True)
    rp.add_argument("--dataset", help="only this dataset")
    rp.add_argument("--user", help="only this user's releases, grants and alerts")
    rp.add_argument("--out", default="report.html", help="the HTML file")
    rp.add_argument("--json", help="the JSON file (default: next to --out)")
    rp.set_defaults(run=_report)
    ry = sub.add_parser("replay", help="ask a recipe's queries again of a dataset (charged) "
                        "and print old and new results side by side")
    ry.add_argument("recipe", help="a recipe JSON file (Session.export_recipe)")
    ry.add_argument("--policy", required=True, help="starts a local service for this policy")
    ry.add_argument("--dataset", required=True)
    ry.add_argument("--purpose", default="pdebug-jupyter replay of a recipe")
    ry.add_argument("--out", help="write the comparison here as CSV")
    ry.set_defaults(run=_replay)
    at = sub.add_parser("attack", help="run the black-box privacy attacks (averaging, "
                        "precision, data-dependent bins, error channels, budget exposure) as "
                        "a user and report; spends budget, see --yes")
    at.add_argument("--policy", help="start a local service for this policy")
    at.add_argument("--url", help="a deployment's API URL instead, e.g. .../api/v1")
    at.add_argument("--token", help="the user's token (default $PDEBUG_TOKEN)")
    at.add_argument("--dataset", help="default: the first dataset")
    at.add_argument("--epsilon", type=float, default=0.1, help="per release (default 0.1)")
    at.add_argument("--canaries", metavar="FILE", help="values no refusal may contain")
    at.add_argument("--out", help="write the report here: .json for JSON, else HTML")
    at.add_argument("--yes", action="store_true", help="spend the printed epsilon")
    at.add_argument("--epsilon-budget", type=float,
                    help="run only if the suite spends at most this much")
    at.set_defaults(run=_attack)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.run(args))
    except (PolicyError, EngineError) as exc:
        print(f"pdebug-jupyter: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
