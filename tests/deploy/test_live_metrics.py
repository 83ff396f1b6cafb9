"""The real server on loopback: its /metrics page passes ``promtool check metrics``, and the
probes the image and the chart use answer as they should.

promtool comes from Debian's ``prometheus`` package. Without it these checks
fail (``require_or_skip`` in ``tests/conftest.py``).
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
HEALTHCHECK = REPO / "docker" / "healthcheck.py"


def _metrics_page(server: Any) -> str:
    # Some traffic first, so the per-route families have samples.
    for path in ("/healthz", "/readyz", "/no-such-route"):
        httpx.get(f"{server.base_url}{path}", timeout=10.0)
    response = httpx.get(f"{server.base_url}/metrics", timeout=10.0)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


def test_metrics_page_passes_promtool(live_server: Any, promtool: str) -> None:
    page = _metrics_page(live_server)
    result = subprocess.run(
        [promtool, "check", "metrics"], input=page, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, f"promtool check metrics:\n{result.stdout}{result.stderr}"
    assert "deepminer_http_requests_total" in page


def test_autoscaling_metric_of_the_docs_is_a_gauge_the_service_exports(live_server: Any) -> None:
    """docs/deploy.md's prometheus-adapter rule reads a series that exists, under the name the chart's HPA uses."""
    rule = _adapter_rule()
    series = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", rule["seriesQuery"])
    assert series is not None
    assert f"# TYPE {series.group(0)} gauge" in _metrics_page(live_server)
    values = yaml.safe_load((REPO / "helm" / "deepminer" / "values.yaml").read_text())
    assert rule["name"]["as"] == values["autoscaling"]["inflight"]["metricName"]


def _adapter_rule() -> dict[str, Any]:
    docs = (REPO / "docs" / "deploy.md").read_text()
    for block in re.findall(r"```yaml\n(.*?)```", docs, flags=re.DOTALL):
        if "seriesQuery" in block:
            rules = yaml.safe_load(block)["rules"]["custom"]
            assert len(rules) == 1
            rule: dict[str, Any] = rules[0]
            return rule
    pytest.fail("docs/deploy.md has no prometheus-adapter rule (a yaml block with seriesQuery)")


def _healthcheck(url: str | None = None) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, str(HEALTHCHECK)] + ([url] if url else [])
    return subprocess.run(args, capture_output=True, text=True, timeout=30, check=False)


def test_image_healthcheck_script(live_server: Any, unused_port: int) -> None:
    assert _healthcheck(f"{live_server.base_url}/healthz").returncode == 0
    assert _healthcheck(f"{live_server.base_url}/readyz").returncode == 0
    missing = _healthcheck(f"{live_server.base_url}/no-such-route")
    assert missing.returncode == 1 and "answered 404" in missing.stderr
    closed = _healthcheck(f"http://127.0.0.1:{unused_port}/healthz")
    assert closed.returncode == 1 and "unhealthy" in closed.stderr


def test_healthcheck_defaults_to_deepminer_port(live_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEEPMINER_PORT", live_server.base_url.rsplit(":", 1)[1])
    result = _healthcheck()
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"healthy: http://127.0.0.1:{live_server.base_url.rsplit(':', 1)[1]}/healthz"


def test_server_stops_cleanly_on_sigterm(tiny_bundle: Path, start_live_server: Any) -> None:
    """The image's entrypoint execs the server as PID 1, so SIGTERM from Kubernetes reaches uvicorn itself."""
    server = start_live_server(python=sys.executable, bundle=tiny_bundle)
    server.process.terminate()
    # uvicorn shuts down gracefully, then re-raises the signal: exit status 0 or "killed by SIGTERM".
    assert server.process.wait(timeout=30) in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in server.log.read_text()
