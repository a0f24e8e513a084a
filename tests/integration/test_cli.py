"""The CLI contract: help, version, options from flags, environment and file,
one-line errors, static file reloads and graceful shutdown."""

from __future__ import annotations

import os
import re
import shutil
import signal
from pathlib import Path

import dns.exception
import dns.rcode
import pytest

from dnsd import __version__
from tests.conftest import SERVICES
from tests.dnsd_process import DnsdProcess, run_cli, wait_until
from tests.upstreams import free_port


def test_help_lists_every_contract_option() -> None:
    result = run_cli(["--help"])
    assert result.returncode == 0
    for option in ("--listen", "--domain", "--alt-domain", "--datacenter", "--node-name",
                   "--static", "--consul", "--zookeeper", "--upstream", "--ttl",
                   "--negative-ttl", "--udp-answer-limit", "--allow-recursion",
                   "--upstream-for", "--consul-datacenters", "--zookeeper-datacenter",
                   "--workers", "--rate-limit", "--query-log", "--only-passing",
                   "--state-dir", "--metrics", "--log-level", "--config"):
        assert option in result.stdout


def test_version() -> None:
    result = run_cli(["--version"])
    assert result.returncode == 0 and result.stdout.strip() == f"dnsd {__version__}"


@pytest.mark.parametrize(("args", "env", "needle"), [
    (["--no-such-flag"], {}, "--no-such-flag"),
    (["--ttl", "soon"], {}, "--ttl"),
    (["--ttl", "-1"], {}, "--ttl"),
    (["--listen", "127.0.0.1"], {}, "--listen"),
    (["--listen", "300.1.1.1:53"], {}, "--listen"),
    (["--listen", "::1:53"], {}, "--listen"),
    (["--domain", "bad..name"], {}, "--domain"),
    (["--allow-recursion", "10.0.0.0/33"], {}, "--allow-recursion"),
    (["--upstream-for", "example.org"], {}, "--upstream-for"),
    (["--log-level", "loud"], {}, "--log-level"),
    (["--consul", "ftp://x"], {}, "--consul"),
    (["--workers", "0"], {}, "--workers"),
    ([], {"DNSD_TTL": "x"}, "DNSD_TTL"),
    ([], {"DNSD_ONLY_PASSING": "maybe"}, "DNSD_ONLY_PASSING"),
    (["--static", "/nonexistent/services.toml"], {}, "/nonexistent/services.toml"),
    (["--config", "/nonexistent/dnsd.toml"], {}, "/nonexistent/dnsd.toml"),
])
def test_bad_input_exits_with_one_line_naming_it(args: list[str], env: dict[str, str],
                                                 needle: str) -> None:
    result = run_cli(args, env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert needle in lines[0] and lines[0].startswith("dnsd: error:")


@pytest.mark.parametrize(("content", "needles"), [
    ('[[services]]\nport = 80\naddress = "10.0.0.1"\n', ["entry 1", "name", "required"]),
    ('[[services]]\nname = "web"\naddress = "10.0.0.1"\nport = 70000\n',
     ["entry 1 (web)", "port"]),
    ('[[services]]\nname = "web"\naddress = "10.0.0.1"\nportt = 80\n',
     ["entry 1 (web)", "portt", "unknown field (did you mean port?)"]),
    ('[[services]]\nname = "we b"\naddress = "10.0.0.1"\n', ["entry 1", "name"]),
    ('[[services]]\nname = "web"\naddress = "not an address!"\n', ["(web)", "address"]),
    ('[[services]]\nname = "web"\naddress = "10.0.0.400"\n', ["(web)", "address", "10.0.0.400"]),
    ('[[services]]\nname = "web"\naddress = "1.2.3"\n', ["(web)", "address", "'1.2.3'"]),
    ('[[services]]\nname = "web"\naddress = "999.1.1.1"\n', ["(web)", "address"]),
    ('[[services]]\nname = "web"\naddress = "10.0.0.1\\n"\n', ["(web)", "address"]),
    ('[[services]]\nname = "web\\n"\naddress = "10.0.0.1"\n', ["entry 1", "name"]),
    ('[[services]]\nname = "web"\n', ["(web)", "address", "node_address"]),
    ('[[services]]\nname = "web"\naddress = "10.0.0.1"\nstatus = "ok"\n', ["status"]),
    ('[[services]]\nname = "web"\naddress = "10.0.0.1"\nweights = { passing = -1 }\n',
     ["weights.passing"]),
    ('[[services]]\nname = "web"\naddress = "10.0.0.1"\ntags = "http"\n', ["tags"]),
    ('[[services]]\nname = "a"\nid = "x"\naddress = "10.0.0.1"\n'
     '[[services]]\nname = "a"\nid = "x"\naddress = "10.0.0.2"\n', ["entry 2 (a)", "id"]),
    ("this is not toml", ["not valid TOML"]),
    ("services = " + "[" * 50_000, ["nested too deeply"]),
])
def test_bad_services_file_names_file_entry_and_field(tmp_path: Path, content: str,
                                                      needles: list[str]) -> None:
    path = tmp_path / "services.toml"
    path.write_text(content)
    result = run_cli(["--static", str(path)])
    assert result.returncode == 2
    line = result.stderr.strip()
    assert "\n" not in line and str(path) in line
    for needle in needles:
        assert needle in line


def test_deeply_nested_json_services_file_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "services.json"
    path.write_text('{"services": ' + "[" * 50_000)
    result = run_cli(["--static", str(path)])
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"dnsd: error: {path}: nested too deeply"]


