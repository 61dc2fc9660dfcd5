/**
 * Applies a token's Access (server/auth/access.ts) to FHIR interactions: 403 for what its scopes
 * and role do not allow, and for restricted grants (patient compartment, granular v2 scopes) the
 * SQL condition every search, include, read, history and write is confined to.
 * `ctx.access` undefined means an internal caller (demo loader, CLI through the store): no limits.
 */
import { registry } from '../../resources';
import type { Decision, Restriction } from '../auth/access';
import type { Op } from '../auth/scopes';
import type { Tx } from '../db/tenant-tx';
import type { SqlFragment } from '../search/query';
import { resolveConditions } from '../search/search';
import { AccessDenied } from './errors';
import type { TenantContext } from './types';

export type Granted = Decision & { allow: true };

/** Throws 403 unless the token may do `op` on `type`; returns the decision (undefined: no access control). */
export function permit(ctx: TenantContext, type: string, op: Op): Granted | undefined {
  if (!ctx.access) return undefined;
  const d = ctx.access.decide(type, op);
  if (!d.allow) throw AccessDenied.forbidden(d.reason);
  return d;
}

/** True when the decision limits which resources are reachable. */
export const restricted = (d: Granted | undefined): d is Granted & { all: false } => !!d && !d.all;

function compartmentSql(type: string, patient: string): SqlFragment {
  const params = (registry.get(type)?.patientCompartment ?? []).filter((p) => p !== '_id');
  const parts: string[] = [];
  const bindings: unknown[] = [];
  if (type === 'Patient') {
    parts.push('r.id = ?');
    bindings.push(patient);
  }
  if (params.length) {
    parts.push(
      `EXISTS (SELECT 1 FROM idx_reference c WHERE c.tenant_id = r.tenant_id AND c.res_type = r.res_type AND c.res_id = r.id
          AND c.param = ANY(?) AND c.target_type = 'Patient' AND c.target_id = ?)`,
    );
    bindings.push(params, patient);
  }
  if (!parts.length) return { sql: 'false', bindings: [] };
  return { sql: parts.map((p) => `(${p})`).join(' OR '), bindings };
}

async function alternativeSql(tx: Tx, ctx: TenantContext, type: string, r: Restriction): Promise<SqlFragment> {
  const parts: SqlFragment[] = [];
  if (r.patient) parts.push(compartmentSql(type, r.patient));
  if (r.query) {
    const { conds } = await resolveConditions(tx, type, r.query, ctx.baseUrl, false);
    parts.push(...conds);
  }
  if (!parts.length) return { sql: 'true', bindings: [] };
  return { sql: parts.map((p) => `(${p.sql})`).join(' AND '), bindings: parts.flatMap((p) => p.bindings) };
}

/** The WHERE condition (over `resources r`) a restricted decision confines `type` to. */
export async function restrictionSql(tx: Tx, ctx: TenantContext, type: string, d: Granted | undefined): Promise<SqlFragment | undefined> {
  if (!restricted(d)) return undefined;
  const alts = await Promise.all(d.alternatives.map((a) => alternativeSql(tx, ctx, type, a)));
  return { sql: alts.map((a) => `(${a.sql})`).join(' OR '), bindings: alts.flatMap((a) => a.bindings) };
}

/** The ids among `ids` (current, not deleted) the decision reaches. */
export async function visibleIds(tx: Tx, ctx: TenantContext, type: string, ids: string[], d: Granted | undefined): Promise<Set<string>> {
  if (!restricted(d) || !ids.length) return new Set(ids);
  const where = (await restrictionSql(tx, ctx, type, d))!;
  const rows = await tx.raw(
    `SELECT r.id FROM resources r WHERE r.tenant_id = ? AND r.res_type = ? AND r.id = ANY(?) AND (${where.sql})`,
    [tx.tenant, type, ids, ...where.bindings],
  );
  return new Set((rows.rows as Array<{ id: string }>).map((x) => x.id));
}

/** Throws a hidden-resource 404 unless the current version of type/id is reachable. */
export async function assertVisible(tx: Tx, ctx: TenantContext, type: string, id: string, d: Granted | undefined): Promise<void> {
  if (!restricted(d)) return;
  if (!(await visibleIds(tx, ctx, type, [id], d)).has(id)) throw AccessDenied.hidden(type, id);
}

/**
 * Before changing or deleting type/id: when the resource exists but lies outside what the
 * decision reaches, a hidden-resource 404 (one statement; nothing to check when it is new).
 */
export async function assertNotHidden(tx: Tx, ctx: TenantContext, type: string, id: string, d: Granted | undefined): Promise<void> {
  if (!restricted(d)) return;
  const where = (await restrictionSql(tx, ctx, type, d))!;
  const r = await tx.raw(
    `SELECT bool_or(true) AS found, bool_or(${where.sql}) AS visible FROM resources r WHERE r.tenant_id = ? AND r.res_type = ? AND r.id = ?`,
    [...where.bindings, tx.tenant, type, id],
  );
  const row = r.rows[0] as { found: boolean | null; visible: boolean | null };
  if (row.found && !row.visible) throw AccessDenied.hidden(type, id);
}

/** After a write inside its transaction: the written resource must still be reachable (else 403, rolled back). */
export async function assertWritable(tx: Tx, ctx: TenantContext, type: string, id: string, d: Granted | undefined): Promise<void> {
  if (!restricted(d)) return;
  if (!(await visibleIds(tx, ctx, type, [id], d)).has(id)) {
    throw AccessDenied.forbidden(
      d.alternatives.some((a) => a.patient)
        ? `The ${type} would be outside the compartment of Patient/${d.alternatives.find((a) => a.patient)!.patient}, which this token is confined to`
        : `The ${type} would not match the granular scope this token is confined to`,
    );
  }
}

/** 405 for interactions a type refuses (AuditEvent is append-only and server-written). */
export function assertInteraction(type: string, interaction: 'create' | 'update' | 'patch' | 'delete'): void {
  const def = registry.get(type);
  if (def && !def.interactions.includes(interaction)) {
    throw new AccessDenied(405, [{ severity: 'error', code: 'not-supported', diagnostics: `${type} resources cannot be ${interaction === 'patch' ? 'patched' : interaction + 'd'} through the API` }]);
  }
}
