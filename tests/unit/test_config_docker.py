"""The Docker source's options: ``--docker`` is a switch and a URL at once
(bare, it means ``DOCKER_HOST``, else the default socket; ``DOCKER_HOST`` alone
turns nothing on), and the two options that only work with it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dnsd.config import load_config
from dnsd.errors import ConfigError


@pytest.mark.parametrize(("argv", "env", "file", "expected"), [
    ([], {}, "", None),                                                  # off by default
    ([], {"DOCKER_HOST": "tcp://10.0.0.2:2375"}, "", None),              # DOCKER_HOST alone: off
    (["--docker"], {}, "", "unix:///var/run/docker.sock"),
    (["--docker"], {"DOCKER_HOST": "unix:///run/d.sock"}, "", "unix:///run/d.sock"),
    (["--docker"], {"DOCKER_HOST": "tcp://10.0.0.2:2375"}, "", "tcp://10.0.0.2:2375"),
    (["--docker"], {"DOCKER_HOST": ""}, "", "unix:///var/run/docker.sock"),
    (["--docker", "unix:///x/docker.sock"], {"DOCKER_HOST": "tcp://h:1"}, "",
     "unix:///x/docker.sock"),                                           # the flag's URL wins
    (["--docker=/x/docker.sock"], {}, "", "unix:///x/docker.sock"),       # a bare socket path
    (["--docker", "http://[fd00::1]:2375"], {}, "", "tcp://[fd00::1]:2375"),
    (["--docker=no"], {"DNSD_DOCKER": "1"}, "", None),                   # flag > env
    ([], {"DNSD_DOCKER": "yes"}, "", "unix:///var/run/docker.sock"),
    ([], {"DNSD_DOCKER": "tcp://h:2375"}, "", "tcp://h:2375"),
    ([], {"DNSD_DOCKER": "0"}, "docker = true\n", None),                 # env > file
    ([], {}, "docker = true\n", "unix:///var/run/docker.sock"),
    ([], {}, "docker = false\n", None),
    ([], {}, 'docker = "unix:///y.sock"\n', "unix:///y.sock"),
])
def test_docker_flag_or_url(tmp_path: Path, argv: list[str], env: dict[str, str], file: str,
                            expected: str | None) -> None:
    if file:
        path = tmp_path / "c.toml"
        path.write_text(file)
        argv = [*argv, "--config", str(path)]
    assert load_config(argv, environ=env).docker == expected


def test_docker_settings_are_kept_normalised() -> None:
    config = load_config(["--docker", "--docker-published", "[2001:db8::0:1]",
                          "--docker-network", "front_end.1"], environ={})
    assert (config.docker_published, config.docker_network) == ("2001:db8::1", "front_end.1")


@pytest.mark.parametrize(("argv", "env", "error"), [
    (["--docker", "ssh://host"], {}, "--docker: 'ssh://host' is not unix:///PATH or "
     "tcp://HOST:PORT"),
    (["--docker", "https://host:2376"], {}, "TLS and ssh:// are not supported"),
    (["--docker", "tcp://host"], {}, "is not tcp://HOST:PORT"),
    (["--docker", "tcp://host:99999"], {}, "has a bad port"),
    (["--docker", "unix://"], {}, "is not unix:///PATH"),
    (["--docker"], {"DOCKER_HOST": "ssh://me@host"}, "DOCKER_HOST (for --docker): "),
    (["--docker-published", "192.0.2.1"], {}, "--docker-published: has no effect without "
     "--docker"),
    (["--docker-network", "web"], {}, "--docker-network: has no effect without --docker"),
    (["--docker=off", "--docker-network", "web"], {}, "has no effect without --docker"),
    (["--docker", "--docker-published", "0.0.0.0"], {}, "not an address clients can reach"),
    (["--docker", "--docker-published", "host1"], {}, "'host1' is not an IP address"),
    (["--docker", "--docker-network=-web"], {}, "'-web' is not a Docker network name"),
])
def test_docker_option_errors(argv: list[str], env: dict[str, str], error: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(error)):
        load_config(argv, environ=env)
