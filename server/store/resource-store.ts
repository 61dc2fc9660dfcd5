/**
 * Versioned resource storage: current row + full history + search index rows, always inside the
 * caller's tenant transaction (so a failing write leaves nothing behind).
 */
import { randomUUID } from 'node:crypto';
import type { FhirResource as Resource } from 'fhir/r4';
import type { Knex } from 'knex';
import { singleStatement } from '../db/single-statement';
import type { Tx } from '../db/tenant-tx';
import { FhirError, gone, notFound, preconditionFailed } from '../fhir/errors';
import { bulkInsertCtes, extractIndexRows, IndexTable, indexCtes } from '../search/indexer';
import { openStored, sealForStorage, sealForStorageIn, type Sealed } from '../crypto/at-rest';

export interface StoredVersion {
  type: string;
  id: string;
  version: number;
  lastUpdated: Date;
  deleted: boolean;
  /** JSON text of the resource as stored (null for a deletion). */
  json: string | null;
}

export interface WriteResult extends StoredVersion {
  created: boolean;
  resource: Resource | null;
}

interface Row {
  res_type: string;
  id: string;
  version: number;
  last_updated: Date | string;
  deleted: boolean;
  json: string | null;
}

function toStored(r: Row): StoredVersion {
  return {
    type: r.res_type,
    id: r.id,
    version: r.version,
    lastUpdated: r.last_updated instanceof Date ? r.last_updated : new Date(r.last_updated),
    deleted: r.deleted,
    json: r.json,
  };
}

/** Timestamps strictly increase per resource even if two writes land in the same millisecond. */
function nextTimestamp(previous?: Date): Date {
  const now = new Date();
  if (previous && now.getTime() <= previous.getTime()) return new Date(previous.getTime() + 1);
  return now;
}

export function stamp(resource: Resource, id: string, version: number, at: Date): Resource {
  const meta = { ...(resource.meta ?? {}) };
  meta.versionId = String(version);
  meta.lastUpdated = at.toISOString();
  // Put id and meta first, as servers conventionally do; ignore any client-supplied values.
  const { resourceType, id: _ignored, meta: _m, ...rest } = resource as Resource & Record<string, unknown>;
  void _ignored;
  void _m;
  return { resourceType, id, meta, ...rest } as Resource;
}

export interface WriteOptions {
  /** Expected current version (If-Match). */
  ifMatch?: number;
  /** The base URL of this tenant, so absolute references to this server index like relative ones. */
  baseUrl?: string;
  method?: 'POST' | 'PUT' | 'PATCH';
  /** create only: use this (fresh, server-chosen) id instead of a new UUID. */
  id?: string;
}

export class ResourceStore {
  async read(tx: Tx, type: string, id: string): Promise<StoredVersion | undefined> {
    const rows = await tx.raw(
      `SELECT res_type, id, version, last_updated, deleted, content::text AS json
         FROM resources WHERE tenant_id = ? AND res_type = ? AND id = ?`,
      [tx.tenant, type, id],
    );
    const r = rows.rows[0] as Row | undefined;
    if (!r) return undefined;
    r.json = await openStored(tx, type, id, r.json);
    return toStored(r);
  }

  /** Read that maps "unknown" to 404 and "deleted" to 410. */
  async readCurrent(tx: Tx, type: string, id: string): Promise<StoredVersion> {
    const r = await this.read(tx, type, id);
    if (!r) throw notFound(`${type}/${id} is not known`);
    if (r.deleted) throw Object.assign(gone(`${type}/${id} was deleted`), {});
    return r;
  }

  async vread(tx: Tx, type: string, id: string, version: number): Promise<StoredVersion | undefined> {
    const rows = await tx.raw(
      `SELECT res_type, id, version, last_updated, deleted, content::text AS json
         FROM resource_history WHERE tenant_id = ? AND res_type = ? AND id = ? AND version = ?`,
      [tx.tenant, type, id, version],
    );
    const r = rows.rows[0] as Row | undefined;
    if (!r) return undefined;
    r.json = await openStored(tx, type, id, r.json);
    return toStored(r);
  }

  private async lockCurrent(tx: Tx, type: string, id: string): Promise<StoredVersion | undefined> {
    const rows = await tx.raw(
      `SELECT res_type, id, version, last_updated, deleted, NULL::text AS json
         FROM resources WHERE tenant_id = ? AND res_type = ? AND id = ? FOR UPDATE`,
      [tx.tenant, type, id],
    );
    const r = rows.rows[0] as Row | undefined;
    return r ? toStored(r) : undefined;
  }

