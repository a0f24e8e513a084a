"""Registrator's naming rules: one container's inspect data -> the instances it yields.

dnsd's Docker source replaces gliderlabs/registrator on a host, so a container
must be named here exactly as registrator would register it; existing
``SERVICE_*`` labels and environment variables keep working. The rules come from
registrator's ``bridge/bridge.go`` (``Bridge.add``, ``Bridge.newService``) and
``bridge/util.go`` (``serviceMetaData``, ``servicePort``, ``recParseEscapedComma``),
documented in its ``docs/user/services.md``; each rule below names its origin.
Where dnsd differs on purpose (health, network choice, digests, checks of what
DNS can serve) the comment says so.

The input is the JSON object the Engine API returns for
``GET /containers/{id}/json``, decoded but otherwise untrusted: a field of the
wrong type costs a warning (a :class:`Problem`), never an exception, and never
the container's other ports.

Pure and fast: no I/O, no Docker client, no clock. Imports: ``model`` only.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dnsd.model import AddressKind, Health, Instance, View, classify_address, is_hostname, is_label

_PREFIX = "SERVICE_"
# Go's strconv.Atoi, which registrator's serviceMetaData uses to tell
# SERVICE_<port>_<key> from SERVICE_<key>: an optional sign, ASCII digits.
_PORT_KEY = re.compile(r"[+-]?[0-9]+")
# An Engine API port key: "80/tcp" (the protocol is always there in practice;
# registrator's servicePort defaults it to tcp when it is not).
_PORT_SPEC = re.compile(r"([0-9]{1,5})(?:/([a-z]+))?")
_HOST_PORT = re.compile(r"[0-9]{1,5}")
# Settings that are not meta: registrator deletes id, tags and name from the
# attributes (bridge.go, newService); network is dnsd's own.
_NOT_META = frozenset({"id", "tags", "name", "network"})
_SERVED_PROTOCOLS = frozenset({"tcp", "udp"})


@dataclass(frozen=True, slots=True)
class NamingSettings:
    """What the naming needs from dnsd's configuration.

    ``published`` is ``--docker-published`` (registrator's ``-ip``): serve only
    published ports, at that address and the host port. ``None`` serves every
    exposed port at the container's own address (registrator's ``-internal``).
    ``network`` is ``--docker-network``, the network preferred when a container
    has several.
    """

    node: str
    datacenter: str
    published: str | None = None
    network: str | None = None

    def __post_init__(self) -> None:
        if not is_hostname(self.node):
            raise ValueError(f"node name {self.node!r} is not a valid DNS name")
        if not is_label(self.datacenter):
            raise ValueError(f"datacenter {self.datacenter!r} is not a valid DNS label")
        if self.published is not None:
            kind, address = classify_address(self.published)
            if kind not in (AddressKind.IPV4, AddressKind.IPV6):
                raise ValueError(f"published address {self.published!r} is not an IP address")
            object.__setattr__(self, "published", address)
        if self.network is not None and not self.network:
            raise ValueError("the preferred network name is empty")


@dataclass(frozen=True, slots=True)
class Problem:
    """Something in one container's data that dnsd ignored, and where.

    ``source`` is the label, environment variable or inspect field at fault:
    ``label SERVICE_80_NAME``, ``env SERVICE_TAGS``, ``Config.ExposedPorts``.
    """

    container: str
    source: str
    message: str

    def __str__(self) -> str:
        return f"container {self.container}: {self.source}: {self.message}"


@dataclass(frozen=True, slots=True)
class ContainerInstances:
    """What one container yields: its instances, the problems met, and, when it
    yields none, why (``reason``; not running, no port, ignored, no address)."""

    container_id: str
    container: str
    instances: tuple[Instance, ...] = ()
    problems: tuple[Problem, ...] = ()
    reason: str = ""


@dataclass(frozen=True, slots=True)
class _Setting:
    value: str
    origin: str  # "label SERVICE_NAME" or "env SERVICE_NAME"


@dataclass(slots=True)
class _Context:
    """One container's name and the problems found so far."""

    container: str
    problems: list[Problem] = field(default_factory=list)

    def problem(self, source: str, message: str) -> None:
        self.problems.append(Problem(self.container, source, message))