def test_a_file_that_turns_deeply_nested_keeps_serving_without_restarts(
        tmp_path: Path) -> None:
    path = tmp_path / "services.toml"
    path.write_text('[[services]]\nname = "web"\naddress = "10.0.0.1"\n')
    with DnsdProcess(["--static", str(path)]) as proc:
        path.write_text("services = " + "[" * 50_000)
        proc.wait_for_log(r"nested too deeply; still serving its previous version")
        assert proc.query("web.service.consul", "A").answer[0][0].address == "10.0.0.1"
        path.write_text('[[services]]\nname = "web"\naddress = "10.0.0.2"\n')
        wait_until(lambda: proc.query("web.service.consul", "A").answer[0][0].address
                   == "10.0.0.2")
        assert "restarting" not in proc.log and "Traceback" not in proc.log


def test_json_services_file(tmp_path: Path) -> None:
    path = tmp_path / "services.json"
    path.write_text('{"services": [{"name": "web", "address": "10.0.0.5", "port": 80}]}')
    with DnsdProcess(["--static", str(path)]) as proc:
        assert proc.query("web.service.consul", "A").answer[0][0].address == "10.0.0.5"


def test_precedence_flag_over_env_over_file_over_default(tmp_path: Path) -> None:
    config = tmp_path / "dnsd.toml"
    config.write_text(f'static = ["{SERVICES}"]\nttl = 10\nnegative_ttl = 11\n'
                      'domain = "fromfile"\n')
    env = {"DNSD_TTL": "20", "DNSD_NEGATIVE_TTL": "21"}
    with DnsdProcess(["--config", str(config), "--ttl", "30"], env=env) as proc:
        assert proc.query("web.service.fromfile", "A").answer[0].ttl == 30   # flag
        assert proc.query("nope.service.fromfile", "A").authority[0].ttl == 21  # env
    with DnsdProcess([], env={"DNSD_CONFIG": str(config)}) as proc:
        assert proc.query("web.service.fromfile", "A").answer[0].ttl == 10   # file


def test_unknown_config_key_is_named(tmp_path: Path) -> None:
    config = tmp_path / "dnsd.toml"
    config.write_text("tll = 5\n")
    result = run_cli(["--config", str(config)])
    assert result.returncode == 2 and "'tll'" in result.stderr


