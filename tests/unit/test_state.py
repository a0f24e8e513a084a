"""The saved table: round trip, atomic writes, corrupt and foreign files, the saver."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from dnsd.errors import StateFileError
from dnsd.model import Health, Instance, Node, ServiceAddress, View
from dnsd.state import FILE_NAME, StateSaver, encode_views, load_views, save_views

VIEWS = {
    "consul:http://127.0.0.1:8500": View(
        instances=(
            Instance("web", "node1", "dc1", id="web-1", node_address="10.0.0.1", port=80,
                     tags=("v1", "http"), health=Health.WARNING, weight_passing=3,
                     weight_warning=1, meta={"version": "1.2"}),
            Instance("db", "node2", "dc2", address="2001:db8::5", port=5432,
                     tagged_addresses={"wan": ServiceAddress("198.51.100.5", 15432)}),
            Instance("ext", "node3", "dc1", address="db.example.com", port=1),
        ),
        nodes=(Node("node1", "dc1", "10.0.0.1", {"rack": "r1"},
                    {"lan_ipv6": "fd00::1", "wan": "198.51.100.1"}),
               Node("lonely", "dc1", "")),
        local_datacenter="dc1",
        prepared={"dc1": '[{"ID": "q1", "Service": {"Service": "web"}}]'}),
    "zookeeper:zk1:2181/services": View(
        instances=(Instance("cache", "host-a", "dc1", node_address="10.1.0.1", port=6379),)),
}


def test_round_trip(tmp_path: Path) -> None:
    save_views(str(tmp_path), VIEWS)
    assert load_views(str(tmp_path)) == VIEWS
    assert os.listdir(tmp_path) == [FILE_NAME]  # no temporary file left behind


def test_node_meta_is_optional_in_older_files(tmp_path: Path) -> None:
    data = _valid()
    views = data["views"]
    assert isinstance(views, dict)
    for node in views["consul:http://127.0.0.1:8500"]["nodes"]:
        del node["meta"]
    _write(tmp_path, json.dumps(data).encode())
    nodes = load_views(str(tmp_path))["consul:http://127.0.0.1:8500"].nodes
    assert [dict(n.meta) for n in nodes] == [{}, {}]


def test_tagged_addresses_and_prepared_queries_are_optional_in_older_files(
        tmp_path: Path) -> None:
    data = _valid()
    views = data["views"]
    assert isinstance(views, dict)
    for view in views.values():
        view.pop("prepared")
        for entry in (*view["instances"], *view["nodes"]):
            entry.pop("tagged_addresses")
    _write(tmp_path, json.dumps(data).encode())
    loaded = load_views(str(tmp_path))["consul:http://127.0.0.1:8500"]
    assert not loaded.prepared
    assert not any(i.tagged_addresses for i in loaded.instances)
    assert not any(n.tagged_addresses for n in loaded.nodes)


def test_values_are_hashable_and_frozen() -> None:
    inst = VIEWS["consul:http://127.0.0.1:8500"].instances[0]
    assert hash(inst) == hash(Instance(**{f: getattr(inst, f) for f in (
        "service", "node", "datacenter", "id", "node_address", "port", "tags", "health",
        "weight_passing", "weight_warning", "meta")}))
    with pytest.raises(TypeError):
        inst.meta["version"] = "2"  # type: ignore[index]
    assert hash(VIEWS["consul:http://127.0.0.1:8500"]) is not None


def test_save_replaces_and_creates_the_directory(tmp_path: Path) -> None:
    target = tmp_path / "deeper" / "state"
    save_views(str(target), VIEWS)
    save_views(str(target), {})
    assert load_views(str(target)) == {}


def test_nothing_saved_yet_is_empty(tmp_path: Path) -> None:
    assert load_views(str(tmp_path)) == {}


def _write(tmp_path: Path, payload: bytes) -> None:
    (tmp_path / FILE_NAME).write_bytes(payload)


def _valid() -> dict[str, object]:
    return json.loads(encode_views(VIEWS))  # type: ignore[no-any-return]


def _instance_field(data: dict[str, object], key: str, value: object) -> dict[str, object]:
    views = data["views"]
    assert isinstance(views, dict)
    views["consul:http://127.0.0.1:8500"]["instances"][0][key] = value
    return data


@pytest.mark.parametrize(("payload", "message"), [
    (b"\x00\xffgarbage", "not JSON"),
    (b"[1, 2]", "not a dnsd table"),
    (b'{"format": "something-else", "version": 1}', "not a dnsd table"),
    (json.dumps({**_valid(), "version": 99}).encode(), "format version 99"),
    (json.dumps({**_valid(), "views": []}).encode(), "views is missing"),
    (json.dumps(_instance_field(_valid(), "port", "80")).encode(), "port"),
    (json.dumps(_instance_field(_valid(), "port", 99999)).encode(), "port"),
    (json.dumps(_instance_field(_valid(), "health", "sick")).encode(), "unknown health"),
    (json.dumps(_instance_field(_valid(), "service", "bad name")).encode(), "service name"),
    (json.dumps(_instance_field(_valid(), "tags", [1])).encode(), "tags"),
    (encode_views(VIEWS)[:-20], "not JSON"),  # a torn write
])
def test_corrupt_or_foreign_files_raise_state_file_error(tmp_path: Path, payload: bytes,
                                                         message: str) -> None:
    _write(tmp_path, payload)
    with pytest.raises(StateFileError) as info:
        load_views(str(tmp_path))
    assert message in str(info.value)
    assert str(tmp_path / FILE_NAME) in str(info.value)


def test_unreadable_file_raises_state_file_error(tmp_path: Path) -> None:
    (tmp_path / FILE_NAME).mkdir()  # a directory where the file should be
    with pytest.raises(StateFileError):
        load_views(str(tmp_path))


async def test_saver_debounces_a_burst_into_one_write(tmp_path: Path) -> None:
    current: dict[str, View] = {}
    saver = StateSaver(str(tmp_path), lambda: current, delay=0.05)
    for n in range(20):
        current = {"s": View(instances=(Instance(f"svc{n}", "n1", "dc1", port=n),))}
        saver.notify(None)
    assert saver.saves == 0
    await asyncio.sleep(0.3)
    assert saver.saves == 1
    assert load_views(str(tmp_path)) == current  # the last state of the burst


async def test_saver_close_flushes_pending(tmp_path: Path) -> None:
    saver = StateSaver(str(tmp_path), lambda: VIEWS, delay=10.0)
    saver.notify(None)
    await saver.close()
    assert saver.saves == 1
    assert load_views(str(tmp_path)) == VIEWS


async def test_saver_write_failure_is_logged_not_raised(tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    saver = StateSaver(str(blocker / "state"), lambda: VIEWS, delay=0.01)
    saver.notify(None)
    await asyncio.sleep(0.1)
    saver.notify(None)
    await asyncio.sleep(0.1)
    await saver.close()
    assert saver.saves == 0
    warnings = [r for r in caplog.records if r.name == "dnsd.state"]
    assert len(warnings) == 1  # the same error once, not per attempt


def test_deeply_nested_json_is_a_corrupt_file(tmp_path: Path) -> None:
    _write(tmp_path, b"[" * 100_000 + b"]" * 100_000)
    with pytest.raises(StateFileError, match="nested too deeply"):
        load_views(str(tmp_path))


def test_a_fifo_is_refused_without_hanging(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / FILE_NAME)
    with pytest.raises(StateFileError, match="not a regular file"):
        load_views(str(tmp_path))


def test_a_device_is_refused(tmp_path: Path) -> None:
    os.symlink("/dev/zero", tmp_path / FILE_NAME)
    with pytest.raises(StateFileError, match="not a regular file"):
        load_views(str(tmp_path))


async def test_temporary_files_of_an_interrupted_save_are_removed(tmp_path: Path) -> None:
    (tmp_path / ".table.abc123.tmp").write_bytes(b"half a table")
    (tmp_path / "other.tmp").write_bytes(b"not ours")
    StateSaver(str(tmp_path), lambda: VIEWS)
    assert sorted(os.listdir(tmp_path)) == ["other.tmp"]