def image_base_name(image: str) -> str:
    """The default service name: the image's base name.

    registrator (bridge.go, newService) takes ``path.Base`` of the image and cuts
    it at the first ``:`` (the tag): ``registry:5000/team/web:1.2`` -> ``web``.
    dnsd also cuts a digest (``web@sha256:...`` -> ``web``), which registrator
    would leave as ``web@sha256``.
    """
    base = image.rstrip("/").rsplit("/", 1)[-1]
    return base.split("@", 1)[0].split(":", 1)[0]


def split_tags(text: str) -> list[str]:
    """``SERVICE_TAGS`` -> tags: split at commas, ``\\,`` is a literal comma,
    empty parts are dropped (registrator's util.go, recParseEscapedComma).

    registrator returns the tags in reverse order (its recursion appends the
    first tag last); dnsd keeps the written order, which no lookup depends on.
    """
    tags: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char == "\\" and text.startswith(",", i + 1):
            current.append(",")
            i += 2
            continue
        if char == ",":
            if current:
                tags.append("".join(current))
            current = []
        else:
            current.append(char)
        i += 1
    if current:
        tags.append("".join(current))
    return tags


def container_instances(inspect: Any, settings: NamingSettings) -> ContainerInstances:
    """The instances one container yields under registrator's rules.

    One instance per exposed TCP or UDP port (with ``settings.published``: per
    published port); none when the container is not running, has no such port,
    is ignored, or (without ``published``) has no address. Never raises.
    """
    if not isinstance(inspect, dict):
        problem = Problem("?", "inspect data", f"is {type(inspect).__name__}, not an object")
        return ContainerInstances("", "?", problems=(problem,), reason="no inspect data")
    container_id = inspect.get("Id")
    if not isinstance(container_id, str):
        container_id = ""
    name = inspect.get("Name")
    display = (name.lstrip("/") if isinstance(name, str) else "") or container_id[:12] or "?"
    ctx = _Context(display)
    if not isinstance(name, str) or not name.lstrip("/"):
        ctx.problem("Name", f"{name!r} is no container name")

    state = _object(inspect, "State", ctx)
    running = state.get("Running")
    if running is not True:
        if not isinstance(running, bool):
            ctx.problem("State.Running", f"{running!r} is not true or false")
        status = state.get("Status")
        status = status if isinstance(status, str) else "?"
        return _result(container_id, ctx, (), f"not running ({status})")

    config = _object(inspect, "Config", ctx)
    network_settings = _object(inspect, "NetworkSettings", ctx)
    generic, per_port = _settings(config, ctx)
    ports = _ports(config, network_settings, ctx)

    # A SERVICE_<port>_* setting for a port the container does not have is
    # silently unused in registrator; here it is a mistake worth a warning.
    numbers = {number for number, _ in ports}
    for head, chosen in per_port.items():
        if head not in numbers:
            for setting in chosen.values():
                ctx.problem(setting.origin,
                            f"names port {head}, which the container does not expose")

    if not ports:
        return _result(container_id, ctx, (), "no exposed port")

    # registrator (bridge.go, add): without -internal only published ports count,
    # and "several ports" (the -<port> suffix) is judged after that filter,
    # before ignored ports are dropped.
    published = settings.published
    served = [(spec, host_port) for spec, host_port in ports.items()
              if published is None or host_port]
    if not served:
        return _result(container_id, ctx, (), "no published port")
    group = len(served) > 1

    networks: dict[str, str] = {}
    if published is None:
        networks = _network_addresses(network_settings, ctx)
        if not networks:
            mode = _object(inspect, "HostConfig", ctx).get("NetworkMode")
            return _result(container_id, ctx, (), _no_address_reason(mode))

    health = _health(state, ctx)
    image = config.get("Image")
    if not isinstance(image, str):
        ctx.problem("Config.Image", f"{image!r} is not an image name")
        image = ""
    default_name = image_base_name(image)
    node = settings.node
    node_address = published or ""
    instances: list[Instance] = []
    seen_ids: dict[tuple[str, str], tuple[str, str]] = {}
    for (number, protocol), host_port in sorted(served, key=_port_order):
        if protocol not in _SERVED_PROTOCOLS:
            continue  # sctp: counted for the -<port> suffix as registrator does, not served
        from_port = per_port.get(number)
        chosen = generic if from_port is None else {**generic, **from_port}
        ignore = chosen.get("ignore")
        if ignore is not None and ignore.value:
            continue

        name_setting = chosen.get("name")
        if name_setting is not None and name_setting.value:
            service, name_origin = name_setting.value, name_setting.origin
        else:
            service, name_origin = default_name, "Config.Image"
        # The suffix applies to SERVICE_NAME too, never to SERVICE_<port>_NAME
        # (bridge.go: isgroup && !metadataFromPort["name"]).
        if group and (from_port is None or "name" not in from_port):
            service = f"{service}-{number}"
        if not is_label(service):
            ctx.problem(name_origin, f"service name {service!r} (port {number}/{protocol}) "
                        "is not a DNS label")
            continue

        if published is not None:
            if not _HOST_PORT.fullmatch(host_port) or not 1 <= int(host_port) <= 65535:
                ctx.problem(f"NetworkSettings.Ports[{number}/{protocol}]",
                            f"host port {host_port!r} is not a port")
                continue
            address, port = published, int(host_port)
        else:
            picked = _pick_address(networks, chosen.get("network"), settings.network, ctx)
            if picked is None:
                continue
            address, port = picked, int(number)

        tag_setting = chosen.get("tags")
        tags = _tags(tag_setting, protocol, ctx)

        # The default id is <hostname>:<container name>:<exposed port>[:udp]
        # (bridge.go, newService; docs/user/services.md "Unique ID"); dnsd's
        # node name plays registrator's host name.
        id_setting = chosen.get("id")
        if id_setting is not None and id_setting.value:
            instance_id = id_setting.value
        else:
            instance_id = f"{node}:{display}:{number}" + (":udp" if protocol == "udp" else "")

        meta: dict[str, str] = {}
        for key, setting in chosen.items():
            if key in _NOT_META:
                continue
            if not key:
                ctx.problem(setting.origin, "has no key after the port; ignored")
                continue
            meta[key] = setting.value

        try:
            instance = Instance(service=service, node=node, datacenter=settings.datacenter,
                                id=instance_id, address=address, node_address=node_address,
                                port=port, tags=tags, health=health, meta=meta)
        except ValueError as exc:  # the model's own checks; the rules above should prevent it
            ctx.problem(f"port {number}/{protocol}", str(exc))
            continue
        first = seen_ids.setdefault((service.lower(), instance_id), (number, protocol))
        if first != (number, protocol):
            # registrator would register both and the registry keep the last;
            # dnsd's table keeps the first instance of an id per service.
            origin = id_setting.origin if id_setting is not None else "Name"
            ctx.problem(origin, f"id {instance_id!r} of service {service!r} is also port "
                        f"{'/'.join(first)}'s; only one of them is answered")
        instances.append(instance)

    if instances:
        return _result(container_id, ctx, instances, "")
    return _result(container_id, ctx, instances, "every port is ignored or unusable")