def test_static_file_change_is_answered_while_running(tmp_path: Path) -> None:
    path = tmp_path / "services.toml"
    path.write_text('[[services]]\nname = "web"\naddress = "10.0.0.1"\n')
    with DnsdProcess(["--static", str(path)]) as proc:
        assert proc.query("web.service.consul", "A").answer[0][0].address == "10.0.0.1"
        path.write_text('[[services]]\nname = "web"\naddress = "10.0.0.2"\n'
                        '[[services]]\nname = "new"\naddress = "10.0.0.3"\n')
        took = wait_until(
            lambda: proc.query("new.service.consul", "A").rcode() == dns.rcode.NOERROR)
        print(f"services file change answered after {took:.2f} s")
        assert proc.query("web.service.consul", "A").answer[0][0].address == "10.0.0.2"

        # a bad edit keeps the previous table serving, and says why
        path.write_text('[[services]]\nname = "web"\nport = "eighty"\naddress = "10.0.0.9"\n')
        proc.wait_for_log(r"port: must be an integer.*previous version")
        assert proc.query("web.service.consul", "A").answer[0][0].address == "10.0.0.2"
        assert proc.query("new.service.consul", "A").rcode() == dns.rcode.NOERROR

        # deleting the file is like a bad edit
        os.unlink(path)
        proc.wait_for_log(r"cannot read")
        assert proc.query("web.service.consul", "A").answer[0][0].address == "10.0.0.2"


def test_sighup_rereads_services_files(tmp_path: Path) -> None:
    path = tmp_path / "services.toml"
    path.write_text('[[services]]\nname = "web"\naddress = "10.0.0.1"\n')
    with DnsdProcess(["--static", str(path)]) as proc:
        path.write_text('[[services]]\nname = "web"\naddress = "10.0.0.7"\n')
        proc.signal(signal.SIGHUP)
        proc.wait_for_log("SIGHUP")
        wait_until(lambda: proc.query("web.service.consul", "A").answer[0][0].address
                   == "10.0.0.7")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_graceful_shutdown(sig: int) -> None:
    proc = DnsdProcess(["--static", str(SERVICES)])
    proc.signal(sig)
    assert proc.proc.wait(10) == 0
    proc.stop()
    assert re.search("shutting down", proc.log)


def _catches(pid: int, sig: int) -> bool:
    """True once process ``pid`` has a handler for ``sig`` (its SigCgt mask)."""
    with open(f"/proc/{pid}/status") as fh:
        mask = next(line for line in fh if line.startswith("SigCgt:")).split()[1]
    return bool(int(mask, 16) >> (sig - 1) & 1)


def test_a_signal_while_starting_is_kept_not_fatal() -> None:
    """SIGHUP or SIGTERM sent as soon as dnsd can catch it, before it serves: a
    reload once serving, or a graceful stop, never the default action."""
    proc = DnsdProcess(["--static", str(SERVICES)], wait=False)
    try:
        wait_until(lambda: _catches(proc.proc.pid, signal.SIGHUP), interval=0.0005)
        proc.signal(signal.SIGHUP)
        proc.wait_listening()
        proc.wait_for_log("SIGHUP: reloading")
        assert proc.query("web.service.consul", "A").rcode() == dns.rcode.NOERROR
    finally:
        assert proc.stop() == 0
    proc = DnsdProcess(["--static", str(SERVICES)], wait=False)
    wait_until(lambda: _catches(proc.proc.pid, signal.SIGTERM), interval=0.0005)
    proc.signal(signal.SIGTERM)
    assert proc.proc.wait(30) == 0
    proc.stop()
    assert "shutting down" in proc.log


def test_listen_conflict_is_one_line() -> None:
    with DnsdProcess(["--static", str(SERVICES)]) as first:
        result = run_cli(["--listen", f"127.0.0.1:{first.port}"])
        assert result.returncode == 2
        assert "cannot listen" in result.stderr and str(first.port) in result.stderr
        assert result.stderr.count("\n") == 1 and "--listen" in result.stderr


def test_metrics_port_in_use_fails_before_dnsd_says_it_serves() -> None:
    with DnsdProcess(["--static", str(SERVICES)]) as first:
        result = run_cli(["--static", str(SERVICES), "--listen", "127.0.0.1:0",
                          "--metrics", f"127.0.0.1:{first.port}"])
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert lines[-1].startswith(f"dnsd: error: --metrics 127.0.0.1:{first.port}: "
                                    "cannot listen")
        assert not any("listening on" in line for line in lines)


def _unprivileged_port_start() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_unprivileged_port_start") as fh:
            return int(fh.read())
    except OSError:
        return 1024


AS_NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
             "--inh-caps=-all", "--bounding-set=-all"]


