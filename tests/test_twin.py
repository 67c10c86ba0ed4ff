"""The synthetic twin: a ``marginals`` release through the real service, sampled for free."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from conftest import ALICE, ServiceProcess, policy_copy

import pdebug_jupyter as pdj
from pdebug_jupyter.metrics.synthetic import MarginalsRelease, SyntheticFrame
from pdebug_jupyter.policy import load_policy
from pdebug_jupyter.query import build_query
from pdebug_jupyter.synth import make_loans

IDENTIFIERS = ["customer_id", "name", "email", "ssn", "phone"]
COLUMNS = ["age", "income", "sex", "region", "default", "score", "window"]  # policy order
# the loans policy's public cells, written out here so the check does not trust the code
EDGES = {"age": [18, 25, 35, 45, 55, 65, 90], "income": list(np.linspace(0, 200_000, 11)),
         "score": list(np.linspace(0, 1, 11))}
BOUNDS = {"age": (18, 90), "income": (0, 200_000), "score": (0, 1)}
CATEGORIES = {"sex": ["female", "male"], "region": ["north", "south", "east", "west"],
              "default": ["0", "1"], "window": ["reference", "current"]}


def cells(frame: pd.DataFrame, column: str) -> np.ndarray:
    """Cell index of each row as the service bins it: clipped to the bounds, left-closed
    bins with the last one closed, declared categories, ``other`` last."""
    if column in EDGES:
        edges = np.asarray(EDGES[column], dtype=float)
        x = frame[column].to_numpy(dtype=float, na_value=np.nan)
        out = np.full(len(x), len(edges) - 1)
        ok = ~np.isnan(x)
        clipped = np.clip(x[ok], *BOUNDS[column])
        out[ok] = np.minimum(np.searchsorted(edges, clipped, side="right") - 1, len(edges) - 2)
        return out
    cats = CATEGORIES[column]
    text = frame[column].astype(object).map(lambda v: None if pd.isna(v) else str(v))
    return np.asarray([cats.index(v) if v in cats else len(cats) for v in text])


def size(column: str) -> int:
    return len(EDGES[column]) if column in EDGES else len(CATEGORIES[column]) + 1


def pair_table(index: dict[str, np.ndarray], a: str, b: str) -> np.ndarray:
    return np.bincount(index[a] * size(b) + index[b],
                       minlength=size(a) * size(b)).reshape(size(a), size(b)).astype(float)


def mean_pair_tvd(twin: dict[str, np.ndarray], truth: dict[str, np.ndarray]) -> float:
    out = []
    for a, b in itertools.combinations(COLUMNS, 2):
        p, q = pair_table(twin, a, b), pair_table(truth, a, b)
        out.append(0.5 * np.abs(p / p.sum() - q / q.sum()).sum())
    return float(np.mean(out))


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """50,000 loans: the size the fidelity target is stated for."""
    return make_loans(50_000, seed=3, path=tmp_path_factory.mktemp("twin"))


@pytest.fixture(scope="module")
def big_service(big: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    svc = ServiceProcess(policy_copy(big, tmp_path_factory.mktemp("twin_service")))
    yield svc
    svc.stop()


@pytest.fixture(scope="module")
def release(big_service: ServiceProcess) -> MarginalsRelease:
    with pdj.connect(big_service.url, token=ALICE, purpose="twin tests") as s:
        rel = s.dataset("loans").marginals(epsilon=1.0)
    assert isinstance(rel, MarginalsRelease)
    return rel


@pytest.fixture(scope="module")
def truth(big: Any) -> dict[str, np.ndarray]:
    """The rows behind the service, read here only to check the twin against them."""
    frame = pd.read_parquet(big.data)
    return {c: cells(frame, c) for c in COLUMNS}


def test_release_splits_epsilon_over_every_column_and_pair(release: MarginalsRelease) -> None:
    assert release.columns == tuple(COLUMNS)
    assert len(release.parts) == 7 + 21
    for name in release.parts:
        noise = release.part(name)["noise"][0]
        assert noise["epsilon"] == pytest.approx(1.0 / 28)
        assert noise["sensitivity"] == 1
    assert release.part("score x window")["dims"][0]["labels"][-1] == "other"
    assert len(release.payload["cells"]) == sum(size(c) for c in COLUMNS) + sum(
        size(a) * size(b) for a, b in itertools.combinations(COLUMNS, 2))


def test_twin_at_epsilon_1_keeps_pairs_within_005_and_beats_one_way(
        release: MarginalsRelease, truth: dict[str, np.ndarray]) -> None:
    twin = release.twin(50_000, seed=0)
    tree_tvd = mean_pair_tvd({c: cells(twin, c) for c in COLUMNS}, truth)
    # the one-way twin: every column on its own from the same release's one-way counts
    rng = np.random.default_rng(0)
    one_way = {}
    for c in COLUMNS:
        counts = np.clip(np.nan_to_num(release.arrays(c)["count"], nan=0.0), 0, None)
        one_way[c] = rng.choice(counts.size, size=50_000, p=counts / counts.sum())
    one_way_tvd = mean_pair_tvd(one_way, truth)
    assert tree_tvd <= 0.05
    assert tree_tvd < 0.6 * one_way_tvd
    # the strongest dependence in the data is score -> default: the tree must keep it
    assert {"score", "default"} in [set(e) for e in release.tree]


def test_fidelity_from_the_release_alone_agrees_with_the_truth(
        release: MarginalsRelease, truth: dict[str, np.ndarray]) -> None:
    twin = release.twin(50_000, seed=0)
    table = twin.fidelity()
    assert len(table) == 21 and table["tree_edge"].sum() == 6
    summary = release.fidelity_summary(twin)
    assert summary["mean_twin_tvd"] == pytest.approx(table["twin_tvd"].mean())
    assert summary["mean_twin_tvd"] < 0.6 * summary["mean_one_way_tvd"]
    # the released tables are noisy, so the twin sits about the noise's distance from them
    assert summary["mean_noise_tvd"] < summary["mean_twin_tvd"] < 3 * summary["mean_noise_tvd"]
    true_tvd = mean_pair_tvd({c: cells(twin, c) for c in COLUMNS}, truth)
    assert abs(summary["mean_twin_tvd"] - true_tvd) < 0.01


def test_same_analysis_code_runs_on_the_twin_and_the_real_rows(
        release: MarginalsRelease, big: Any) -> None:
    def default_rate(frame: pd.DataFrame, by: str) -> pd.Series:
        return frame.groupby(by)["default"].mean()

    twin, real = release.twin(50_000, seed=0), pd.read_parquet(big.data)
    for by in ("sex", "region", "window"):
        got, want = default_rate(twin, by), default_rate(real, by)
        for group in CATEGORIES[by]:
            assert abs(float(got[group]) - float(want[group])) < 0.03, (by, group)
    rate = twin.assign(high=twin["score"] >= 0.5).groupby("high")["default"].mean()
    assert rate[True] > rate[False] + 0.2  # the score still ranks defaults


def test_a_one_column_twin_follows_its_own_counts(big_service: ServiceProcess) -> None:
    with pdj.connect(big_service.url, token=ALICE) as s:
        twin = s.dataset("loans").synthetic(20_000, 0.5, columns=["region"], seed=3)
    assert list(twin.columns) == ["region"] and twin.release.tree == []
    shares = twin["region"].value_counts(normalize=True, dropna=False)
    assert shares["north"] == pytest.approx(0.25, abs=0.02)
    assert twin["region"].isna().mean() == pytest.approx(0.01, abs=0.005)  # "central": other
    assert twin.fidelity().empty


def test_twin_holds_no_identifiers_and_is_marked_synthetic(release: MarginalsRelease) -> None:
    twin = release.twin(1_000, seed=5)
    assert list(twin.columns) == COLUMNS
    assert not set(IDENTIFIERS) & set(twin.columns)
    assert twin.attrs["pdebug"] == {"synthetic": True, "release_id": release.release_id,
                                    "epsilon": 1.0, "dataset": "loans", "seed": 5}
    banner = f"SYNTHETIC TWIN of 'loans' (release {release.release_id}, epsilon=1, seed=5)"
    assert repr(twin).startswith(banner)
    assert "SYNTHETIC TWIN of" in twin._repr_html_()
    derived = twin[twin["sex"] == "female"].groupby("region")["default"].mean()
    assert isinstance(derived, pd.Series) and repr(derived).startswith(banner)
    assert isinstance(twin.head(), SyntheticFrame)
    assert twin["default"].dtype == "Int64" and twin["age"].dtype == float
    ages = twin["age"].dropna()
    assert ((ages >= 18) & (ages <= 90)).all()


def test_sampling_is_deterministic_given_release_and_seed(release: MarginalsRelease) -> None:
    pd.testing.assert_frame_equal(release.twin(500, seed=1), release.twin(500, seed=1))
    assert not release.twin(500, seed=1).equals(release.twin(500, seed=2))


def test_twin_is_charged_once_and_resampling_or_reordering_is_free(
        service: ServiceProcess) -> None:
    with pdj.connect(service.url, token=ALICE) as s:
        loans = s.dataset("loans")
        first = loans.synthetic(2_000, 0.5, columns=["sex", "age", "default"], seed=1)
        assert service.spent() == pytest.approx(0.5)
        again = loans.synthetic(3_000, 0.5, columns=["default", "sex", "age"], seed=2)
        assert service.spent() == pytest.approx(0.5)
        assert again.attrs["pdebug"]["release_id"] == first.attrs["pdebug"]["release_id"]
        assert again.release.cached and list(again.columns) == ["age", "sex", "default"]
        assert len(again) == 3_000


@pytest.fixture(scope="module")
def refusing(loans: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A service that is only ever sent bad requests: its ledger must stay empty."""
    svc = ServiceProcess(policy_copy(loans, tmp_path_factory.mktemp("twin_refusals")))
    yield svc
    svc.stop()


