"""docker-compose.yml's observability profile, checked by structure (no Docker engine here):
the files it mounts exist, Prometheus scrapes the ports the services listen on,
Grafana's data source and dashboard provider point where the files are."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from tests.dashboard import DASHBOARD, panels

ROOT = Path(__file__).resolve().parents[2]


def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Container path -> repository path of a service's bind mounts."""
    found = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("./"):
            found[target] = ROOT / source
    return found


def test_the_profile_runs_pinned_prometheus_and_grafana_with_files_that_exist() -> None:
    services = compose()["services"]
    for name in ("prometheus", "grafana"):
        assert services[name]["profiles"] == ["observability"]
        for path in mounts(services[name]).values():
            assert path.exists(), path
    for name, service in services.items():  # every image of the file is pinned to a version
        if "image" in service and "build" not in service:
            _repo, _, tag = service["image"].partition(":")
            assert tag and tag != "latest" and any(c.isdigit() for c in tag), (name, service["image"])
    # Without the profile, nothing else needs them.
    assert not [n for n, s in services.items() if "observability" not in s.get("profiles", ["observability"])
                and {"prometheus", "grafana"} & set(s.get("depends_on", []))]


def test_prometheus_scrapes_each_service_on_the_port_it_serves_metrics_on() -> None:
    services = compose()["services"]
    config_path = mounts(services["prometheus"])["/etc/prometheus/prometheus.yml"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in services["prometheus"]["command"]
    jobs = {job["job_name"]: job for job in yaml.safe_load(config_path.read_text())["scrape_configs"]}
    port_of = {"api": "API_METRICS_PORT", "consumer": "CONSUMER_METRICS_PORT"}
    host_of = {"api": "API_METRICS_HOST", "consumer": "CONSUMER_METRICS_HOST"}
    for job, variable in port_of.items():
        targets = [t for c in jobs[job]["static_configs"] for t in c["targets"]]
        replicas = sorted(n for n, s in services.items() if s.get("command") == [job])
        assert sorted(t.split(":")[0] for t in targets) == replicas, (job, targets, replicas)
        for target in targets:
            host, port = target.split(":")
            env = services[host]["environment"]
            assert str(env[variable]) == port, (target, variable, env.get(variable))
            assert env[host_of[job]] == "0.0.0.0", "listening on loopback only, Prometheus could not reach it"
        assert jobs[job].get("metrics_path", "/metrics") == "/metrics"


def test_grafana_is_provisioned_with_the_prometheus_source_and_the_dashboard() -> None:
    services = compose()["services"]
    grafana = mounts(services["grafana"])
    provisioning = grafana["/etc/grafana/provisioning"]
    [source] = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    assert "127.0.0.1:9090:9090" in services["prometheus"]["ports"]
    [provider] = yaml.safe_load((provisioning / "dashboards" / "assessment-refresh.yml").read_text())["providers"]
    dashboards_dir = grafana[provider["options"]["path"]]
    assert (dashboards_dir / DASHBOARD.name).samefile(DASHBOARD)
    dashboard = json.loads(DASHBOARD.read_text())
    queried = [p for p in panels(dashboard) if p.get("targets")]
    assert len(queried) >= 7
    for panel in queried:
        assert panel["datasource"]["uid"] == source["uid"], panel["title"]
        assert all(t["datasource"]["uid"] == source["uid"] and t["expr"] for t in panel["targets"]), panel["title"]
