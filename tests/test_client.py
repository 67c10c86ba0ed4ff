"""The kernel-side client: connect(), local service children, releases and errors."""

from __future__ import annotations

import http.server
import json
import logging
import threading
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from conftest import ALICE, TOKENS, ServiceProcess, policy_copy

import pdebug_jupyter as pdj
from pdebug_jupyter.client.local import LocalService
from pdebug_jupyter.client.transport import PdebugError, Transport


def test_local_session_releases_histograms_and_stops_its_service(loans: Any,
                                                                 tmp_path: Path) -> None:
    policy = policy_copy(loans, tmp_path)
    session = pdj.connect(policy=policy, purpose="check region mix")
    assert session.me["role"] == "owner"
    assert session.datasets() == ["loans"]
    loans_ds = session.dataset("loans")
    assert {c["name"] for c in loans_ds.schema["columns"]} >= {"age", "region", "window"}
    rel = loans_ds.histogram("region", by="window", epsilon=0.3)
    frame = rel.to_frame()
    assert list(frame.columns) == ["region", "window", "count", "suppressed", "count_ci95"]
    assert list(frame["region"].cat.categories) == ["north", "south", "east", "west", "other"]
    assert len(frame) == 5 * 3
    assert frame["count"].dtype == pd.Int64Dtype()
    assert rel.cached is False and rel.epsilon == 0.3
    assert rel.provenance["purpose"] == "check region mix"
    again = loans_ds.histogram("region", by=["window"], epsilon=0.3)
    assert again.cached is True and again.release_id == rel.release_id
    assert loans_ds.budget["spent"] == pytest.approx(0.3)
    assert session.release(rel.release_id).to_frame()["count"].equals(frame["count"])
    process = session._local.process  # type: ignore[union-attr]
    session.close()
    assert process.poll() == 0

    # a new session is the same user: the budget is not reset
    with pdj.connect(policy=policy) as second:
        assert second.dataset("loans").budget["spent"] == pytest.approx(0.3)


def test_a_local_session_needs_no_other_users_tokens(loans: Any, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # the demo's case: a laptop has none of the policy's env: tokens set
    for var in TOKENS:
        monkeypatch.delenv(var)
    with pdj.connect(policy=policy_copy(loans, tmp_path)) as session:
        assert session.me["role"] == "owner"
        assert session.datasets() == ["loans"]


def test_connect_by_url_and_token_from_the_environment(shared_service: ServiceProcess,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PDEBUG_URL", shared_service.url)
    monkeypatch.setenv("PDEBUG_TOKEN", ALICE)
    with pdj.connect(purpose="env") as session:
        assert session.me["user"] == "alice"
        cost = session.dataset("loans").cost("histogram", column="age", epsilon=0.5)
        assert cost["parts"][0]["noise"][0]["sensitivity"] == 1 and cost["noise_scale"] == 2.0


def test_errors_are_one_line_exceptions_with_codes(shared_service: ServiceProcess) -> None:
    with pdj.connect(shared_service.url, token=ALICE) as session:
        ds = session.dataset("loans")
        with pytest.raises(pdj.PdebugError) as err:
            ds.histogram("ssn", epsilon=0.1)
        assert err.value.code == "forbidden_column" and "\n" not in str(err.value)
        with pytest.raises(pdj.PdebugError, match="epsilon must be a positive"):
            ds.histogram("age", epsilon=-1)
    with pytest.raises(pdj.PdebugError) as err:
        pdj.connect(shared_service.url, token="not-the-token-00000")
    assert err.value.code == "unauthorized"
    with pytest.raises(pdj.PdebugError) as err:
        pdj.connect("http://127.0.0.1:9/api/v1", token=ALICE)
    assert err.value.code == "unreachable"


def test_connect_without_a_service_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("PDEBUG_URL", "PDEBUG_TOKEN", "PDEBUG_POLICY"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(pdj.PdebugError, match="pass url= and token=") as err:
        pdj.connect()
    assert err.value.code == "no_service"


def test_a_bad_policy_fails_the_local_start_with_the_reason(tmp_path: Path) -> None:
    bad = tmp_path / "policy.toml"
    bad.write_text('[datasets.x]\nsource = "x.parquet"\n')
    with pytest.raises(pdj.PdebugError, match="policy.toml: datasets.x.columns: is required"):
        pdj.connect(policy=bad)


def test_the_local_service_exits_when_its_parent_goes_away(loans: Any, tmp_path: Path) -> None:
    local = LocalService(policy_copy(loans, tmp_path))
    assert local.process.poll() is None
    assert local.process.stdin is not None
    local.process.stdin.close()  # what the kernel's death looks like to the child
    assert local.process.wait(timeout=30) == 0
    local.stop()


class _Proxy(http.server.BaseHTTPRequestHandler):
    seen: list[tuple[str, str | None]] = []

    def do_GET(self) -> None:  # noqa: N802 (the http.server name)
        self.seen.append((self.path, self.headers.get("Authorization")))
        body = json.dumps({"status": "ok"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        return None


def test_the_client_reads_proxy_settings_from_the_environment_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment is read when the client is made (not on every request, which cost
    1-5 ms each), and it still counts: a proxy set there carries the request."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Proxy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{server.server_port}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        transport = Transport("http://pdebug.invalid/api/v1", "tok", None, timeout=10)
        monkeypatch.delenv("HTTP_PROXY")
        assert transport.request("GET", "/health") == {"status": "ok"}
        assert _Proxy.seen == [("http://pdebug.invalid/api/v1/health", "token tok")]
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_number_json_cannot_carry_is_refused_before_anything_is_sent(value: float) -> None:
    # nothing listens on port 9: a request that left would be "unreachable"
    transport = Transport("http://127.0.0.1:9/api/v1", "tok", None, timeout=5)
    with pytest.raises(PdebugError) as info:
        transport.request("POST", "/datasets/loans/query", {"kind": "histogram",
                                                            "epsilon": value})
    assert info.value.code == "invalid_parameter"
    with pytest.raises(PdebugError) as info:
        transport.request("POST", "/datasets/loans/query", {"kind": "histogram", "epsilon": 1})
    assert info.value.code == "unreachable"


def test_threads_sharing_one_client_reuse_its_connections_without_warnings(
        shared_service: ServiceProcess, caplog: pytest.LogCaptureFixture) -> None:
    transport = Transport(shared_service.url, ALICE, None, timeout=30)
    answers: list[Any] = []

    def work() -> None:
        answers.extend(transport.request("GET", "/budget")["user"] for _ in range(10))

    with caplog.at_level(logging.WARNING, logger="urllib3"):
        threads = [threading.Thread(target=work) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    transport.close()
    assert answers == ["alice"] * 60
    # a pool of one connection drops the others with "Connection pool is full" on stderr
    assert not [r for r in caplog.records if "pool is full" in r.getMessage()]
