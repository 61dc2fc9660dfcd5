/**
 * The claim link of a waitlist offer: GET /waitlist/{tenant}/offers/{token} shows the offered
 * time with a "Book this time" button (GET never books: mail scanners prefetch links); POST books
 * it. The token (256 random bits) is the credential; only its SHA-256 is stored, it is looked up
 * by that hash (nothing to compare character by character) and never logged (the access log has
 * the route template only). Requests are rate-limited per IP. Every claim leaves an AuditEvent.
 */
import express, { Request, Response } from 'express';
import type { Appointment, AppointmentParticipant, Patient, Practitioner, Slot } from 'fhir/r4';
import type { Knex } from 'knex';
import type { AuditTrail } from '../audit/trail';
import { toAuditEvent } from '../audit/event';
import type { Config } from '../config';
import { inTenant, Tx } from '../db/tenant-tx';
import { FhirError } from '../fhir/errors';
import type { TenantContext } from '../fhir/types';
import type { TenantDirectory } from '../http/tenants';
import type { RateLimits } from '../http/rate-limit';
import { patientZone } from '../jobs/appointment-notices';
import { formatInZone } from '../jobs/zoned-time';
import { logger } from '../log';
import { store } from '../store/resource-store';
import { bookInTransaction, booking } from './book';
import { schedulingSettings, tooSoonMessage } from './settings';
import { setSlotStatus } from './slots';
import { CLAIM_TOKEN, endOffer, sha256 } from './waitlist';

/** Claim-page requests per IP per 10 minutes. */
export const CLAIM_REQUESTS_PER_10_MINUTES = 60;

interface OfferRow {
  id: string;
  entry_id: string;
  slot_id: string;
  patient_id: string;
  status: string;
  expires_at: Date;
}

const esc = (s: string) => s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);

