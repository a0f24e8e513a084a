"""The image's HEALTHCHECK without a running dnsd: finding dnsd's arguments in a
command line, reading a process from /proc, the SOA query it sends."""

from __future__ import annotations

from pathlib import Path

import dns.message
import dns.rdatatype
import pytest

from dnsd.healthcheck import dnsd_args, main, read_process, soa_query


@pytest.mark.parametrize(("cmdline", "args"), [
    (["/opt/dnsd/bin/python3", "/opt/dnsd/bin/dnsd", "--static", "/etc/dnsd/services.toml"],
     ["--static", "/etc/dnsd/services.toml"]),
    (["dnsd"], []),
    (["/usr/bin/python3", "-m", "dnsd", "--listen", "0.0.0.0:53"], ["--listen", "0.0.0.0:53"]),
    (["/sbin/docker-init", "--", "dnsd", "--metrics", "0.0.0.0:9999"],
     ["--metrics", "0.0.0.0:9999"]),
    (["/usr/bin/python3", "-m", "dnsd.healthcheck"], None),
    (["sleep", "--state-dir", "/var/lib/dnsd"], None),   # dnsd only as an argument
    (["/bin/sh"], None),
    ([], None),
])
def test_dnsd_args(cmdline: list[str], args: list[str] | None) -> None:
    assert dnsd_args(cmdline) == args


def fake_process(proc: Path, pid: int, cmdline: list[str], environ: dict[str, str]) -> None:
    folder = proc / str(pid)
    folder.mkdir(parents=True)
    (folder / "cmdline").write_bytes(b"".join(w.encode() + b"\0" for w in cmdline))
    (folder / "environ").write_bytes(b"".join(f"{k}={v}".encode() + b"\0"
                                              for k, v in environ.items()))


def test_read_process(tmp_path: Path) -> None:
    fake_process(tmp_path, 1, ["dnsd", "--listen", "0.0.0.0:53"],
                 {"DNSD_METRICS": "0.0.0.0:9153", "EMPTY": "", "A": "b=c"})
    assert read_process(1, tmp_path) == (["dnsd", "--listen", "0.0.0.0:53"],
                                         {"DNSD_METRICS": "0.0.0.0:9153", "EMPTY": "",
                                          "A": "b=c"})


def test_not_dnsd_or_bad_configuration_is_unhealthy(tmp_path: Path, capsys) -> None:
    fake_process(tmp_path, 1, ["/bin/sh", "-c", "sleep 1"], {})
    assert main([], proc=tmp_path) == 1
    assert capsys.readouterr().out.startswith("unhealthy: process 1 is not dnsd")
    fake_process(tmp_path, 7, ["dnsd", "--ttl", "minus one"], {})
    assert main(["--pid", "7"], proc=tmp_path) == 1
    assert "unhealthy: dnsd's configuration: --ttl" in capsys.readouterr().out
    assert main(["--pid", "8"], proc=tmp_path) == 1
    assert capsys.readouterr().out.startswith("unhealthy: cannot read process 8")


def test_soa_query_is_a_plain_question() -> None:
    query = dns.message.from_wire(soa_query("consul", 0x1234))
    assert query.id == 0x1234 and not query.flags
    assert [(str(q.name), q.rdtype) for q in query.question] == \
        [("consul.", dns.rdatatype.SOA)]
    assert dns.message.from_wire(soa_query("service.test.", 1)).question[0].name.to_text() \
        == "service.test."