def build_view(containers: Iterable[ContainerInstances]) -> View:
    """The source's whole view: every container's instances, in container-name
    order so that equal engine states give equal views."""
    ordered = sorted(containers, key=lambda c: (c.container, c.container_id))
    return View(tuple(instance for c in ordered for instance in c.instances))


def _result(container_id: str, ctx: _Context, instances: Iterable[Instance],
            reason: str) -> ContainerInstances:
    return ContainerInstances(container_id, ctx.container, tuple(instances),
                              tuple(ctx.problems), reason)


def _object(parent: Mapping[str, Any], key: str, ctx: _Context,
            path: str = "") -> Mapping[str, Any]:
    """``parent[key]`` when it is an object; {} (and a problem) when it is something else.

    null counts as empty: the engine writes it for an unset map (``Config.Labels``
    of a container without labels, an unpublished port's bindings)."""
    value = parent.get(key)
    if isinstance(value, dict):
        return value
    if value is not None:
        ctx.problem(f"{path}{key}", f"is {type(value).__name__}, not an object; ignored")
    return {}


def _settings(config: Mapping[str, Any], ctx: _Context) -> tuple[
        dict[str, _Setting], dict[str, dict[str, _Setting]]]:
    """The container's SERVICE_* settings, generic and per port.

    registrator (util.go, serviceMetaData) reads ``Config.Env`` first and then
    ``Config.Labels``, so a label wins over the variable of the same key; a
    SERVICE_<port>_<key> wins over SERVICE_<key> whatever their order. Keys
    are matched on the exact prefix ``SERVICE_`` and lower-cased after it; an
    environment entry without ``=`` is no setting.
    """
    generic: dict[str, _Setting] = {}
    per_port: dict[str, dict[str, _Setting]] = {}

    def add(key: str, value: str, origin: str) -> None:
        rest = key[len(_PREFIX):].lower()
        head, sep, tail = rest.partition("_")
        if sep and _PORT_KEY.fullmatch(head):
            per_port.setdefault(head, {})[tail] = _Setting(value, origin)
        else:
            generic[rest] = _Setting(value, origin)

    env = config.get("Env")
    if isinstance(env, list):
        for index, entry in enumerate(env):
            if not isinstance(entry, str):
                ctx.problem(f"Config.Env[{index}]", f"{entry!r} is not a string; ignored")
                continue
            if entry.startswith(_PREFIX):
                key, sep, value = entry.partition("=")
                if sep:
                    add(key, value, f"env {key}")
    elif env is not None:
        ctx.problem("Config.Env", f"is {type(env).__name__}, not a list; ignored")

    labels = _object(config, "Labels", ctx, "Config.")
    for key, value in labels.items():
        if not isinstance(key, str) or not key.startswith(_PREFIX):
            continue
        if not isinstance(value, str):
            ctx.problem(f"label {key}", f"{value!r} is not a string; ignored")
            continue
        add(key, value, f"label {key}")
    return generic, per_port


