"""The Docker naming at scale: ``python -m tests.perf.docker_naming [--containers N]``.

Prints how long turning N containers' inspect data into one view takes (every
container named again, as after a reconnection's re-listing), and one
container alone (what an engine event costs). The containers are copies of the
real inspect data in tests/data/docker with their own names, ids, addresses
and labels, mixing one, two and three ports, labels and env, udp, health.

Imports: ``dnsd.sources.docker``.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dnsd.sources.docker import NamingSettings, build_view, container_instances

DATA = Path(__file__).resolve().parents[1] / "data" / "docker"
TEMPLATES = ["multi", "udp", "udponly", "twonet", "published", "health-healthy",
             "health-starting", "paused", "registry-image", "stopped"]


def containers(count: int) -> list[dict[str, Any]]:
    templates = [json.loads((DATA / f"{name}.json").read_text()) for name in TEMPLATES]
    made = []
    for n in range(count):
        data = copy.deepcopy(templates[n % len(templates)])
        data["Id"] = f"{n:064x}"
        data["Name"] = f"/app-{n}"
        labels = data["Config"].get("Labels") or {}
        labels["SERVICE_REGION"] = f"r{n % 7}"
        if n % 3 == 0:
            labels["SERVICE_TAGS"] = f"v{n % 5},blue"
        data["Config"]["Labels"] = labels
        for network in data["NetworkSettings"]["Networks"].values():
            if network.get("IPAddress"):
                network["IPAddress"] = f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"
        made.append(data)
    return made


def timed(fn: Callable[[], object], rounds: int) -> list[float]:
    times = []
    for _ in range(rounds):
        gc.collect()
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--containers", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    data = containers(args.containers)
    for label, settings in (
            ("own addresses", NamingSettings("host1", "dc1")),
            ("published", NamingSettings("host1", "dc1", published="192.0.2.10"))):
        def whole(settings: NamingSettings = settings) -> object:
            return build_view(container_instances(d, settings) for d in data)

        def single(settings: NamingSettings = settings) -> object:
            return container_instances(data[0], settings)

        view = build_view(container_instances(d, settings) for d in data)
        times = timed(whole, args.rounds)
        one = timed(single, args.rounds * 50)
        print(f"{label}: {args.containers} containers -> {len(view.instances)} instances: "
              f"view in {1e3 * min(times):.1f} ms (median {1e3 * statistics.median(times):.1f}); "
              f"one container {1e6 * statistics.median(one):.0f} us")


if __name__ == "__main__":
    main()