  private async writeVersion(
    tx: Tx,
    resource: Resource,
    id: string,
    version: number,
    at: Date,
    method: string,
    isNew: boolean,
    baseUrl?: string,
  ): Promise<Resource> {
    const type = resource.resourceType;
    const stored = stamp(resource, id, version, at);
    const { json, blind } = await sealForStorage(tx, stored, JSON.stringify(stored));
    const current = isNew
      ? `INSERT INTO resources (tenant_id, res_type, id, version, last_updated, deleted, content)
           VALUES (?, ?, ?, ?, ?, false, ?::json)`
      : `UPDATE resources SET version = ?, last_updated = ?, deleted = false, content = ?::json
           WHERE tenant_id = ? AND res_type = ? AND id = ?`;
    const currentBindings = isNew ? [tx.tenant, type, id, version, at, json] : [version, at, json, tx.tenant, type, id];
    const idx = indexCtes(tx.tenant, type, id, extractIndexRows(stored, { baseUrl, blind }), !isNew);
    await tx.raw(
      `WITH cur AS (${current}),
       hist AS (INSERT INTO resource_history (tenant_id, res_type, id, version, last_updated, deleted, method, content)
                VALUES (?, ?, ?, ?, ?, false, ?, ?::json))
       ${idx.ctes.map((c) => ', ' + c).join('\n')}
       SELECT 1`,
      [...currentBindings, tx.tenant, type, id, version, at, method, json, ...idx.bindings],
    );
    return stored;
  }

  async create(tx: Tx, resource: Resource, opts: WriteOptions = {}): Promise<WriteResult> {
    const id = opts.id ?? randomUUID();
    const at = nextTimestamp();
    const stored = await this.writeVersion(tx, resource, id, 1, at, 'POST', true, opts.baseUrl);
    return result(stored, 1, at, true);
  }

  /**
   * A create outside any transaction in one round trip (fhir_create(), server/db/write-functions):
   * the same rows as create(), written by one statement that is its own transaction.
   */
  async createStandalone(db: Knex, tenant: string, resource: Resource, opts: WriteOptions = {}): Promise<WriteResult> {
    const id = randomUUID();
    const at = nextTimestamp();
    const stored = stamp(resource, id, 1, at);
    const { json, blind } = await sealForStorageIn(db, tenant, stored, JSON.stringify(stored));
    const index = extractIndexRows(stored, { baseUrl: opts.baseUrl, blind });
    await singleStatement(db, 'fhir_create', 'SELECT fhir_create($1, $2, $3, $4, $5, $6)', [
      tenant,
      stored.resourceType,
      id,
      at,
      json,
      JSON.stringify(index),
    ]);
    return result(stored, 1, at, true);
  }

  /**
   * Many creates in one statement (the plain POST entries of a transaction Bundle): the current
   * rows, history rows and index rows of all of them, in the caller's transaction.
   */
  async createMany(tx: Tx, items: Array<{ resource: Resource; id: string }>, opts: WriteOptions = {}): Promise<WriteResult[]> {
    if (!items.length) return [];
    const at = nextTimestamp();
    const stored = items.map((i) => stamp(i.resource, i.id, 1, at));
    const sealed: Sealed[] = [];
    for (const r of stored) sealed.push(await sealForStorage(tx, r, JSON.stringify(r)));
    const rowsByTable: Partial<Record<IndexTable, Array<Record<string, unknown>>>> = {};
    for (const [k, r] of stored.entries()) {
      const rows = extractIndexRows(r, { baseUrl: opts.baseUrl, blind: sealed[k].blind });
      for (const [table, list] of Object.entries(rows) as Array<[IndexTable, Array<Record<string, unknown>>]>) {
        const out = (rowsByTable[table] ??= []);
        for (const row of list) out.push({ ...row, res_type: r.resourceType, res_id: r.id });
      }
    }
    const idx = bulkInsertCtes(tx.tenant, rowsByTable);
    // One JSON document for all of them: parsed once by Postgres, and each `c` (type json) is the
    // resource's text exactly as serialised here (no text[] escaping, no second json parse).
    const src = '[' + stored.map((r, k) => `{"t":${JSON.stringify(r.resourceType)},"id":${JSON.stringify(r.id)},"c":${sealed[k].json}}`).join(',') + ']';
    await tx.raw(
      `WITH src AS (SELECT * FROM json_to_recordset(?::json) AS s(t text, id text, c json)),
       cur AS (INSERT INTO resources (tenant_id, res_type, id, version, last_updated, deleted, content)
               SELECT ?, t, id, 1, ?, false, c FROM src),
       hist AS (INSERT INTO resource_history (tenant_id, res_type, id, version, last_updated, deleted, method, content)
                SELECT ?, t, id, 1, ?, false, 'POST', c FROM src)
       ${idx.ctes.map((c) => ', ' + c).join('\n')}
       SELECT 1`,
      [
        src,
        tx.tenant,
        at,
        tx.tenant,
        at,
        ...idx.bindings,
      ],
    );
    return stored.map((r) => result(r, 1, at, true));
  }