def _ports(config: Mapping[str, Any], network_settings: Mapping[str, Any],
           ctx: _Context) -> dict[tuple[str, str], str]:
    """(port, protocol) -> host port ('' when not published).

    registrator (bridge.go, add) takes ``Config.ExposedPorts`` as published on
    the same host port (what a ``--net=host`` container does), then lets
    ``NetworkSettings.Ports`` override them with the real bindings, the first
    binding of each (a ``-p 8080:80`` port has one for 0.0.0.0 and one for ::,
    both on 8080).
    """
    ports: dict[tuple[str, str], str] = {}
    for spec in _object(config, "ExposedPorts", ctx, "Config."):
        parsed = _port_spec(spec, "Config.ExposedPorts", ctx)
        if parsed is not None:
            ports[parsed] = parsed[0]
    for spec, bindings in _object(network_settings, "Ports", ctx, "NetworkSettings.").items():
        parsed = _port_spec(spec, "NetworkSettings.Ports", ctx)
        if parsed is None:
            continue
        host_port = ""
        if isinstance(bindings, list) and bindings:
            first = bindings[0]
            value = first.get("HostPort") if isinstance(first, dict) else None
            if isinstance(value, str):
                host_port = value
            else:
                ctx.problem(f"NetworkSettings.Ports[{spec}]",
                            f"binding {first!r} has no HostPort; taken as unpublished")
        elif bindings is not None and not isinstance(bindings, list):
            ctx.problem(f"NetworkSettings.Ports[{spec}]",
                        f"is {type(bindings).__name__}, not a list; taken as unpublished")
        ports[parsed] = host_port
    return ports


def _port_spec(spec: Any, source: str, ctx: _Context) -> tuple[str, str] | None:
    match = _PORT_SPEC.fullmatch(spec) if isinstance(spec, str) else None
    if match is None or not 1 <= int(match[1]) <= 65535:
        ctx.problem(source, f"{spec!r} is not a port; ignored")
        return None
    # str(int()) drops leading zeros, so "080/tcp" is the port SERVICE_80_* names.
    return str(int(match[1])), match[2] or "tcp"


def _port_order(item: tuple[tuple[str, str], str]) -> tuple[int, str]:
    (number, protocol), _ = item
    return int(number), protocol


