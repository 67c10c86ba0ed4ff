"""HTTP to the service: one typed request helper, errors as one-line exceptions."""

from __future__ import annotations

import json
import os
from typing import Any
from urllib.parse import urlencode

import requests
import urllib3
from requests.utils import DEFAULT_CA_BUNDLE_PATH, select_proxy


class PdebugError(Exception):
    """A refusal or failure from the service, with its stable ``code``."""

    def __init__(self, code: str, message: str, status: int = 0) -> None:
        super().__init__(f"{message} [{code}]")
        self.code, self.message, self.status = code, message, status


PURPOSE_HEADER = "X-Pdebug-Purpose"


class Transport:
    """One connection pool to the service. Requests go through urllib3 directly: requests'
    session machinery (cookies, hooks, adapters) cost 0.6-1.3 ms a call over it here. The
    environment's proxy and CA settings are read once, with requests' own rules."""

    def __init__(self, url: str, token: str, purpose: str | None, timeout: float = 300.0) -> None:
        self.url = url.rstrip("/")
        self.headers = {"Authorization": f"token {token}"}
        env = requests.Session().merge_environment_settings(self.url, {}, None, None, None)
        verify = env["verify"]
        pool: dict[str, Any] = {
            "timeout": urllib3.Timeout(connect=timeout, read=timeout),
            # no retries (a release must not be sent twice by the library); redirects
            # followed, as requests did (a hub may add a trailing slash)
            "retries": urllib3.Retry(total=None, connect=0, read=0, status=0, other=0,
                                     redirect=10),
            # as many kept connections as requests kept: threads sharing one client do not
            # open and drop one per call (with a warning on stderr each time)
            "maxsize": 10,
            "cert_reqs": "CERT_REQUIRED" if verify else "CERT_NONE"}
        if verify:
            ca = DEFAULT_CA_BUNDLE_PATH if verify is True else str(verify)
            pool["ca_cert_dir" if os.path.isdir(ca) else "ca_certs"] = ca
        proxy = select_proxy(self.url, env["proxies"])
        self._http: urllib3.PoolManager = (urllib3.ProxyManager(proxy, **pool) if proxy
                                           else urllib3.PoolManager(**pool))
        self.purpose = purpose

    @property
    def purpose(self) -> str | None:
        """Sent with every request as ``X-Pdebug-Purpose``; the service records it."""
        return self.headers.get(PURPOSE_HEADER)

    @purpose.setter
    def purpose(self, text: str | None) -> None:
        if text:
            self.headers[PURPOSE_HEADER] = text
        else:
            self.headers.pop(PURPOSE_HEADER, None)

    def request(self, method: str, path: str, body: dict[str, Any] | None = None,
                params: dict[str, Any] | None = None) -> Any:
        url = self.url + path + ("?" + urlencode(params) if params else "")
        headers, payload = self.headers, None
        if body is not None:
            headers = {**headers, "Content-Type": "application/json"}
            try:
                payload = json.dumps(body, allow_nan=False).encode()
            except ValueError:
                raise PdebugError("invalid_parameter", "NaN and infinity are not numbers the "
                                  "service takes") from None
        try:
            resp = self._http.request(method, url, body=payload, headers=headers)
        except urllib3.exceptions.HTTPError:
            raise PdebugError("unreachable", f"the privacy service at {self.url} cannot be "
                              "reached") from None
        try:
            data = json.loads(resp.data)
        except ValueError:
            raise PdebugError("bad_response", f"the service answered {resp.status} "
                              "without JSON", resp.status) from None
        if resp.status >= 400:
            err = data.get("error", {}) if isinstance(data, dict) else {}
            raise PdebugError(err.get("code", "error"),
                              err.get("message", resp.reason or "error"), resp.status)
        return data

    def close(self) -> None:
        self._http.clear()
