/**
 * npm run keys:rotate -- <tenant> | --all [--json]
 * Re-wraps a tenant's keys under the current master key and makes a new data key the active one.
 */
import { loadConfig } from '../config';
import { configureEncryption, rotateTenantKeys, RotationResult } from '../crypto/keyring';
import { openDatabase } from '../db/connection';
import { cliAudit } from '../audit/cli-audit';

const HELP = `Usage: npm run keys:rotate -- <tenant> | --all [--json]

Key rotation for encryption at rest, while the server keeps running:
  - every key of the tenant (its data keys and its blind-index key) is unwrapped and wrapped again
    under the CURRENT master key (MASTER_KEY, or the file MASTER_KEY_FILE, default
    DATA_DIR/secrets/master-key);
  - a new data key becomes the active one: new writes use it; what older data keys encrypted
    stays readable with them (they are kept, never deleted).
Running servers pick up the new keys within a minute (or at once when they meet a newer key).

Master key rotation: set the new key as MASTER_KEY and the old one in MASTER_KEY_PREVIOUS (for
this command and the servers), run keys:rotate -- --all, then remove MASTER_KEY_PREVIOUS.

Reads DATABASE_URL (or the embedded database in DATA_DIR, which must not be in use by a server).`;

async function main(): Promise<void> {
  const argv = process.argv.slice(2).filter((a) => a !== '--');
  if (argv.includes('-h') || argv.includes('--help') || !argv.length) {
    console.log(HELP);
    if (!argv.length) process.exitCode = 2;
    return;
  }
  const json = argv.includes('--json');
  const all = argv.includes('--all');
  const named = argv.filter((a) => !a.startsWith('--'));
  if (!all && named.length !== 1) throw new Error('give one tenant, or --all');
  const config = loadConfig();
  configureEncryption(config);
  const db = await openDatabase(config, { migrate: false });
  const audit = cliAudit(db.app, 'npm run keys:rotate');
  try {
    const tenants = all
      ? ((await db.owner.raw(`SELECT tenant_id FROM tenants ORDER BY tenant_id`)).rows as Array<{ tenant_id: string }>).map((r) => r.tenant_id)
      : named;
    if (!all) {
      const known = await db.owner.raw(`SELECT 1 FROM tenants WHERE tenant_id = ?`, [named[0]]);
      if (!known.rows.length) throw new Error(`no tenant "${named[0]}"`);
    }
    const results: RotationResult[] = [];
    for (const t of tenants) {
      const r = await rotateTenantKeys(db.app, t);
      results.push(r);
      audit.action(t, `data key v${r.activeVersion} active; ${r.rewrapped} key(s) re-wrapped under master key ${r.masterKeyId}`);
      if (!json) console.log(`${t}: data key v${r.activeVersion} active; ${r.rewrapped} key(s) re-wrapped under master key ${r.masterKeyId}`);
    }
    if (json) console.log(JSON.stringify(results, null, 2));
  } finally {
    await audit.close();
    await db.close();
  }
}

main().catch((e) => {
  console.error(`keys:rotate: ${(e as Error).message}`);
  process.exit(1);
});
