"""ApacheKafka(reuse_storage=True): which nodes start() formats, without a JVM."""

from __future__ import annotations

from pathlib import Path

import pytest

from assessment_refresh.apache_kafka import ApacheKafka, cluster


@pytest.fixture
def formats(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, list[int]]]:
    """start() with no Java: records each _format(cluster_id, nodes) call."""
    calls: list[tuple[str, list[int]]] = []
    monkeypatch.setattr(cluster, "broker_classpath", lambda _progress=None: "/nowhere/*")
    monkeypatch.setattr(ApacheKafka, "_format", lambda _self, cid, nodes: calls.append((cid, [n.node_id for n in nodes])))
    monkeypatch.setattr(ApacheKafka, "_launch", lambda _self, _node: None)
    monkeypatch.setattr(ApacheKafka, "wait_ready", lambda _self, _timeout=90.0, brokers=None: None)
    return calls


def format_as(base_dir: Path, node_id: int, cluster_id: str) -> None:
    """What StorageTool format leaves: data/meta.properties with the cluster id."""
    data = base_dir / f"node-{node_id}" / "data"
    data.mkdir(parents=True)
    (data / "meta.properties").write_text(
        f"#\n#Tue Dec 01 12:00:00 UTC 2026\nnode.id={node_id}\ndirectory.id=abc\nversion=1\ncluster.id={cluster_id}\n"
    )


def test_by_default_every_node_is_formatted_even_when_formatted_before(
    formats: list[tuple[str, list[int]]], tmp_path: Path
) -> None:
    format_as(tmp_path, 1, "old-cluster")
    ApacheKafka(base_dir=tmp_path).start()
    assert len(formats) == 1
    cluster_id, nodes = formats[0]
    assert nodes == [1] and cluster_id != "old-cluster"


def test_reuse_formats_a_new_directory(formats: list[tuple[str, list[int]]], tmp_path: Path) -> None:
    kafka = ApacheKafka(base_dir=tmp_path / "kafka", reuse_storage=True).start()
    assert [nodes for _cid, nodes in formats] == [[1]]
    assert (tmp_path / "kafka" / "node-1" / "server.properties").exists()
    assert kafka.start_seconds is not None


def test_reuse_keeps_formatted_storage_and_writes_the_new_ports(
    formats: list[tuple[str, list[int]]], tmp_path: Path
) -> None:
    format_as(tmp_path, 1, "kept-cluster")
    kafka = ApacheKafka(base_dir=tmp_path, reuse_storage=True).start()
    assert formats == []
    properties = (tmp_path / "node-1" / "server.properties").read_text()
    assert f"listeners=PLAINTEXT://127.0.0.1:{kafka.nodes[0].port}," in properties


def test_reuse_formats_only_the_missing_nodes_with_the_stored_cluster_id(
    formats: list[tuple[str, list[int]]], tmp_path: Path
) -> None:
    format_as(tmp_path, 1, "kept-cluster")
    format_as(tmp_path, 3, "kept-cluster")
    ApacheKafka(3, base_dir=tmp_path, reuse_storage=True).start()
    assert formats == [("kept-cluster", [2])]


def test_reuse_refuses_nodes_of_different_clusters(formats: list[tuple[str, list[int]]], tmp_path: Path) -> None:
    format_as(tmp_path, 1, "one")
    format_as(tmp_path, 2, "other")
    with pytest.raises(RuntimeError, match="different clusters"):
        ApacheKafka(2, base_dir=tmp_path, reuse_storage=True).start()
    assert formats == []