@pytest.mark.parametrize(("columns", "code", "status"), [
    (["age", "unknown_column"], "unknown_column", 422),
    (["age", "ssn"], "forbidden_column", 403),
    (["age", "age"], "invalid_parameter", 422),
    ([], "invalid_parameter", 422),
    ("age", "invalid_parameter", 422),
])
def test_bad_columns_are_refused_and_spend_nothing(
        refusing: ServiceProcess, columns: Any, code: str, status: int) -> None:
    service = refusing
    r = service.query({"kind": "marginals", "epsilon": 1.0, "columns": columns})
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code
    with pdj.connect(service.url, token=ALICE) as s, pytest.raises(pdj.PdebugError) as err:
        s.dataset("loans").synthetic(100, 1.0, columns=columns)
    assert err.value.code == code
    assert service.spent() == 0.0


@pytest.mark.parametrize("n", [0, -5, 2.5, True, "100", 10**9])
def test_bad_row_counts_are_refused_in_the_kernel_and_spend_nothing(
        refusing: ServiceProcess, n: Any) -> None:
    service = refusing
    with pdj.connect(service.url, token=ALICE) as s, pytest.raises(pdj.PdebugError) as err:
        s.dataset("loans").synthetic(n, 1.0)
    assert err.value.code == "invalid_parameter" and "n must be" in str(err.value)
    assert service.spent() == 0.0
    assert service.call("GET", "/releases").json()["releases"] == []


def test_attribution_columns_are_binned_over_their_bounds(loans: Any, tmp_path: Path) -> None:
    path = policy_copy(loans, tmp_path)
    path.write_text(path.read_text().replace(
        "window = {", 'shap_age = { kind = "attribution", bounds = [-1, 1] }\nwindow = {'))
    ds = load_policy(path).datasets["loans"]
    query = build_query(ds, {"kind": "marginals", "epsilon": 1.0,
                             "columns": ["shap_age", "sex"]})
    shap = next(c for c in query.cubes if c.name == "shap_age")
    assert shap.dims[0].edges == pytest.approx(np.linspace(-1, 1, 11))
    assert [c.name for c in query.cubes] == ["sex", "shap_age", "sex x shap_age"]
    assert query.params["columns"][0] == "sex"
