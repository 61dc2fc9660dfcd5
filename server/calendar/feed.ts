/**
 * Practitioners' calendar feeds: GET /calendar/{tenant}/{token}.ics serves an iCalendar
 * (RFC 5545, ical-generator) of the practitioner's booked appointments (as Practitioner or through
 * one of their PractitionerRoles). The secret token in the
 * URL is the only credential (calendar apps cannot send bearer tokens); only its SHA-256 is
 * stored (calendar_tokens), one per practitioner, replaced by
 * POST /fhir/{tenant}/Practitioner/{id}/$calendar-token (the practitioner themselves, an admin,
 * or a backend client that may update Practitioners). Every feed read leaves an AuditEvent.
 */
import { createHash, randomBytes } from 'node:crypto';
import express, { Request, Response } from 'express';
import ical, { ICalCalendarMethod, ICalEventStatus } from 'ical-generator';
import type { Appointment, HumanName, Location, Patient } from 'fhir/r4';
import type { Knex } from 'knex';
import type { AuditTrail } from '../audit/trail';
import { toAuditEvent } from '../audit/event';
import type { Config } from '../config';
import { inTenant, Tx } from '../db/tenant-tx';
import { AccessDenied, notFound } from '../fhir/errors';
import type { FhirRequest, FhirResponse, TenantContext, TenantSettings } from '../fhir/types';
import type { TenantDirectory } from '../http/tenants';
import { logger } from '../log';
import { store } from '../store/resource-store';
import { openRows } from '../crypto/at-rest';

const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');
const TOKEN = /^[A-Za-z0-9_-]{43}$/;
/** Appointment statuses shown in the feed (all CONFIRMED in iCalendar terms). */
const SHOWN = new Set(['booked', 'arrived', 'checked-in', 'fulfilled']);
/** Past appointments kept in the feed. */
const PAST_DAYS = 30;
const MAX_EVENTS = 2000;

export function calendarUrl(config: Config, tenant: string, token: string): string {
  return `${config.publicUrl}/calendar/${tenant}/${token}.ics`;
}

/** A new secret for the practitioner's feed; the previous one stops working. */
export async function issueCalendarToken(tx: Tx, practitionerId: string): Promise<string> {
  const token = randomBytes(32).toString('base64url');
  await tx.raw(
    `INSERT INTO calendar_tokens (tenant_id, practitioner_id, token_hash) VALUES (?, ?, ?)
     ON CONFLICT (tenant_id, practitioner_id) DO UPDATE SET token_hash = EXCLUDED.token_hash, created_at = now()`,
    [tx.tenant, practitionerId, sha256(token)],
  );
  return token;
}

/** POST [base]/Practitioner/{id}/$calendar-token: issues (rotates) the feed URL. */
export async function calendarTokenOperation(ctx: TenantContext, req: FhirRequest, id: string): Promise<FhirResponse> {
  void req;
  const a = ctx.access;
  if (a) {
    const self = a.fhirUser === `Practitioner/${id}`;
    const backend = !a.role && a.decide('Practitioner', 'u').allow;
    if (!(self || a.role === 'admin' || backend)) {
      throw AccessDenied.forbidden(`Only Practitioner/${id} themselves or an administrator may issue this calendar feed URL`);
    }
  }
  const work = async (tx: Tx) => {
    const p = await store.read(tx, 'Practitioner', id);
    if (!p || p.deleted) throw notFound(`Practitioner/${id} is not known`);
    return issueCalendarToken(tx, id);
  };
  const token = ctx.tx ? await work(ctx.tx) : await inTenant(ctx.db, ctx.tenant, work);
  return {
    status: 200,
    headers: { 'Cache-Control': 'no-store' },
    body: {
      resourceType: 'Parameters',
      parameter: [
        { name: 'url', valueUrl: calendarUrl(ctx.config, ctx.tenant, token) },
        { name: 'token', valueString: token },
      ],
    },
  };
}

function initials(n: HumanName | undefined): string {
  if (!n) return '';
  const parts = [...(n.given ?? []).slice(0, 1), n.family].filter((x): x is string => !!x);
  if (!parts.length && n.text) parts.push(...n.text.split(/\s+/).filter(Boolean).slice(0, 2));
  return parts.map((p) => `${[...p.trim()][0]?.toUpperCase() ?? ''}.`).join('');
}

