"""Before a registry source has served its first view, a name it could answer
is SERVFAIL, never an authoritative NXDOMAIN that resolvers would cache; names
the table holds (static files, a restored --state-dir) are answered at once."""

from __future__ import annotations

from pathlib import Path

import dns.flags
import dns.rcode

from tests.consul_double import ConsulDouble, register_web
from tests.integration.test_consul_e2e import answers, answers_are, ask, dnsd, until


async def test_unknown_names_are_servfail_until_consul_is_heard(tmp_path: Path) -> None:
    static = tmp_path / "services.toml"
    static.write_text('[[services]]\nname = "db"\naddress = "10.2.0.1"\nport = 5432\n')
    with ConsulDouble() as double:
        register_web(double)
        double.stop()
        async with dnsd("--consul", double.url, "--static", str(static)) as app:
            reply = await ask(app, "web.service.consul")
            assert reply.rcode() == dns.rcode.SERVFAIL and not reply.flags & dns.flags.AA
            assert (await ask(app, "node1.node.consul")).rcode() == dns.rcode.SERVFAIL
            # the static file's names are answered; a name that parses as nothing
            # is no registry's to know
            assert await answers(app, "db.service.consul") == {"10.2.0.1"}
            assert (await ask(app, "foo.consul")).rcode() == dns.rcode.NXDOMAIN
            double.start()
            await until(answers_are(app, "web.service.consul", {"10.0.0.1", "10.5.0.2"}))
            reply = await ask(app, "nope.service.consul")
            assert reply.rcode() == dns.rcode.NXDOMAIN and reply.flags & dns.flags.AA


async def test_a_restored_table_counts_as_heard(tmp_path: Path) -> None:
    state = str(tmp_path / "state")
    with ConsulDouble() as double:
        register_web(double)
        async with dnsd("--consul", double.url, "--state-dir", state) as app:
            await until(answers_are(app, "web.service.consul", {"10.0.0.1", "10.5.0.2"}))
            await until(lambda: app.saver is not None and app.saver.saves > 0)
        double.stop()
        async with dnsd("--consul", double.url, "--state-dir", state) as app:
            assert await answers(app, "web.service.consul") == {"10.0.0.1", "10.5.0.2"}
            assert (await ask(app, "nope.service.consul")).rcode() == dns.rcode.NXDOMAIN
