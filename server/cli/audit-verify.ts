/**
 * npm run audit:verify -- [--tenant <slug>] [--json]
 * Verifies every tenant's (or one tenant's) audit hash chain; exits 1 at any break.
 */
import { loadConfig } from '../config';
import { openDatabase } from '../db/connection';
import { verifyChain, ChainReport } from '../audit/verify';

const HELP = `Usage: npm run audit:verify -- [--tenant <slug>] [--json]

Checks the tamper-evident audit trail: each AuditEvent is a link of its tenant's hash chain
(sha256 over the previous link, its position, its id and its stored JSON). Reports, per tenant,
the number of links, the head hash (keep a copy elsewhere to detect a chain rewritten from
scratch), events still queued, AuditEvents outside the chain, and the FIRST break: a changed,
removed or reordered event. Exits 1 if any tenant has a break or unchained events, 0 otherwise.

Reads DATABASE_URL (or the embedded database in DATA_DIR, which must not be in use by a server).`;

async function main(): Promise<void> {
  const argv = process.argv.slice(2).filter((a) => a !== '--');
  if (argv.includes('-h') || argv.includes('--help')) {
    console.log(HELP);
    return;
  }
  const i = argv.indexOf('--tenant');
  const only = i >= 0 ? argv[i + 1] : undefined;
  if (i >= 0 && !only) throw new Error('--tenant needs a value');
  const json = argv.includes('--json');
  const config = loadConfig();
  const db = await openDatabase(config, { migrate: false });
  let bad = false;
  try {
    const tenants = only ? [only] : ((await db.owner.raw(`SELECT tenant_id FROM tenants ORDER BY tenant_id`)).rows as Array<{ tenant_id: string }>).map((r) => r.tenant_id);
    const reports: ChainReport[] = [];
    for (const t of tenants) {
      const r = await verifyChain(db.app, t);
      reports.push(r);
      if (r.firstBreak || r.unchained) bad = true;
      if (!json) {
        const state = r.firstBreak ? `BROKEN at link ${r.firstBreak.seq} (${r.firstBreak.auditEvent}): ${r.firstBreak.reason}` : r.unchained ? `${r.unchained} AuditEvent(s) outside the chain` : 'ok';
        console.log(`${t}: ${r.links} links, head ${r.head.slice(0, 16)}…, ${r.queued} queued — ${state}`);
      }
    }
    if (json) console.log(JSON.stringify(reports, null, 2));
  } finally {
    await db.close();
  }
  process.exit(bad ? 1 : 0);
}

main().catch((e) => {
  console.error(`audit:verify: ${(e as Error).message}`);
  process.exit(2);
});