function fullName(n: HumanName | undefined): string {
  if (!n) return '';
  return n.text ?? [...(n.given ?? []), n.family].filter(Boolean).join(' ');
}

export function patientLabel(p: Patient | undefined, mode: TenantSettings['calendarPatientNames']): string {
  if (mode === 'none' || !p) return '';
  const name = p.name?.find((n) => n.use === 'official') ?? p.name?.[0];
  return mode === 'full' ? fullName(name) : initials(name);
}

const refId = (ref: string | undefined, type: string) => (ref ? new RegExp(`(?:^|/)${type}/([A-Za-z0-9\\-.]{1,64})$`).exec(ref)?.[1] : undefined);

async function readMany<T>(tx: Tx, type: string, ids: string[]): Promise<Map<string, T>> {
  if (!ids.length) return new Map();
  const r = await tx.raw(`SELECT id, content::text AS json FROM resources WHERE tenant_id = ? AND res_type = ? AND id = ANY(?::text[]) AND deleted = false`, [tx.tenant, type, ids]);
  const rows = await openRows(tx, r.rows as Array<{ id: string; json: string }>, () => type, (x) => x.id);
  return new Map(rows.map((x) => [x.id, JSON.parse(x.json) as T]));
}

export interface Feed {
  ics: string;
  appointments: string[];
  patients: string[];
}

/** The iCalendar text of a practitioner's feed. */
export async function buildFeed(tx: Tx, config: Config, practitionerId: string, settings: TenantSettings, now = new Date()): Promise<Feed> {
  // The practitioner's own PractitionerRoles count too (scheduling often books the role).
  const roles = await tx.raw(
    `SELECT i.res_id AS id FROM idx_reference i JOIN resources r ON r.tenant_id = i.tenant_id AND r.res_type = i.res_type AND r.id = i.res_id
      WHERE i.tenant_id = ? AND i.res_type = 'PractitionerRole' AND i.param = 'practitioner' AND i.target_type = 'Practitioner' AND i.target_id = ? AND r.deleted = false`,
    [tx.tenant, practitionerId],
  );
  const roleIds = new Set((roles.rows as Array<{ id: string }>).map((x) => x.id));
  const r = await tx.raw(
    `SELECT r.id, r.version, r.last_updated, r.content::text AS json FROM resources r
      WHERE r.tenant_id = ? AND r.res_type = 'Appointment' AND r.deleted = false
        AND r.id IN (SELECT i.res_id FROM idx_reference i WHERE i.tenant_id = ? AND i.res_type = 'Appointment' AND i.param = 'actor'
                      AND ((i.target_type = 'Practitioner' AND i.target_id = ?) OR (i.target_type = 'PractitionerRole' AND i.target_id = ANY(?::text[]))))`,
    [tx.tenant, tx.tenant, practitionerId, [...roleIds]],
  );
  const mine = (ref: string | undefined) => refId(ref, 'Practitioner') === practitionerId || roleIds.has(refId(ref, 'PractitionerRole') ?? '');
  const since = now.getTime() - PAST_DAYS * 86_400_000;
  const rows = (await openRows(tx, r.rows as Array<{ id: string; version: number; last_updated: Date | string; json: string }>, () => 'Appointment', (x) => x.id))
    .map((x) => ({ ...x, a: JSON.parse(x.json) as Appointment }))
    .filter((x) => SHOWN.has(x.a.status) && x.a.start && x.a.end && Date.parse(x.a.end) >= since)
    .filter((x) => x.a.participant?.some((p) => mine(p.actor?.reference) && p.status !== 'declined'))
    .sort((x, y) => Date.parse(x.a.start!) - Date.parse(y.a.start!))
    .slice(0, MAX_EVENTS);
  const mode = settings.calendarPatientNames ?? 'initials';
  const patientIds = [...new Set(rows.flatMap((x) => (x.a.participant ?? []).map((p) => refId(p.actor?.reference, 'Patient')).filter((id): id is string => !!id)))];
  const locationIds = [...new Set(rows.flatMap((x) => (x.a.participant ?? []).map((p) => refId(p.actor?.reference, 'Location')).filter((id): id is string => !!id)))];
  const patients = mode === 'none' ? new Map<string, Patient>() : await readMany<Patient>(tx, 'Patient', patientIds);
  const locations = await readMany<Location>(tx, 'Location', locationIds);
  const host = new URL(config.publicUrl).hostname || 'localhost';
  const cal = ical({
    prodId: { company: 'fhir-practice-server', product: 'Calendar feed', language: 'EN' },
    method: ICalCalendarMethod.PUBLISH,
    name: 'Appointments',
  });
  for (const { id, version, last_updated, a } of rows) {
    const names = (a.participant ?? [])
      .map((p) => refId(p.actor?.reference, 'Patient'))
      .filter((pid): pid is string => !!pid)
      .map((pid) => patientLabel(patients.get(pid), mode))
      .filter(Boolean);
    const loc = (a.participant ?? []).map((p) => locations.get(refId(p.actor?.reference, 'Location') ?? '')?.name).find(Boolean);
    cal.createEvent({
      id: `appointment-${id}@${host}`,
      start: new Date(a.start!),
      end: new Date(a.end!),
      stamp: new Date(last_updated),
      sequence: version - 1,
      status: ICalEventStatus.CONFIRMED,
      summary: names.length ? `Appointment: ${names.join(', ')}` : 'Appointment',
      ...(loc ? { location: loc } : {}),
    });
  }
  // RFC 5545: every content line ends with CRLF, the last one too (ical-generator omits that one).
  const text = cal.toString();
  return { ics: text.endsWith('\r\n') ? text : `${text}\r\n`, appointments: rows.map((x) => x.id), patients: patientIds };
}

