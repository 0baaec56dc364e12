"""schemathesis against a real rportd from its own OpenAPI document: no 5xx, ever.

A small example budget per operation keeps it quick; the server runs as a process
with static (read-only) users and credentials, so generated requests cannot lock
the test out, and without IP bans, so failed logins do not end the run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig

from rportd.api.views.openapi import DOCUMENT
from tests.ha.cluster import REPO, free_port

EXAMPLES = int(os.environ.get("RPORTD_FUZZ_EXAMPLES", "4"))
ADMIN = ("admin", "fuzz-admin-password")

# Only the fuzzing phase, bounded by EXAMPLES: the coverage phase alone sends
# hundreds of requests per operation, minutes for the whole API.
schema = schemathesis.openapi.from_dict(
    json.loads(DOCUMENT.read_text()),
    config=SchemathesisConfig.from_dict({"phases": {"coverage": {"enabled": False}}}),
)


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root: Path = tmp_path_factory.mktemp("fuzz")
    api_port, client_port = free_port(), free_port()
    config = root / "rportd.conf"
    config.write_text(
        f"""
[server]
  address = "127.0.0.1:{client_port}"
  data_dir = "{root / "data"}"
  key_seed = "fuzz-key-seed"
  auth = "client1:secret-1"
  used_ports = ["35000-35099"]
  allow_root = true
[logging]
  log_file = "{root / "rportd.log"}"
  log_level = "info"
[api]
  address = "127.0.0.1:{api_port}"
  auth = "{ADMIN[0]}:{ADMIN[1]}"
  jwt_secret = "fuzz-jwt-secret-that-is-long-enough-000"
  user_login_wait = 0
  max_failed_login = 0
"""
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "rportd", "-c", str(config)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{api_port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(url + "/healthz", timeout=1) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None, "rportd exited:\n" + (root / "rportd.log").read_text()
            assert time.monotonic() < deadline, "rportd did not come up"
            time.sleep(0.1)
        yield url
        log = (root / "rportd.log").read_text()
        assert "Traceback" not in log, log[log.find("Traceback") - 300 :][:3000]
    finally:
        proc.terminate()
        proc.wait(15)


@pytest.fixture(scope="module")
def session() -> Iterator[requests.Session]:
    with requests.Session() as http:
        http.auth = ADMIN
        yield http


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_no_request_makes_a_server_error(
    case: schemathesis.Case[Any], base_url: str, session: requests.Session
) -> None:
    case.call_and_validate(
        base_url=base_url, session=session, checks=[not_a_server_error], timeout=10
    )
