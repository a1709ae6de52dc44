"""The local grid's parts, each exercised for real: Rucio, storage, broker, network isolation."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest
from juno_grid import storage

pytestmark = pytest.mark.grid


def test_rucio_ping_and_whoami(grid) -> None:
    client = grid.client()
    assert client.ping()["version"].startswith("41.")
    assert client.whoami()["account"] == "root"


def test_every_role_account_can_log_in(grid) -> None:
    for account in ("juno_ingest", "juno_prod", "jcoord", "analyst1"):
        assert grid.client(account).whoami()["account"] == account


def test_topology_matches_sites_yaml(grid) -> None:
    from rucio_policy import sites_sync

    changes = [c for c in sites_sync.plan(grid.client(), grid.topo, "local") if c.kind != "extra"]
    assert changes == [], "Rucio deviates from etc/sites.yaml:\n" + "\n".join(map(str, changes))
    client = grid.client()
    assert client.list_rse_attributes("CNAF-DISK")["available_for_multihop"] is True
    # The slow direct link is configured unavailable: no distance, so JINR is reached through CNAF.
    assert client.get_distance("IHEP-EOS", "JINR-DISK") == []
    assert client.get_distance("IHEP-EOS", "CNAF-DISK")[0]["distance"] == 2


def test_juno_grid_tpc_shows_and_chooses_the_transfer_protocol(grid) -> None:
    from click.testing import CliRunner
    from juno_grid.cli import main

    runner = CliRunner()
    shown = runner.invoke(main, ["tpc", "--json"])
    assert shown.exit_code == 0, shown.output
    assert set(json.loads(shown.output)["transfers_over"].values()) == {"root"}
    dry = runner.invoke(main, ["tpc", "davs", "--dry-run", "--json"])
    assert dry.exit_code == 0, dry.output
    changes = json.loads(dry.output)["changes"]
    assert len(changes) == 2 * len(grid.topo.rses)  # root and davs of every RSE re-ranked
    assert {(c["rse"], c["third_party_copy_read"]) for c in changes if c["scheme"] == "davs"} == {
        (r.name, None if r.is_tape else 1) for r in grid.topo.rses}
    # --dry-run changed nothing; a protocol it does not know is refused with the choices.
    assert set(json.loads(runner.invoke(main, ["tpc", "--json"]).output)["transfers_over"].values()) == {"root"}
    bad = runner.invoke(main, ["tpc", "gsiftp"])
    assert bad.exit_code == 2 and "'root', 'davs'" in bad.output


@pytest.mark.parametrize("rse", ["IHEP-EOS", "IHEP-TAPE", "CNAF-DISK", "CNAF-TAPE", "JINR-DISK", "IN2P3-DISK"])
def test_upload_to_each_storage_and_read_back_adler32(grid, tmp_path: Path, rse: str) -> None:
    local = storage.make_file(tmp_path / "f.bin", 1_234_567)
    proto = grid.topo.rse(rse).protocols["local"]
    url = f"{proto.url}/{proto.prefix}/tests/{uuid.uuid4().hex}"
    storage.copy(str(local), url)
    assert storage.remote_adler32(url) == storage.adler32_file(local)
    back = tmp_path / "back.bin"
    storage.copy(url, str(back))
    assert back.read_bytes() == local.read_bytes()


def test_no_grid_listener_outside_loopback(grid) -> None:
    # Inside the grid's namespace the only interface is loopback, so even XRootD's wildcard
    # listeners are reachable from 127.0.0.1 only ...
    links = subprocess.run(["ip", "-j", "link"], capture_output=True, text=True, check=True)
    assert [link["ifname"] for link in json.loads(links.stdout)] == ["lo"]
    listeners = subprocess.run(["ss", "-Hltn"], capture_output=True, text=True, check=True).stdout.split("\n")
    local = [line.split()[3] for line in listeners if line.strip()]
    assert local, "no listener at all inside the grid namespace?"
    for address in local:
        host = address.rsplit(":", 1)[0]
        assert host in {"127.0.0.1", "[::1]", "*", "0.0.0.0", "[::]", "[::ffff:127.0.0.1]"}, address
    # ... and in the namespace pytest started in (the host's), no grid port is open at all.
    from conftest import HOST_NETNS_FD

    host_ss = subprocess.run(["nsenter", f"--net=/proc/self/fd/{HOST_NETNS_FD}", "ss", "-Hltn"],
                             capture_output=True, text=True, check=True, pass_fds=(HOST_NETNS_FD,))
    grid_ports = {p.port for p in (r.protocols["local"] for r in grid.topo.rses)} | {
        grid.cfg.ports.rucio, grid.cfg.ports.postgres, grid.cfg.ports.kafka, grid.cfg.ports.fts}
    host_ports = {int(line.split()[3].rsplit(":", 1)[1]) for line in host_ss.stdout.splitlines() if line.strip()}
    assert not grid_ports & host_ports, f"grid ports open in the host namespace: {grid_ports & host_ports}"


def test_kafka_produce_consume_with_group_and_committed_offsets(grid) -> None:
    from confluent_kafka import Consumer, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    topic = f"test-{uuid.uuid4().hex[:8]}"
    conf = {"bootstrap.servers": grid.cfg.kafka_bootstrap}
    admin = AdminClient(conf)
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(timeout=30)
    producer = Producer(conf)
    for i in range(10):
        producer.produce(topic, value=f"m{i}".encode())
    assert producer.flush(30) == 0

    def consumer() -> Consumer:
        c = Consumer({**conf, "group.id": f"g-{topic}", "auto.offset.reset": "earliest",
                      "enable.auto.commit": False, "session.timeout.ms": 6000})
        c.subscribe([topic])
        return c

    c1 = consumer()
    got: list[bytes] = []
    while len(got) < 4:
        msg = c1.poll(10)
        assert msg is not None, "no message within 10 s"
        assert msg.error() is None, msg.error()
        got.append(msg.value())
    c1.commit(message=msg, asynchronous=False)
    c1.close()
    # A new member of the same group resumes after the committed offset.
    c2 = consumer()
    msg = c2.poll(20)
    assert msg is not None and msg.value() == b"m4"
    committed = c2.committed([TopicPartition(topic, 0)], timeout=10)[0].offset
    assert committed == 4
    c2.close()