  /** Update, or update-as-create when the id is new (or revives a deleted resource). */
  async update(tx: Tx, resource: Resource, id: string, opts: WriteOptions = {}): Promise<WriteResult> {
    const type = resource.resourceType;
    const current = await this.lockCurrent(tx, type, id);
    if (opts.ifMatch !== undefined) {
      if (!current || current.deleted) {
        throw preconditionFailed(`If-Match W/"${opts.ifMatch}" given but ${type}/${id} has no current version`);
      }
      if (current.version !== opts.ifMatch) {
        throw preconditionFailed(
          `Version conflict on ${type}/${id}: If-Match W/"${opts.ifMatch}" but the current version is W/"${current.version}"`,
        );
      }
    }
    const version = current ? current.version + 1 : 1;
    const at = nextTimestamp(current?.lastUpdated);
    const stored = await this.writeVersion(tx, resource, id, version, at, opts.method ?? 'PUT', !current, opts.baseUrl);
    return result(stored, version, at, !current || current.deleted);
  }

  /** Logical delete. Returns undefined when there was nothing (current) to delete. */
  async delete(tx: Tx, type: string, id: string, opts: { ifMatch?: number } = {}): Promise<WriteResult | undefined> {
    const current = await this.lockCurrent(tx, type, id);
    if (!current || current.deleted) return undefined;
    if (opts.ifMatch !== undefined && current.version !== opts.ifMatch) {
      throw preconditionFailed(`Version conflict on ${type}/${id}: current version is W/"${current.version}"`);
    }
    const version = current.version + 1;
    const at = nextTimestamp(current.lastUpdated);
    const idx = indexCtes(tx.tenant, type, id, null, true);
    await tx.raw(
      `WITH cur AS (
         UPDATE resources SET version = ?, last_updated = ?, deleted = true, content = NULL
          WHERE tenant_id = ? AND res_type = ? AND id = ?),
       hist AS (INSERT INTO resource_history (tenant_id, res_type, id, version, last_updated, deleted, method, content)
                VALUES (?, ?, ?, ?, ?, true, 'DELETE', NULL))
       ${idx.ctes.map((c) => ', ' + c).join('\n')}
       SELECT 1`,
      [version, at, tx.tenant, type, id, tx.tenant, type, id, version, at, ...idx.bindings],
    );
    return { type, id, version, lastUpdated: at, deleted: true, json: null, created: false, resource: null };
  }

  /** $restore: bring a deleted resource back as a new version with its last live content. */
  async restore(tx: Tx, type: string, id: string, opts: WriteOptions = {}): Promise<WriteResult> {
    const current = await this.lockCurrent(tx, type, id);
    if (!current) throw notFound(`${type}/${id} is not known`);
    if (!current.deleted) {
      throw FhirError.of(409, 'conflict', `${type}/${id} is not deleted; nothing to restore`);
    }
    const rows = await tx.raw(
      `SELECT content::text AS json FROM resource_history
        WHERE tenant_id = ? AND res_type = ? AND id = ? AND deleted = false
        ORDER BY version DESC LIMIT 1`,
      [tx.tenant, type, id],
    );
    const last = rows.rows[0] as { json: string } | undefined;
    if (!last) throw FhirError.of(409, 'conflict', `${type}/${id} has no earlier live version to restore`);
    last.json = await openStored(tx, type, id, last.json);
    const version = current.version + 1;
    const at = nextTimestamp(current.lastUpdated);
    const stored = await this.writeVersion(tx, JSON.parse(last.json), id, version, at, 'PUT', false, opts.baseUrl);
    return result(stored, version, at, false);
  }
}

function result(stored: Resource, version: number, at: Date, created: boolean): WriteResult {
  return {
    type: stored.resourceType,
    id: stored.id!,
    version,
    lastUpdated: at,
    deleted: false,
    json: null,
    created,
    resource: stored,
  };
}

export const store = new ResourceStore();