export function calendarRouter(deps: { config: Config; db: Knex; tenants: TenantDirectory; audit: AuditTrail }): express.Router {
  const router = express.Router();
  router.get('/:tenant/:file', async (req: Request<{ tenant: string; file: string }>, res: Response) => {
    res.locals.route = '/calendar/:tenant/:token.ics';
    res.setHeader('Cache-Control', 'no-store');
    res.setHeader('Referrer-Policy', 'no-referrer');
    const notFoundText = () => res.status(404).type('text/plain').send('No calendar here.\n');
    try {
      const t = await deps.tenants.get(req.params.tenant);
      const token = /^(.*)\.ics$/.exec(req.params.file)?.[1] ?? '';
      if (!t) return notFoundText();
      res.locals.tenant = t.id;
      const found = TOKEN.test(token)
        ? await inTenant(deps.db, t.id, async (tx) => {
            const r = await tx.raw(`SELECT practitioner_id FROM calendar_tokens WHERE tenant_id = ? AND token_hash = ?`, [t.id, sha256(token)]);
            const pid = r.rows[0]?.practitioner_id as string | undefined;
            return pid ? { pid, feed: await buildFeed(tx, deps.config, pid, t.settings) } : undefined;
          })
        : undefined;
      const recorded = new Date().toISOString();
      if (!found) {
        deps.audit.record(
          t.id,
          toAuditEvent({ tenant: t.id, action: 'R', subtype: 'calendar-feed', kind: 'security', status: 404, outcomeText: 'calendar feed with an unknown token', who: {}, ip: req.ip, entities: [], patients: [], recorded }),
        );
        return notFoundText();
      }
      const { pid, feed } = found;
      deps.audit.record(
        t.id,
        toAuditEvent({
          tenant: t.id,
          action: 'R',
          subtype: 'search-type',
          kind: 'rest',
          status: 200,
          outcomeText: `calendar feed of Practitioner/${pid} (${feed.appointments.length} appointments)`,
          who: { fhirUser: `Practitioner/${pid}`, clientId: 'calendar-feed' },
          ip: req.ip,
          entities: [`Practitioner/${pid}`, ...feed.appointments.slice(0, 199).map((id) => `Appointment/${id}`)],
          patients: feed.patients,
          query: `GET /calendar/${t.id}/<token>.ics`,
          recorded,
        }),
      );
      res.status(200).type('text/calendar; charset=utf-8').send(feed.ics);
    } catch (e) {
      logger.error({ err: { message: (e as Error).message } }, 'calendar feed failed');
      res.status(500).type('text/plain').send('The calendar could not be built.\n');
    }
  });
  return router;
}
