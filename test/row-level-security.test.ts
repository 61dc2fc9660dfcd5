/** Postgres row-level security is the last line between tenants: prove it holds without app filters. */
import { startTestServer, TestServer, FHIR_JSON } from './helpers/test-server';
import { inTenant } from '../server/db/tenant-tx';

let s: TestServer;
let other: string;
beforeAll(async () => {
  s = await startTestServer();
  other = await s.newTenant();
  for (const t of [s.tenant, other]) {
    const r = await s.http.post(`/fhir/${t}/Patient`).set('Content-Type', FHIR_JSON).send({ resourceType: 'Patient', name: [{ family: `Rls-${t}` }] });
    expect(r.status).toBe(201);
  }
});
afterAll(async () => s.close());

test('the application role is neither superuser nor BYPASSRLS', async () => {
  const r = await s.db.app.raw(`SELECT current_user AS u, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user`);
  expect(r.rows[0]).toEqual({ u: 'fhir_app', rolsuper: false, rolbypassrls: false });
});

test('a query that forgets the tenant filter still sees only its own tenant', async () => {
  const rows = await inTenant(s.db.app, s.tenant, async (tx) => (await tx.raw(`SELECT DISTINCT tenant_id FROM resources`)).rows);
  expect(rows).toEqual([{ tenant_id: s.tenant }]);
  for (const table of ['resource_history', 'idx_string', 'idx_token', 'tenants']) {
    const seen = await inTenant(s.db.app, s.tenant, async (tx) => (await tx.raw(`SELECT DISTINCT tenant_id FROM ${table}`)).rows);
    expect(seen).toEqual([{ tenant_id: s.tenant }]);
  }
});

test('without a tenant set, nothing is visible at all', async () => {
  const r = await s.db.app.transaction(async (trx) => (await trx.raw(`SELECT count(*)::int AS n FROM resources`)).rows[0].n);
  expect(r).toBe(0);
});

test('writing a row for another tenant is refused by the policy', async () => {
  await expect(
    inTenant(s.db.app, s.tenant, (tx) =>
      tx.raw(`INSERT INTO resources (tenant_id, res_type, id, version, last_updated, content) VALUES (?, 'Patient', 'x', 1, now(), '{}')`, [other]),
    ),
  ).rejects.toThrow(/row-level security/);
});

test('the owner tables force RLS on every tenant table', async () => {
  const r = await s.db.owner.raw(
    `SELECT relname FROM pg_class WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace
       AND relname NOT LIKE 'knex_%' AND NOT (relrowsecurity AND relforcerowsecurity)`,
  );
  expect(r.rows).toEqual([]);
});

test('the single-statement read function is confined to the tenant it is given', async () => {
  const created = await s.http.post(`${s.base}/Patient`).set('Content-Type', FHIR_JSON).send({ resourceType: 'Patient', active: true });
  const id = created.body.id;
  const own = await s.db.app.raw(`SELECT version FROM fhir_read(?, 'Patient', ?)`, [s.tenant, id]);
  expect(own.rows).toEqual([{ version: 1 }]);
  const theirs = await s.db.app.raw(`SELECT version FROM fhir_read(?, 'Patient', ?)`, [other, id]);
  expect(theirs.rows).toEqual([]);
  // and the tenant setting does not outlive the statement
  const after = await s.db.app.transaction(async (trx) => (await trx.raw(`SELECT count(*)::int AS n FROM resources`)).rows[0].n);
  expect(after).toBe(0);
});

test('every table with a tenant_id has row-level security forced, and leaks nothing without a filter', async () => {
  // generated from the catalog, so tables added later (audit, sign-in, jobs) are covered too
  await s.audit.flush(); // the audit tables hold rows of both tenants by now
  const tables = (
    await s.db.owner.raw(
      `SELECT c.relname AS t, c.relrowsecurity AS rls, c.relforcerowsecurity AS forced
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relkind = 'r'
          AND EXISTS (SELECT 1 FROM information_schema.columns k WHERE k.table_schema = 'public' AND k.table_name = c.relname AND k.column_name = 'tenant_id')
        ORDER BY 1`,
    )
  ).rows as Array<{ t: string; rls: boolean; forced: boolean }>;
  expect(tables.map((x) => x.t)).toEqual(expect.arrayContaining(['resources', 'resource_history', 'tenants', 'audit_chain', 'audit_queue']));
  for (const { t, rls, forced } of tables) {
    expect([t, rls, forced]).toEqual([t, true, true]);
    const seen = await inTenant(s.db.app, s.tenant, async (tx) => (await tx.raw(`SELECT DISTINCT tenant_id FROM ${t}`)).rows.map((r: { tenant_id: string }) => r.tenant_id));
    expect([t, seen.filter((x: string) => x !== s.tenant)]).toEqual([t, []]);
  }
});
