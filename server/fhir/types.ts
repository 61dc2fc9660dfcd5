/** Transport-neutral FHIR request/response, shared by the HTTP router and batch/transaction. */
import type { Knex } from 'knex';
import type { Config } from '../config';
import type { Tx } from '../db/tenant-tx';
import type { QueryInput } from '../search/params';
import type { Access } from '../auth/access';

export interface FhirRequest {
  method: 'GET' | 'HEAD' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
  /** Path below the tenant base, split on '/', without empty segments (e.g. ['Patient', '123']). */
  segments: string[];
  query: QueryInput;
  headers: {
    ifMatch?: string;
    ifNoneMatch?: string;
    ifModifiedSince?: string;
    ifNoneExist?: string;
    prefer?: string;
    contentType?: string;
  };
  /** Parsed JSON body (resource, Parameters, patch array) when there is one. */
  body?: unknown;
  /** Inside a transaction: the id already promised to this POST entry's urn:uuid. */
  assignedId?: string;
}

export interface FhirResponse {
  status: number;
  headers: Record<string, string>;
  /** A resource/Bundle object, pre-serialised JSON text, or nothing. */
  body?: unknown;
  /** When body is a resource, the stored JSON text (lets the serialiser skip a stringify). */
  json?: string;
}

export interface TenantContext {
  tenant: string;
  /** Absolute FHIR base of the tenant, e.g. http://localhost:8080/fhir/demo */
  baseUrl: string;
  config: Config;
  db: Knex;
  settings: TenantSettings;
  /** Present inside a transaction Bundle: every entry shares it. */
  tx?: Tx;
  /** The caller's authorization (from the bearer token); absent for internal callers. */
  access?: Access;
  /** Set while an operation runs (e.g. "book"): lets write hooks and event subscribers tell an
   * operation's writes from plain REST writes. */
  operation?: string;
  /** The job clock when a background job writes (write hooks use it for "now"); absent: the system time. */
  clock?: { now(): Date };
}

export interface TenantSettings {
  /** Require If-Match on update/patch (400 when missing, as R4 says). */
  requireIfMatch?: boolean;
  /** FHIR requests per minute for the whole practice (default 600; 0 = no limit). */
  rateLimitPerMinute?: number;
  /** Sign-in attempts per 15 minutes per IP (default 5). */
  signInAttemptsPer15Minutes?: number;
  /** Browser origins (registered SMART apps) allowed to call the API (CORS). */
  corsOrigins?: string[];
  /** Scheduling: how far ahead $find/$book (and a patient's own booking) must be (default 120 minutes). */
  bookingLeadTimeMinutes?: number;
  /** Scheduling: a patient may cancel or move their appointment only this many hours ahead (default 24). */
  patientCancelMinHours?: number;
  /** Waitlist: how long an offered (held) Slot waits for the patient's claim before it passes to the next entry (default 60 minutes). */
  waitlistOfferMinutes?: number;
  /** Scheduling: how many days ahead Slots are generated from practitioners' hours (default 90). */
  slotHorizonDays?: number;
  /** Scheduling: the practice's phone number, named in the "book at least ... in advance" message. */
  practicePhone?: string;
  /** The practice's IANA time zone (quiet hours; messages to patients without a zone of their own; practitioners' hours without a zone of their own). Default UTC. */
  timeZone?: string;
  /** Appointment reminders, minutes before the start (default [2880, 120]: 48 h and 2 h; [] = none). */
  reminderOffsetsMinutes?: number[];
  /** No reminders in this daily window, practice time (e.g. {start: '21:00', end: '08:00'}); see docs/jobs.md. */
  quietHours?: { start: string; end: string } | null;
  /** The cancellation policy quoted in booking confirmations. */
  cancellationPolicy?: string;
  /** How patients appear in practitioners' calendar feeds (default initials). */
  calendarPatientNames?: 'initials' | 'full' | 'none';
  /** Optional sign-in through an external OpenID Connect identity provider (server/auth/federation.ts). */
  federation?: FederationSettings;
}

/**
 * The practice's external OpenID Connect identity provider (e.g. Auth0, Entra ID, Keycloak).
 * Kept in the tenant row, never shown to FHIR clients; the admin API never returns the secret.
 */
export interface FederationSettings {
  /** Issuer URL (https; http on localhost only while PUBLIC_URL is http on localhost too). */
  issuer: string;
  clientId: string;
  /** As given to validateFederation; setFederation stores it only as clientSecretSealed. */
  clientSecret?: string;
  /** The client secret encrypted with the tenant's data key (crypto/at-rest.ts sealSecret). */
  clientSecretSealed?: string;
  /** Scopes asked of the IdP (default "openid email"; must contain openid). */
  scopes?: string;
  /** Button text: "Sign in with {label}". */
  label?: string;
  /** Roles that may sign in this way (default the staff roles). */
  roles?: string[];
  /** Accept an IdP email only when `email_verified` is true (default true). */
  requireEmailVerified?: boolean;
  /** Take the IdP's `amr` (mfa/otp) as the staff second factor instead of our TOTP (default true). */
  acceptIdpMfa?: boolean;
}
