"""deploy/: the systemd unit, the alert rules and the dashboard, checked by their own tools."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.ops.deploy_files import ALERT_TESTS, ALERTS, UNIT, dashboard_exprs
from tests.ops.promtool import PROMTOOL

SYSTEMD_ANALYZE = "/usr/bin/systemd-analyze"


def run(*argv: str, cwd: Path | None = None) -> tuple[int, str]:
    done = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, timeout=60)
    return done.returncode, done.stdout + done.stderr


def test_alert_rules_pass_promtool_and_their_unit_tests() -> None:
    assert shutil.which(PROMTOOL), f"{PROMTOOL} is missing: run tests/setup/system-packages.sh"
    code, out = run(PROMTOOL, "check", "rules", str(ALERTS))
    assert code == 0, out
    # Takeover without alert, nobody serving, split brain, fenced, lag, bans surging.
    code, out = run(PROMTOOL, "test", "rules", ALERT_TESTS.name, cwd=ALERT_TESTS.parent)
    assert code == 0 and "SUCCESS" in out, out


def test_systemd_unit_is_valid_and_uses_notify_with_a_watchdog(tmp_path: Path) -> None:
    assert shutil.which(SYSTEMD_ANALYZE), f"{SYSTEMD_ANALYZE} is missing"
    text = UNIT.read_text()
    assert "Type=notify" in text and "WatchdogSec=" in text
    # Point ExecStart at this checkout's rportd so that verify can check it.
    rportd = Path(sys.executable).parent / "rportd"
    unit = tmp_path / "rportd.service"
    unit.write_text(text.replace("/opt/rportd/bin/rportd", str(rportd)))
    code, out = run(SYSTEMD_ANALYZE, "verify", str(unit))
    problems = [line for line in out.splitlines() if "rportd.service" in line]
    assert code == 0 and not problems, out


def test_dashboard_panels_all_have_queries() -> None:
    exprs = dashboard_exprs()
    assert len(exprs) >= 15 and all(e.strip() for e in exprs)
