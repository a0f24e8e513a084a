// c-ares (Node.js's dns.promises.Resolver) asking one DNS server directly.
//
// Usage: node cares_resolve.js SERVER[:PORT] TYPE:NAME...   (TYPE is A or SRV)
// Prints one JSON object per line: {"type","name","records"} on success or
// {"type","name","code"} on failure (ENOTFOUND is NXDOMAIN, ENODATA is NODATA).
'use strict';
const { Resolver } = require('node:dns').promises;

async function main() {
  const [server, ...queries] = process.argv.slice(2);
  // timeout/tries: fail within a few seconds instead of c-ares's default 4x5s.
  const resolver = new Resolver({ timeout: 2000, tries: 2 });
  resolver.setServers([server]);
  for (const query of queries) {
    const at = query.indexOf(':');
    const type = query.slice(0, at).toUpperCase();
    const name = query.slice(at + 1);
    try {
      let records;
      if (type === 'A') {
        records = await resolver.resolve4(name);
      } else if (type === 'SRV') {
        records = (await resolver.resolveSrv(name)).map(
          (r) => `${r.priority} ${r.weight} ${r.port} ${r.name}`);
      } else {
        throw Object.assign(new Error(`unknown type ${type}`), { code: 'EBADTYPE' });
      }
      console.log(JSON.stringify({ type, name, records }));
    } catch (err) {
      console.log(JSON.stringify({ type, name, code: err.code || String(err) }));
    }
  }
}

main().catch((err) => { console.error(err); process.exit(2); });
