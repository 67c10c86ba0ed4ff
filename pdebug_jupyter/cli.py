"""``pdebug-jupyter``: serve | synth | check | demo."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .engine import EngineError
from .policy import PolicyError


def _serve(args: argparse.Namespace) -> int:
    from .service import serve

    serve(args.policy, args.host, args.port, local=args.local)
    return 0


def _synth(args: argparse.Namespace) -> int:
    from .synth import make_loans

    files = make_loans(args.rows, args.seed, args.out, problems=not args.no_problems)
    print(f"wrote {files.data}, {files.policy} and {files.canaries}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .demo import run

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


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pdebug-jupyter", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run the privacy service for a policy file")
    s.add_argument("--policy", required=True, help="policy TOML file")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    s.add_argument("--local", action="store_true",
                   help="add the session user whose token is in $PDEBUG_LOCAL_TOKEN (connect())")
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
    d.set_defaults(run=_demo)
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
