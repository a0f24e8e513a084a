"""The benchmarks still import and their generators still produce what dnsd and
dnsmasq read (``make test`` catches a broken ``make bench``). Nothing is timed
and no dnsperf runs here."""

from __future__ import annotations

import ipaddress
import json
import tomllib
from pathlib import Path

import pytest

from dnsd.sources.static import StaticSettings, StaticSource
from tests.perf import bench, dnsperf, instructions, scale
from tests.perf.workload import ForwardZone, Registry, query_file, random_mix

TINY = Registry(services=3, instances=2)


def test_dnsd_file_loads_through_the_static_source(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(TINY.dnsd_toml())
    view = StaticSource(str(path), StaticSettings("bench", "dc1")).load()
    assert sorted((i.service, i.address, i.port) for i in view.instances) == [
        ("svc00000", "10.0.0.1", 20000), ("svc00000", "10.0.0.2", 20001),
        ("svc00001", "10.0.0.3", 20000), ("svc00001", "10.0.0.4", 20001),
        ("svc00002", "10.0.0.5", 20000), ("svc00002", "10.0.0.6", 20001),
    ]


def test_json_file_holds_the_same_instances_as_toml(tmp_path: Path) -> None:
    as_json = json.loads(TINY.dnsd_json())["services"]
    as_toml = tomllib.loads(TINY.dnsd_toml())["services"]
    assert as_json == as_toml
    path = tmp_path / "s.json"
    path.write_text(TINY.dnsd_json())
    assert len(StaticSource(str(path), StaticSettings("bench", "dc1")).load().instances) == 6


def test_dnsmasq_records_match_the_dnsd_records() -> None:
    hosts = [line.split() for line in TINY.dnsmasq_hosts().splitlines()]
    assert hosts[0] == ["10.0.0.1", "svc00000.service.consul", "0a000001.addr.dc1.consul"]
    assert len(hosts) == 6
    for address, _name, target in hosts:
        # the SRV target label is the address in hex, as dnsd (and Consul) write it
        assert ipaddress.ip_address(bytes.fromhex(target.split(".")[0])) == \
            ipaddress.ip_address(address)
    conf = TINY.dnsmasq_conf().splitlines()
    assert conf[0] == "local=/consul/"
    assert conf[1] == "srv-host=svc00000.service.consul,0a000001.addr.dc1.consul,20000,1,1"
    assert len(conf) == 7


def test_query_files_are_dnsperf_input() -> None:
    names = [TINY.name(i) for i in range(TINY.services)]
    lines = query_file(names, "SRV").splitlines()
    assert sorted(lines) == [f"{n} SRV" for n in names]
    mixed = query_file(names, "A", mixed_case=True, seed=3).splitlines()
    assert sorted(line.split()[0].lower() for line in mixed) == names
    drawn = random_mix(names, "A", 50).splitlines()
    assert len(drawn) == 50 and {line.split()[0] for line in drawn} <= set(names)
    assert ForwardZone(2).hosts() == "12.0.0.1 host00000.fwd.test\n12.0.0.2 host00001.fwd.test\n"


def test_registry_rejects_sizes_it_cannot_number() -> None:
    with pytest.raises(ValueError):
        Registry(0, 3)
    with pytest.raises(ValueError):
        Registry(1 << 12, 1 << 12)


def test_dnsperf_report_is_parsed() -> None:
    text = """
  Queries sent:         332012
  Queries completed:    332010 (100.00%)
  Queries lost:         2 (0.00%)

  Response codes:       NOERROR 221342 (66.67%), NXDOMAIN 110668 (33.33%)
  Average packet size:  request 36, response 57
  Run time (s):         3.000805
  Queries per second:   110640.978004

  Average Latency (s):  0.000647 (min 0.000013, max 0.004763)
  Latency StdDev (s):   0.000425
> NOERROR web.service.consul A 0.000200
> NXDOMAIN nope.service.consul A 0.000100
> T web.service.consul A 5.000000
"""
    result = dnsperf.parse_output(text)
    assert (result.sent, result.completed, result.lost) == (332012, 332010, 2)
    assert result.rcodes == {"NOERROR": 221342, "NXDOMAIN": 110668}
    assert (result.request_size, result.response_size) == (36, 57)
    assert result.qps == pytest.approx(110640.978004)
    assert result.latencies == [0.0002, 0.0001]  # the timeout is not a latency
    assert result.percentile(0.5) == 0.0001
    assert result.percentile(0.99) == 0.0002


def test_bench_and_scale_build_their_inputs(tmp_path: Path) -> None:
    args = bench.parse_args(["--case", "a", "--case", "srv", "--seconds", "1"])
    assert args.case == ["a", "srv"] and args.workers == 1
    cases = bench.write_inputs(tmp_path, TINY, ForwardZone(4))
    assert set(cases) == set(bench.CASES)
    assert cases["edns-cookie"].edns_options == (bench.COOKIE_OPTION,)
    argv = dnsperf.command(5300, cases["edns-cookie"].queries, seconds=1,
                           edns_options=cases["edns-cookie"].edns_options)
    assert argv[argv.index("-E") + 1] == "10:0123456789abcdef"
    assert scale.build_view(TINY).instances[5].address == "10.0.0.6"
    lines = scale.table_figures(TINY)
    assert "3 services" in lines[1]


def test_callgrind_totals_are_read(tmp_path: Path) -> None:
    dump = tmp_path / "callgrind.out.1"
    dump.write_text("version: 1\nevents: Ir\nfl=(1) x.c\nfn=(1) f\n1 5\n"
                    "summary: 51321885\ntotals: 55258353\n")
    assert instructions.total_instructions(dump) == 51_321_885
    args = bench.parse_args(["--pure-python"])
    assert args.pure_python
