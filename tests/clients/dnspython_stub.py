"""dnspython's stub resolver as a program: reads /etc/resolv.conf like any stub.

Usage: python dnspython_stub.py TYPE:NAME...
Prints one JSON object per line: {"type", "name", "records"} or {"type", "name",
"error"} where error is the exception class name (NXDOMAIN, NoAnswer, ...).
"""

import json
import sys

import dns.exception
import dns.resolver


def main(queries: list[str]) -> int:
    resolver = dns.resolver.Resolver()  # configured from /etc/resolv.conf
    resolver.lifetime = 5.0
    status = 0
    for query in queries:
        rdtype, _, name = query.partition(":")
        out: dict[str, object] = {"type": rdtype, "name": name}
        try:
            answer = resolver.resolve(name, rdtype, search=False)
            out["records"] = [rdata.to_text() for rdata in answer]
        except dns.exception.DNSException as exc:
            out["error"] = type(exc).__name__
            status = 1
        print(json.dumps(out), flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
