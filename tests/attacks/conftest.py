"""One service over neighbouring datasets for the attack tests, and its exact control.

Datasets (one policy, one service, budgets per dataset):

- ``loans``: 2,000 synthetic loans with an attribution column; ``loans_minus``: the same
  without one person (the target), a neighbouring dataset; ``loans_nonorth``: without any
  row of region "north" (a cohort that does not exist);
- ``small``: 150 other loans with the default budget of 5 (reconstruction);
- ``threshold``: ``loans`` again with ``min_cohort`` set one above a cell's true count.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from conftest import ALICE, ServiceProcess

from pdebug_jupyter.attacks import ExactTarget, ServiceTarget
from pdebug_jupyter.synth import loans_frame, make_loans

ROWS, TARGET = 2000, 17
THRESHOLD_QUERY = {"kind": "histogram", "column": "income", "bins": 40, "by": "region"}
ATTRIBUTION = 'shap_income = { kind = "attribution", bounds = [-1, 1] }\n'


@dataclass
class Bench:
    directory: Path
    policy: Path
    service: ServiceProcess
    target: ServiceTarget  # alice, an analyst
    control: ExactTarget  # the same policy without noise, in-process
    frames: dict[str, pd.DataFrame]
    person: pd.Series  # the target's row
    canaries: list[str]
    below: dict[str, str]  # keys of a cell whose true count is min_cohort - 1 (threshold)
    above: dict[str, str]  # ... and of one whose true count is min_cohort + 1
    min_cohort: int


def _section(policy: str, name: str, source: str, **settings: Any) -> str:
    body = policy[policy.index("[datasets.loans]"):]
    body = body.replace("[datasets.loans]", f"[datasets.{name}]").replace(
        "[datasets.loans.columns]", f"[datasets.{name}.columns]").replace(
        'source = "loans.parquet"', f'source = "{source}"').replace("window = {",
                                                                    ATTRIBUTION + "window = {")
    lines = [f"{ln.split('=')[0].strip()} = {settings[ln.split('=')[0].strip()]}"
             if ln.split("=")[0].strip() in settings else ln for ln in body.splitlines()]
    return "\n".join(lines) + "\n"


def _with_attribution(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    out["shap_income"] = np.clip((out["income"] - 50_000) / 100_000, -1, 1).round(4)
    return out


def _near_threshold(control: ExactTarget) -> tuple[dict[str, str], dict[str, str], int]:
    """Two cells of THRESHOLD_QUERY on ``loans`` with true counts c and c + 2 (c >= 5)."""
    cells = control.query("loans", {**THRESHOLD_QUERY, "epsilon": 1.0}).body["cells"]
    by_count: dict[int, dict[str, str]] = {}
    for cell in cells:
        by_count.setdefault(cell["count"], {"income": cell["income"], "region": cell["region"]})
    for c in sorted(by_count):
        if c >= 5 and c + 2 in by_count:
            return by_count[c], by_count[c + 2], c + 1
    raise AssertionError("no pair of cells with counts c and c + 2")


@pytest.fixture(scope="package")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bench]:
    directory = tmp_path_factory.mktemp("attacks")
    files = make_loans(ROWS, seed=7, path=directory, epsilon_per_user=1000.0,
                       epsilon_total=4000.0)
    loans = _with_attribution(pd.read_parquet(files.data))
    frames = {"loans": loans, "loans_minus": loans.drop(index=TARGET),
              "loans_nonorth": loans[loans["region"] != "north"],
              "small": _with_attribution(loans_frame(150, seed=8))}
    for name, frame in frames.items():
        frame.reset_index(drop=True).to_parquet(directory / f"{name}.parquet", index=False)
    text = files.policy.read_text()
    head = text[:text.index("[datasets.loans]")]
    sections = [_section(text, n, f"{n}.parquet") for n in ("loans", "loans_minus",
                                                             "loans_nonorth")]
    sections.append(_section(text, "small", "small.parquet", epsilon_per_user=5.0,
                             epsilon_total=20.0))
    files.policy.write_text(head + "\n".join(sections))
    first = ExactTarget(files.policy)
    below, above, min_cohort = _near_threshold(first)
    first.close()
    sections.append(_section(text, "threshold", "loans.parquet", min_cohort=min_cohort))
    files.policy.write_text(head + "\n".join(sections))
    service = ServiceProcess(files.policy)
    control = ExactTarget(files.policy)
    canaries = files.canaries.read_text().splitlines()
    yield Bench(directory, files.policy, service, ServiceTarget(service.url, ALICE), control,
                frames, loans.loc[TARGET], canaries, below, above, min_cohort)
    control.close()
    service.stop()