function page(title: string, body: string): string {
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><meta name="robots" content="noindex">
<title>${esc(title)}</title><style>body{font-family:system-ui,sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem;line-height:1.5}button{font-size:1.1rem;padding:.6rem 1.4rem}</style></head>
<body><h1>${esc(title)}</h1>${body}</body></html>`;
}

class PageError extends Error {
  constructor(
    readonly status: number,
    readonly title: string,
    readonly text: string,
    /** An unknown token: recorded as a security event. */
    readonly unknownToken = false,
  ) {
    super(title);
  }
}

const gone = (text: string) => new PageError(410, 'This offer is no longer available', text);
const unknown = () => new PageError(404, 'Offer not found', 'This link is not valid. Please check that you copied the whole link from the email.');

async function read<T>(tx: Tx, type: string, id: string): Promise<T | undefined> {
  const v = await store.read(tx, type, id);
  return v && !v.deleted && v.json ? (JSON.parse(v.json) as T) : undefined;
}

function personName(r: Practitioner | undefined): string | undefined {
  const n = r?.name?.[0];
  if (!n) return undefined;
  return n.text ?? ([...(n.prefix ?? []), ...(n.given ?? []), n.family].filter(Boolean).join(' ') || undefined);
}

interface Offered {
  offer: OfferRow;
  entry: Appointment;
  slot: Slot;
  practitioner?: string;
  practitionerName?: string;
  when: string;
  until: string;
}

/** The offer behind a token with what the page shows; a PageError when it cannot be claimed. */
async function load(tx: Tx, ctx: TenantContext, token: string, lock: boolean): Promise<Offered> {
  const offer = (
    await tx.raw(`SELECT id, entry_id, slot_id, patient_id, status, expires_at FROM waitlist_offers WHERE tenant_id = ? AND token_hash = ?${lock ? ' FOR UPDATE' : ''}`, [
      tx.tenant,
      sha256(token),
    ])
  ).rows[0] as OfferRow | undefined;
  if (!offer) throw new PageError(404, 'Offer not found', 'This link is not valid. Please check that you copied the whole link from the email.', true);
  if (offer.status === 'claimed') throw gone('This time has already been booked with this link. Your booking confirmation is on its way by email.');
  if (offer.status !== 'open' || new Date(offer.expires_at).getTime() <= Date.now()) {
    throw gone('The time offered to you was held until the offer ran out and has now been offered to the next person on the waiting list. You stay on the waiting list if your requested range has not ended.');
  }
  const entry = await read<Appointment>(tx, 'Appointment', offer.entry_id);
  if (!entry || entry.status !== 'waitlist') throw gone('Your waiting-list entry is no longer active.');
  const slot = await read<Slot>(tx, 'Slot', offer.slot_id);
  if (!slot) throw gone('This time is no longer available.');
  const s = schedulingSettings(ctx.settings);
  if (Date.parse(slot.start) < Date.now() + s.leadTimeMinutes * 60_000) throw gone(tooSoonMessage(s));
  const practitioner = ((await tx.raw(`SELECT practitioner FROM sched_slot WHERE tenant_id = ? AND slot_id = ?`, [tx.tenant, slot.id])).rows[0] as { practitioner: string | null } | undefined)
    ?.practitioner ?? undefined;
  const practitionerName = practitioner ? personName(await read<Practitioner>(tx, 'Practitioner', practitioner.slice('Practitioner/'.length))) : undefined;
  const patient = await read<Patient>(tx, 'Patient', offer.patient_id);
  const zone = patient ? patientZone(patient, ctx.settings) : schedulingSettings(ctx.settings).timeZone;
  return { offer, entry, slot, practitioner, practitionerName, when: formatInZone(new Date(slot.start), zone), until: formatInZone(new Date(offer.expires_at), zone) };
}

/** Books the offered Slot for the entry's patient: the entry itself becomes the booking (IHE option A), through $book's booking step. */
async function claim(tx: Tx, ctx: TenantContext, o: Offered): Promise<Appointment> {
  await endOffer(tx, ctx, o.offer.id, 'claimed');
  await setSlotStatus(tx, ctx, o.slot.id!, 'free'); // the hold ends; the booking takes the Slot under the constraints
  const participants: AppointmentParticipant[] = [...(o.entry.participant ?? [])];
  if (o.practitioner && !participants.some((p) => p.actor?.reference?.endsWith(o.practitioner!))) {
    participants.push({ actor: { reference: o.practitioner }, required: 'required', status: 'accepted' });
  }
  const proposal: Appointment = {
    ...o.entry,
    start: o.slot.start,
    end: o.slot.end,
    minutesDuration: Math.round((Date.parse(o.slot.end) - Date.parse(o.slot.start)) / 60_000),
    slot: [{ reference: `Slot/${o.slot.id}` }],
    participant: participants,
  };
  const appt = booking(ctx, proposal, `Patient/${o.offer.patient_id}`);
  const w = await bookInTransaction(tx, ctx, appt, o.entry.id);
  return w.resource as Appointment;
}

export function waitlistRouter(deps: { config: Config; db: Knex; tenants: TenantDirectory; audit: AuditTrail; limits: RateLimits }): express.Router {
  const router = express.Router();
  const handle = (post: boolean) => async (req: Request<{ tenant: string; token: string }>, res: Response) => {
    res.locals.route = '/waitlist/:tenant/offers/:token';
    res.setHeader('Cache-Control', 'no-store');
    res.setHeader('Referrer-Policy', 'no-referrer');
    res.setHeader('X-Robots-Tag', 'noindex');
    const send = (status: number, title: string, body: string) => res.status(status).type('text/html; charset=utf-8').send(page(title, body));
    const fail = (e: PageError) => send(e.status, e.title, `<p>${esc(e.text)}</p>`);
    let tenantId: string | undefined;
    try {
      const t = await deps.tenants.get(req.params.tenant);
      if (!t) return fail(unknown());
      const wait = await deps.limits.hit('waitlist-claim', `${t.id}:${req.ip ?? 'unknown'}`, CLAIM_REQUESTS_PER_10_MINUTES, 600);
      if (wait !== undefined) {
        res.setHeader('Retry-After', String(wait));
        return fail(new PageError(429, 'Too many requests', `Please try again in ${wait} seconds.`));
      }
      const token = req.params.token;
      if (!CLAIM_TOKEN.test(token)) return fail(unknown());
      res.locals.tenant = t.id;
      tenantId = t.id;
      const ctx: TenantContext = {
        tenant: t.id,
        baseUrl: `${deps.config.publicUrl}/fhir/${t.id}`,
        config: deps.config,
        db: deps.db,
        settings: t.settings,
        operation: 'waitlist-claim',
      };
      const practice = t.name || 'The practice';
      if (!post) {
        const o = await inTenant(deps.db, t.id, (tx) => load(tx, ctx, token, false));
        return send(
          200,
          'A time has become available',
          `<p>${esc(practice)} can offer you this appointment from the waiting list:</p>
<p><strong>${esc(o.when)}</strong>${o.practitionerName ? `<br>with ${esc(o.practitionerName)}` : ''}</p>
<p>It is held for you until ${esc(o.until)}.</p>
<form method="post"><button type="submit">Book this time</button></form>`,
        );
      }
      let booked: { a: Appointment; o: Offered };
      try {
        booked = await inTenant(deps.db, t.id, async (tx) => {
          const o = await load(tx, { ...ctx, tx }, token, true);
          return { a: await claim(tx, { ...ctx, tx }, o), o };
        });
      } catch (e) {
        if (e instanceof FhirError) {
          deps.audit.record(
            t.id,
            toAuditEvent({ tenant: t.id, action: 'C', subtype: 'waitlist-claim', kind: 'rest', status: e.status, outcomeText: 'waitlist claim refused', who: { clientId: 'waitlist-claim' }, ip: req.ip, entities: [], patients: [], recorded: new Date().toISOString() }),
          );
          return fail(new PageError(e.status === 409 ? 409 : 410, 'This time could not be booked', e.status === 409 ? 'Someone else has just booked this time. You stay on the waiting list.' : e.message));
        }
        throw e;
      }
      const { a, o } = booked;
      deps.audit.record(
        t.id,
        toAuditEvent({
          tenant: t.id,
          action: 'U',
          subtype: 'waitlist-claim',
          kind: 'rest',
          status: 200,
          outcomeText: `waitlist offer ${o.offer.id} claimed: Appointment/${a.id} booked`,
          who: { fhirUser: `Patient/${o.offer.patient_id}`, clientId: 'waitlist-claim' },
          ip: req.ip,
          entities: [`Appointment/${a.id}`, `Slot/${o.slot.id}`],
          patients: [o.offer.patient_id],
          query: `POST /waitlist/${t.id}/offers/<token>`,
          recorded: new Date().toISOString(),
        }),
      );
      return send(200, 'Your appointment is booked', `<p><strong>${esc(o.when)}</strong>${o.practitionerName ? `<br>with ${esc(o.practitionerName)}` : ''}</p><p>${esc(practice)} will send you a confirmation by email.</p>`);
    } catch (e) {
      if (e instanceof PageError) {
        if (e.unknownToken && tenantId) {
          deps.audit.record(
            tenantId,
            toAuditEvent({ tenant: tenantId, action: post ? 'C' : 'R', subtype: 'waitlist-claim', kind: 'security', status: 404, outcomeText: 'waitlist claim link with an unknown token', who: {}, ip: req.ip, entities: [], patients: [], recorded: new Date().toISOString() }),
          );
        }
        return fail(e);
      }
      logger.error({ err: { message: (e as Error).message } }, 'waitlist claim page failed');
      return send(500, 'Something went wrong', '<p>Please try again later, or call the practice.</p>');
    }
  };
  router.get('/:tenant/offers/:token', handle(false));
  router.post('/:tenant/offers/:token', handle(true));
  return router;
}
