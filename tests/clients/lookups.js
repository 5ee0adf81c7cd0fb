// A DNS client for the failover benchmark (scripts/failover.sh): Node's dns.Resolver, i.e.
// c-ares reading /etc/resolv.conf (not getaddrinfo), resolving COUNT names
// `<prefix><i>.<domain>` (A and AAAA at once, as getaddrinfo asks), RATE lookups per second,
// one at a time. Prints one line per lookup ("<ms> <rc> <name>", rc 0 when an address came
// back, 1 otherwise) and a summary ("max_ms=... over_ms=... slow=... total_ms=..."), like
// lookups.c. Node's default tries is 4 per server; the timeout comes from resolv.conf.
//
//   node lookups.js COUNT RATE PREFIX DOMAIN SLOW_MS
'use strict';
const { Resolver } = require('node:dns').promises;

async function main() {
  const args = process.argv.slice(2);
  if (args.length !== 5) {
    console.error('usage: node lookups.js COUNT RATE PREFIX DOMAIN SLOW_MS');
    process.exit(2);
  }
  const [count, rate, prefix, domain, slowMs] = [
    Number(args[0]), Number(args[1]), args[2], args[3], Number(args[4]),
  ];
  const r = new Resolver();
  const start = process.hrtime.bigint();
  const ms = (from) => Number(process.hrtime.bigint() - from) / 1e6;
  let max = 0;
  let slow = 0;
  for (let i = 0; i < count; i++) {
    const wait = (i * 1000) / rate - ms(start);
    if (wait > 0) await new Promise((ok) => setTimeout(ok, wait));
    const name = `${prefix}${i}.${domain}`;
    const t0 = process.hrtime.bigint();
    const [a, aaaa] = await Promise.allSettled([r.resolve4(name), r.resolve6(name)]);
    const took = ms(t0);
    const rc = a.status === 'fulfilled' || aaaa.status === 'fulfilled' ? 0 : 1;
    if (took > max) max = took;
    if (took > slowMs) slow++;
    console.log(`${took.toFixed(1)} ${rc} ${name}`);
  }
  console.log(`max_ms=${max.toFixed(1)} over_ms=${slowMs} slow=${slow} total_ms=${ms(start).toFixed(0)}`);
}

main();
