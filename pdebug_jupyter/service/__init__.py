"""The privacy service process: ``pdebug-jupyter serve --policy FILE [--local | --hub]``."""

from __future__ import annotations

import asyncio
import getpass
import json
import logging
import os
import signal
import sys
from concurrent.futures import ThreadPoolExecutor

import tornado.httpserver
import tornado.netutil

from ..engine import Engine
from ..ledger import Ledger
from ..policy import User, load_policy
from .app import Service, make_app
from .auth import TokenAuthenticator
from .hub import HubAuthenticator, HubEnvironment

__all__ = ["serve"]

LOCAL_TOKEN_ENV = "PDEBUG_LOCAL_TOKEN"  # noqa: S105 (a variable name, not a secret)
LOCAL_USER_ENV = "PDEBUG_LOCAL_USER"


def _local_user(role: str) -> User:
    """The session user of a child service started by ``connect()``: the token comes from the
    parent through the environment (never argv, which other users can read)."""
    token = os.environ.pop(LOCAL_TOKEN_ENV, "")
    if len(token) < 32:
        raise SystemExit(f"--local needs a token of 32+ characters in ${LOCAL_TOKEN_ENV}")
    return User(os.environ.get(LOCAL_USER_ENV) or getpass.getuser(), role, token)


def build_service(policy_path: str, *, local: bool = False,
                  hub: HubEnvironment | None = None) -> Service:
    # on a hub, policy users whose tokens are unset are left out: the hub's users remain
    policy = load_policy(policy_path, require_tokens=not (local or hub))
    engine = Engine(policy)
    for name in policy.datasets:  # open every source now: a bad policy fails at start
        engine.version(name)
    auth = (HubAuthenticator(policy, hub) if hub else
            TokenAuthenticator(policy, _local_user(policy.local_role) if local else None))
    return Service(policy=policy, engine=engine, ledger=Ledger(policy.ledger), auth=auth,
                   pool=ThreadPoolExecutor(max_workers=2, thread_name_prefix="pdebug-engine"))


async def _run(service: Service, host: str, port: int, local: bool,
               hub: HubEnvironment | None = None) -> None:
    sockets = tornado.netutil.bind_sockets(port, address=host)
    app = make_app(service, hub.prefix if hub else "/")
    server = tornado.httpserver.HTTPServer(app, xheaders=False)
    server.add_sockets(sockets)
    bound = sockets[0].getsockname()[1]
    url_host = f"[{host}]" if ":" in host else host
    base = hub.prefix.rstrip("/") if hub else ""
    print(json.dumps({"url": f"http://{url_host}:{bound}{base}/api/v1", "pid": os.getpid()}),
          flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if local:  # a child of a kernel: stop when the parent goes away and our stdin closes
        def on_stdin() -> None:
            if not os.read(sys.stdin.fileno(), 1024):
                stop.set()
        loop.add_reader(sys.stdin.fileno(), on_stdin)
    await stop.wait()
    server.stop()
    await server.close_all_connections()


def serve(policy_path: str, host: str = "127.0.0.1", port: int = 0, *,
          local: bool = False, hub: bool = False) -> None:
    """Run the service until SIGTERM/SIGINT; prints one JSON line with the URL when ready.

    With ``hub`` it is a JupyterHub service: the hub's environment says where to listen
    (``$JUPYTERHUB_SERVICE_URL``, overriding ``host`` and ``port``), under which prefix, and
    how to check tokens."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    env = None
    if hub:
        env = HubEnvironment.from_environ()
        os.environ.pop("JUPYTERHUB_API_TOKEN", None)  # nothing this process starts needs it
        host, port = env.host, env.port
    service = build_service(policy_path, local=local, hub=env)
    try:
        asyncio.run(_run(service, host, port, local, env))
    finally:
        service.pool.shutdown(wait=True)
        service.reads.close()
        service.ledger.close()
        service.engine.close()
