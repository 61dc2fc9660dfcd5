/**
 * A real server (express app on an ephemeral port, real Postgres) with a fresh tenant per test
 * file, so test files never see each other's data.
 */
import { randomBytes } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import supertest from 'supertest';
import { loadConfig, Config } from '../../server/config';
import { openDatabase, Database } from '../../server/db/connection';
import { createApp } from '../../server/http/app';
import { ensureTenant, setTenantSettings } from '../../server/http/tenants';
import type { TenantSettings } from '../../server/fhir/types';
import { TEST_DATABASE_URL } from './db-url';

export interface TestServer {
  config: Config;
  db: Database;
  server: Server;
  url: string;
  tenant: string;
  /** FHIR base path of the test tenant, e.g. /fhir/t-ab12cd */
  base: string;
  /** Absolute FHIR base URL. */
  baseUrl: string;
  http: ReturnType<typeof supertest>;
  newTenant(settings?: TenantSettings): Promise<string>;
  setSettings(settings: TenantSettings, tenant?: string): Promise<void>;
  close(): Promise<void>;
}

export async function startTestServer(env: Record<string, string> = {}): Promise<TestServer> {
  const config = loadConfig({ ...process.env, DATABASE_URL: TEST_DATABASE_URL, PORT: '0', ...env });
  const db = await openDatabase(config, { migrate: false });
  const { app, tenants } = createApp({ config, db: db.app });
  const server: Server = await new Promise((resolve) => {
    const s = app.listen(0, '127.0.0.1', () => resolve(s));
  });
  const port = (server.address() as AddressInfo).port;
  const url = `http://127.0.0.1:${port}`;
  // The public URL must match the listening port for Location headers.
  config.publicUrl = url;
  const newTenant = async (settings: TenantSettings = {}) => {
    const id = `t-${randomBytes(5).toString('hex')}`;
    await ensureTenant(db.owner, id, `Test tenant ${id}`, settings);
    return id;
  };
  const tenant = await newTenant();
  return {
    config,
    db,
    server,
    url,
    tenant,
    base: `/fhir/${tenant}`,
    baseUrl: `${url}/fhir/${tenant}`,
    http: supertest(url),
    newTenant,
    async setSettings(settings, t = tenant) {
      await setTenantSettings(db.owner, t, settings);
      tenants.invalidate(t);
    },
    async close() {
      await new Promise((r) => server.close(r));
      await db.close();
    },
  };
}

export const FHIR_JSON = 'application/fhir+json';