def _network_addresses(network_settings: Mapping[str, Any], ctx: _Context) -> dict[str, str]:
    """Network name -> the container's address on it, for networks that gave one.

    IPv4 when the network has it, else the global IPv6 address. registrator
    reads only ``IPAddress``, so an IPv6-only network gave it no address.
    """
    addresses: dict[str, str] = {}
    networks = _object(network_settings, "Networks", ctx, "NetworkSettings.")
    for name, endpoint in networks.items():
        if not isinstance(endpoint, dict):
            ctx.problem(f"NetworkSettings.Networks.{name}",
                        f"is {type(endpoint).__name__}, not an object; ignored")
            continue
        for key in ("IPAddress", "GlobalIPv6Address"):
            text = endpoint.get(key)
            if not text:
                continue
            try:
                kind, address = classify_address(text) if isinstance(text, str) else (
                    AddressKind.NONE, "")
            except ValueError:
                kind = AddressKind.NONE
            if kind in (AddressKind.IPV4, AddressKind.IPV6):
                addresses[name] = address
                break
            ctx.problem(f"NetworkSettings.Networks.{name}.{key}",
                        f"{text!r} is not an IP address; ignored")
    return addresses


def _no_address_reason(mode: Any) -> str:
    if isinstance(mode, str) and mode.startswith("container:"):
        return f"no address of its own: it shares the network of {mode[len('container:'):][:12]}"
    if mode == "host":
        return "no address of its own on the host network (serve it with --docker-published)"
    return "no address on any network"


def _pick_address(networks: Mapping[str, str], wanted: _Setting | None,
                  preferred: str | None, ctx: _Context) -> str | None:
    """The address to serve a port at.

    ``SERVICE_NETWORK`` (or ``SERVICE_<port>_NETWORK``) names the network, and
    naming one the container has no address on is an error: serving another
    network's address would hand out one the user chose not to. Otherwise the
    preferred network, else the first network by name (registrator takes the
    default bridge's address, else whichever network Go's map order gives last).
    """
    if wanted is not None and wanted.value:
        address = networks.get(wanted.value)
        if address is None:
            ctx.problem(wanted.origin, f"the container has no address on network "
                        f"{wanted.value!r} (it has: {', '.join(sorted(networks)) or 'none'})")
        return address
    if preferred is not None:
        address = networks.get(preferred)
        if address is not None:
            return address
    return networks[min(networks)]


def _tags(setting: _Setting | None, protocol: str, ctx: _Context) -> tuple[str, ...]:
    """The port's tags, with ``udp`` added for a UDP port (bridge.go, newService).

    A tag that is not a DNS label (``v1.2``, ``a b``) could never match a
    ``<tag>.<name>.service`` or ``_<name>._<tag>`` query, so it is dropped
    with a warning instead of being served as a promise no lookup keeps.
    """
    # A dict keeps the written order and drops repeats in linear time: a
    # label may hold tens of thousands of tags.
    tags: dict[str, None] = {}
    if setting is not None:
        for tag in split_tags(setting.value):
            if not is_label(tag):
                ctx.problem(setting.origin, f"tag {tag!r} is not a DNS label; dropped")
            else:
                tags[tag] = None
    if protocol == "udp":
        tags["udp"] = None
    return tuple(tags)


def _health(state: Mapping[str, Any], ctx: _Context) -> Health:
    """A running container's health: critical while paused, restarting, or while
    its HEALTHCHECK says ``starting`` or ``unhealthy``; passing otherwise.

    registrator ignores health altogether; dnsd keeps such containers in its
    table but does not answer them, as it does Consul's critical instances.
    """
    if state.get("Paused") is True or state.get("Restarting") is True:
        return Health.CRITICAL
    health = state.get("Health")
    if health is None:
        return Health.PASSING  # no HEALTHCHECK
    if not isinstance(health, dict):
        ctx.problem("State.Health", f"is {type(health).__name__}, not an object; taken as "
                    "unhealthy")
        return Health.CRITICAL
    status = health.get("Status")
    if status in ("healthy", "none"):  # "none": a HEALTHCHECK turned off
        return Health.PASSING
    if status not in ("starting", "unhealthy"):
        ctx.problem("State.Health.Status", f"{status!r} is no health status; taken as unhealthy")
    return Health.CRITICAL