def _runs_as_nobody() -> bool:
    """Root with setpriv, and a checkout that user 65534 can read."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        return False
    done = run_cli(["--version"], prefix=AS_NOBODY)
    return done.returncode == 0


@pytest.mark.skipif(_unprivileged_port_start() <= 53 or not _runs_as_nobody(),
                    reason="needs a kernel that reserves port 53, and root with setpriv "
                           "to run dnsd from this checkout as an unprivileged user")
def test_port_53_without_the_capability_says_what_is_missing() -> None:
    result = run_cli(["--listen", "127.0.0.1:53"], prefix=AS_NOBODY)
    assert result.returncode == 2
    assert "CAP_NET_BIND_SERVICE" in result.stderr and result.stderr.count("\n") == 1


def test_sighup_reloads_the_config_file(tmp_path: Path) -> None:
    first = tmp_path / "a.toml"
    first.write_text('[[services]]\nname = "web"\naddress = "10.0.0.1"\n')
    second = tmp_path / "b.toml"
    second.write_text('[[services]]\nname = "api"\naddress = "10.0.0.2"\n')
    config = tmp_path / "dnsd.toml"
    config.write_text(f'static = ["{first}"]\nttl = 5\n')
    with DnsdProcess(["--config", str(config)]) as proc:
        assert proc.query("web.service.consul", "A").answer[0].ttl == 5
        assert proc.query("api.service.consul", "A").rcode() == dns.rcode.NXDOMAIN

        config.write_text(f'static = ["{second}"]\nttl = 9\nnode_name = "elsewhere"\n')
        proc.signal(signal.SIGHUP)
        proc.wait_for_log("configuration applied")
        assert "node_name changed; restart" in proc.log
        assert proc.query("api.service.consul", "A").answer[0].ttl == 9
        wait_until(lambda: proc.query("web.service.consul", "A").rcode() == dns.rcode.NXDOMAIN)

        config.write_text("ttl = 'soon'\n")  # a bad edit keeps the running configuration
        proc.signal(signal.SIGHUP)
        proc.wait_for_log("keeping the running configuration")
        assert proc.query("api.service.consul", "A").answer[0].ttl == 9


def test_query_log_says_who_what_and_where_from(tmp_path: Path) -> None:
    """One line per query: client and port, id, name, type and rcode by name,
    answer count and the origin; kept at --log-level warning."""
    port = free_port()  # --log-level warning hides the "listening on" line
    with DnsdProcess(["--static", str(SERVICES), "--query-log", "--log-level", "warning",
                      "--no-forward", "--listen", f"127.0.0.1:{port}"],
                     env={"DNSD_UPSTREAM": ""}, wait=False) as proc:
        proc.listening.append(("127.0.0.1", port))
        def serving() -> bool:
            try:
                return bool(proc.query("consul", "SOA", timeout=1).answer)
            except (OSError, dns.exception.DNSException):
                return False
        wait_until(serving)
        start = len(proc.lines)
        reply = proc.query("web.service.consul", "A")
        proc.query("web.service.consul", "A")  # the second from the rendered cache
        proc.query("nope.service.consul", "AAAA", tcp=True)
        proc.query("example.org", "A")
        lines = [line for line in wait_until_lines(proc, start, 4) if "dnsd.query" in line]
    first = re.search(r"dnsd\.query: 127\.0\.0\.1#(\d+) udp id=(\d+) web\.service\.consul\. A "
                      r"NOERROR answers=(\d+) from=table [\d.]+ms$", lines[0])
    assert first, lines[0]
    assert int(first.group(1)) > 0 and int(first.group(2)) == reply.id
    assert int(first.group(3)) == len(reply.answer[0])
    assert "from=table" in lines[1]
    assert re.search(r" tcp id=\d+ nope\.service\.consul\. AAAA NXDOMAIN answers=0 from=table",
                     lines[2]), lines[2]
    assert re.search(r"example\.org\. A REFUSED answers=0 from=dnsd", lines[3]), lines[3]


def wait_until_lines(proc: DnsdProcess, start: int, count: int) -> list[str]:
    wait_until(lambda: sum("dnsd.query" in line for line in proc.lines[start:]) >= count)
    return list(proc.lines[start:])
