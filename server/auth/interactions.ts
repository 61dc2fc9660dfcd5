/**
 * The sign-in pages oidc-provider sends the browser to (/auth/{tenant}/interaction/{uid}):
 *  - staff: email + password (argon2id), then TOTP (enrolment on first sign-in; required);
 *  - patients: an emailed one-time code or magic link, no password;
 *  - then the SMART context: the `launch` parameter's context (EHR launch), the patient picker for
 *    staff asking for launch/patient or patient/ scopes, the patient's own record for patients;
 *    and the grant (scopes cut to the client's registered policy);
 *  - optionally, "Sign in with {IdP}": the practice's own OpenID Connect provider
 *    (server/auth/federation.ts), mapped by verified email to an existing user; staff still need
 *    a second factor (the IdP's `amr` or our TOTP).
 * Failures count towards the per-IP lockout (a lockout mails the owners of the accounts tried);
 * every step emits an auth event.
 */
import { createHash, randomBytes, randomInt, timingSafeEqual } from 'node:crypto';
import express, { Request, Response } from 'express';
import type { Knex } from 'knex';
import type { Config } from '../config';
import { inTenant } from '../db/tenant-tx';
import type { FederationSettings } from '../fhir/types';
import type { Tenant } from '../http/tenants';
import { logger } from '../log';
import { emitAuthEvent } from './events';
import { DEFAULT_LABEL, FederationClients, FederationError, idpDidMfa, STAFF_ROLES } from './federation';
import { isLockedOut, LOCKOUT, maxFailures, recordFailure } from './lockout';
import { notifyLockout } from './lockout-notice';
import { sendMail } from '../mail/mailer';
import { esc, LAUNCH, page, policyOf, SMART_CONTEXT, SmartContext, TenantAuth, TTL } from './provider';
import { mediate, OIDC_SCOPES } from './scope-policy';
import { newTotpSecret, otpauthUri, totpCode, verifyTotp } from './totp';
import { checkPassword, findUserByEmail, findUserById, isStaff, setTotp, User } from './users';

const PENDING = 'PendingLogin';
const EMAIL_CODE = 'EmailCode';
const FED_STATE = 'FederationState';
const sha = (s: string) => createHash('sha256').update(s).digest('hex');

export interface InteractionDeps {
  config: Config;
  db: Knex;
  auth: (tenant: string) => TenantAuth;
  federation: FederationClients;
}

export function interactionRouter(deps: InteractionDeps): express.Router {
  const { config, db } = deps;
  const router = express.Router({ mergeParams: true });
  const form = express.urlencoded({ extended: false, limit: '16kb' });

  const ctxOf = (req: Request<any>) => {
    const tenant = req.params.tenant;
    return { tenant, auth: deps.auth(tenant), ip: req.ip ?? 'unknown', uid: req.params.uid };
  };
  const action = (req: Request<any>, step: string, uid: string = req.params.uid) => `/auth/${req.params.tenant}/interaction/${uid}/${step}`;
  /** The tenant row the auth router loaded for this request (name, settings). */
  const tenantOf = (res: Response): Tenant | undefined => res.locals.tenantRecord;
  const federationOf = (res: Response): FederationSettings | undefined => tenantOf(res)?.settings?.federation;
  /** Failed sign-ins per IP in 15 minutes before the lockout (tenant setting, default 5). */
  const maxFailuresOf = (res: Response): number => maxFailures(tenantOf(res)?.settings?.signInAttemptsPer15Minutes);
  const fedCookie = (tenant: string) => `_fed_${tenant}`;
  const html = (res: Response, status: number, title: string, body: string) => {
    res.setHeader('Cache-Control', 'no-store');
    // locked out: at most the rest of the window (RFC 6585 429 with Retry-After)
    if (status === 429) res.setHeader('Retry-After', String(LOCKOUT.windowMinutes * 60));
    res.status(status).type('html').send(page(title, body));
  };
  const demoHint = (secret: string) =>
    config.demo ? `<p class="hint">Demo server: the current code is <b>${totpCode(secret)}</b> (never shown outside DEMO mode).</p>` : '';

  function loginPage(req: Request<any>, res: Response, error?: string, status = 200, uid: string = req.params.uid) {
    const fed = federationOf(res);
    html(
      res,
      status,
      'Sign in',
      `${error ? `<p class="err">${esc(error)}</p>` : ''}${fed ? `
<form method="post" action="${action(req, 'federation', uid)}">
<button type="submit">Sign in with ${esc(fed.label ?? DEFAULT_LABEL)}</button></form>` : ''}
<fieldset><legend>Practice staff</legend>
<form method="post" action="${action(req, 'login', uid)}">
<label>Email <input name="email" type="email" autocomplete="username" required></label>
<label>Password <input name="password" type="password" autocomplete="current-password" required></label>
<button type="submit">Sign in</button></form></fieldset>
<fieldset><legend>Patients</legend>
<form method="post" action="${action(req, 'email', uid)}">
<label>Email <input name="email" type="email" autocomplete="email" required></label>
<button type="submit">Email me a sign-in code</button></form></fieldset>`,
    );
  }

  function totpPage(req: Request<any>, res: Response, secret: string | undefined, enrol: boolean, error?: string) {
    const { auth } = ctxOf(req);
    const enrolBlock = enrol && secret
      ? `<p>Multi-factor sign-in is required for practice staff. Add this key to an authenticator app, then enter the code it shows.</p>
<p>Key: <code>${esc(secret)}</code></p><p class="hint"><code>${esc(otpauthUri(secret, auth.issuer, 'staff'))}</code></p>`
      : '<p>Enter the 6-digit code from your authenticator app.</p>';
    html(
      res,
      error ? 401 : 200,
      'Verification code',
      `${error ? `<p class="err">${esc(error)}</p>` : ''}${enrolBlock}
<form method="post" action="${action(req, 'totp')}">
<label>Code <input name="code" inputmode="numeric" autocomplete="one-time-code" pattern="[0-9 ]{6,7}" required></label>
<button type="submit">Verify</button></form>${secret ? demoHint(secret) : ''}`,
    );
  }

  function codePage(req: Request<any>, res: Response, error?: string) {
    html(
      res,
      error ? 401 : 200,
      'Check your email',
      `${error ? `<p class="err">${esc(error)}</p>` : ''}<p>If this address belongs to a patient of the practice, we sent a 6-digit code and a sign-in link. They are valid for 10 minutes.</p>
<form method="post" action="${action(req, 'code')}">
<label>Code <input name="code" inputmode="numeric" autocomplete="one-time-code" required></label>
<button type="submit">Sign in</button></form>${config.demo ? `<p class="hint">Demo server: the message is in the <a href="/outbox/${esc(req.params.tenant)}" target="_blank">outbox</a>.</p>` : ''}`,
    );
  }

  async function details(req: Request<any>, res: Response) {
    const { auth } = ctxOf(req);
    const d = await auth.provider.interactionDetails(req, res);
    if (d.uid !== req.params.uid) throw Object.assign(new Error('interaction mismatch'), { status: 400 });
    return d;
  }

  /**
   * A failed attempt: counts towards the IP's lockout, emits the event; when it locks the IP out,
   * the owners of the accounts tried from it get a notice. `email` is the account the attempt was
   * for (typed in, or known from an earlier step); it is stored only as a hash.
   */
  async function failure(req: Request<any>, res: Response, reason: string, email?: string, event: 'login-failure' | 'federation-failure' = 'login-failure', userId?: string): Promise<string> {
    const { tenant, ip, auth } = ctxOf(req);
    const max = maxFailuresOf(res);
    const locked = await recordFailure(db, tenant, ip, email, max);
    emitAuthEvent({ type: event, tenant, outcome: 'failure', ip, reason, userId });
    if (locked) {
      emitAuthEvent({ type: 'lockout', tenant, outcome: 'failure', ip, reason: `${max} failures in ${LOCKOUT.windowMinutes} minutes` });
      notifyLockout({ config, db, store: auth.store, tenant, practice: tenantOf(res)?.name ?? tenant, ip, failures: max });
    }
    return locked ? lockedMessage : reason;
  }
  const lockedMessage = `Too many failed sign-ins from this address. Try again in ${LOCKOUT.windowMinutes} minutes.`;

  /**
   * The start of every sign-in step: an interaction past its login prompt goes back to it, and a
   * locked-out IP gets the 429 page. False when it has answered (the step must stop).
   */
  async function loginStep(req: Request<any>, res: Response, opts: { auditLocked?: boolean } = {}): Promise<boolean> {
    const { tenant, ip } = ctxOf(req);
    const d = await details(req, res);
    if (d.prompt.name !== 'login') {
      res.redirect(303, `/auth/${tenant}/interaction/${req.params.uid}`);
      return false;
    }
    if (await isLockedOut(db, tenant, ip, maxFailuresOf(res))) {
      if (opts.auditLocked) emitAuthEvent({ type: 'lockout', tenant, outcome: 'failure', ip, reason: 'sign-in attempted while locked out' });
      loginPage(req, res, lockedMessage, 429);
      return false;
    }
    return true;
  }

  async function finishLogin(req: Request<any>, res: Response, user: User, amr: string[]) {
    const { tenant, auth, ip } = ctxOf(req);
    emitAuthEvent({ type: 'login-success', tenant, outcome: 'success', userId: user.id, role: user.role, fhirUser: user.fhirUser, ip });
    await auth.store.destroy(PENDING, req.params.uid);
    await auth.provider.interactionFinished(req, res, { login: { accountId: user.id, amr } }, { mergeWithLastSubmission: false });
  }

  /** The SMART context and the grant, then back to the authorization endpoint. */
  async function consent(req: Request<any>, res: Response, d: any, chosenPatient?: string) {
    const { tenant, auth } = ctxOf(req);
    const user = await findUserById(db, tenant, d.session?.accountId);
    if (!user || user.disabled) return loginPage(req, res, 'Please sign in again.');
    const params = d.params as Record<string, string>;
    const client = await auth.provider.Client.find(params.client_id);
    const requested = String(params.scope ?? '').split(/\s+/).filter(Boolean);
    const oidc = requested.filter((s) => OIDC_SCOPES.includes(s));
    const resource = mediate(params.scope, policyOf(client)).allowed.filter((s) => !s.startsWith('system/'));
    const ctx: SmartContext = {};
    if (params.launch) {
      const l = await auth.store.get(LAUNCH, params.launch);
      if (!l) {
        return auth.provider.interactionFinished(req, res, { error: 'invalid_request', error_description: 'unknown or expired launch' }, { mergeWithLastSubmission: false });
      }
      Object.assign(ctx, { patient: l.patient, encounter: l.encounter, needBanner: l.needBanner ?? false });
    }
    const wantsPatient = oidc.includes('launch/patient') || resource.some((s) => s.startsWith('patient/'));
    if (user.role === 'patient') {
      ctx.patient = user.fhirUser?.slice('Patient/'.length);
      ctx.needBanner = false;
    } else if (wantsPatient && !ctx.patient) {
      if (!chosenPatient) return patientPicker(req, res);
      if (!(await patientExists(tenant, chosenPatient))) return patientPicker(req, res, 'Choose a patient from the list.');
      ctx.patient = chosenPatient;
      ctx.needBanner = true;
    }
    const grant = new auth.provider.Grant({ accountId: user.id, clientId: params.client_id });
    if (oidc.length) grant.addOIDCScope(oidc.join(' '));
    if (oidc.includes('openid') && oidc.includes('fhirUser')) grant.addOIDCClaims(['fhirUser']);
    if (resource.length) grant.addResourceScope(auth.audience, resource.join(' '));
    const grantId = await grant.save();
    await auth.store.put(SMART_CONTEXT, grantId, ctx, TTL.grant);
    await auth.provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
  }

  async function patientExists(tenant: string, id: string): Promise<boolean> {
    if (!/^[A-Za-z0-9\-.]{1,64}$/.test(id)) return false;
    return inTenant(db, tenant, async (tx) => {
      const r = await tx.raw(`SELECT 1 FROM resources WHERE tenant_id = ? AND res_type = 'Patient' AND id = ? AND NOT deleted`, [tenant, id]);
      return r.rows.length > 0;
    });
  }

  async function patientPicker(req: Request<any>, res: Response, error?: string) {
    const { tenant } = ctxOf(req);
    const rows = await inTenant(db, tenant, async (tx) =>
      (await tx.raw(
        `SELECT id, content->'name'->0->>'family' AS family, (content->'name'->0->'given')::text AS given, content->>'birthDate' AS birth
           FROM resources WHERE tenant_id = ? AND res_type = 'Patient' AND NOT deleted ORDER BY last_updated DESC, id LIMIT 200`,
        [tenant],
      )).rows,
    );
    const label = (r: any) => {
      let given = '';
      try {
        given = (JSON.parse(r.given ?? '[]') as string[]).join(' ');
      } catch {
        /* none */
      }
      return `${given} ${r.family ?? ''}`.trim() + (r.birth ? ` (${r.birth})` : '') || r.id;
    };
    html(
      res,
      200,
      'Choose a patient',
      `${error ? `<p class="err">${esc(error)}</p>` : ''}<p>The app asks for one patient's record.</p>
<form method="post" action="${action(req, 'patient')}">
${rows.map((r: any) => `<label style="display:block"><input type="radio" name="patient" value="${esc(r.id)}" style="width:auto" required> ${esc(label(r))}</label>`).join('\n')}
<button type="submit">Continue</button></form>`,
    );
  }

  router.get('/interaction/:uid', async (req, res, next) => {
    try {
      const d = await details(req, res);
      if (d.prompt.name === 'login') {
        const pending = await ctxOf(req).auth.store.get(PENDING, req.params.uid);
        if (pending?.userId && pending.done) {
          // A federated sign-in that needs no further step (see /federation/callback).
          const user = await findUserById(db, ctxOf(req).tenant, pending.userId);
          if (!user || user.disabled) return loginPage(req, res, 'Please sign in again.');
          return await finishLogin(req, res, user, pending.amr ?? ['fed']);
        }
        if (pending?.userId) return totpPage(req, res, pending.secret, Boolean(pending.secret));
        return loginPage(req, res);
      }
      if (d.prompt.name === 'consent') return await consent(req, res, d);
      html(res, 400, 'Sign-in error', `<p>Unexpected step ${esc(d.prompt.name)}.</p>`);
    } catch (e) {
      next(e);
    }
  });

  router.post('/interaction/:uid/login', form, async (req, res, next) => {
    try {
      const { tenant, auth, ip } = ctxOf(req);
      if (!(await loginStep(req, res, { auditLocked: true }))) return;
      const email = String(req.body?.email ?? '');
      const user = await checkPassword(db, tenant, email, String(req.body?.password ?? ''));
      if (!user || !isStaff(user.role)) return loginPage(req, res, await failure(req, res, 'Wrong email or password.', email), 401);
      // Password right: the second factor is required for every staff account.
      const secret = user.totpEnabled && user.totpSecret ? undefined : newTotpSecret();
      await auth.store.put(PENDING, req.params.uid, { userId: user.id, ...(secret ? { secret } : {}) }, 600);
      emitAuthEvent({ type: 'mfa-challenge', tenant, outcome: 'success', userId: user.id, role: user.role, ip });
      totpPage(req, res, secret ?? (config.demo ? user.totpSecret : undefined), Boolean(secret));
    } catch (e) {
      next(e);
    }
  });

  router.post('/interaction/:uid/totp', form, async (req, res, next) => {
    try {
      const { tenant, auth, ip } = ctxOf(req);
      if (!(await loginStep(req, res))) return;
      const pending = await auth.store.get(PENDING, req.params.uid);
      const user = pending?.userId ? await findUserById(db, tenant, pending.userId) : undefined;
      if (!user || user.disabled) return loginPage(req, res, 'Please sign in again.');
      const secret: string | undefined = pending!.secret ?? user.totpSecret;
      if (!secret || !verifyTotp(secret, String(req.body?.code ?? ''))) {
        const msg = await failure(req, res, 'That code is not right.', user.email, 'login-failure', user.id);
        emitAuthEvent({ type: 'mfa-failure', tenant, outcome: 'failure', userId: user.id, ip });
        if (msg === lockedMessage) {
          await auth.store.destroy(PENDING, req.params.uid);
          return loginPage(req, res, msg, 429);
        }
        return totpPage(req, res, pending!.secret ?? (config.demo ? user.totpSecret : undefined), Boolean(pending!.secret), msg);
      }
      if (pending!.secret) await setTotp(db, tenant, user.id, pending!.secret, true);
      await finishLogin(req, res, user, [pending!.federated ? 'fed' : 'pwd', 'otp']);
    } catch (e) {
      next(e);
    }
  });

  router.post('/interaction/:uid/email', form, async (req, res, next) => {
    try {
      const { tenant, auth, ip } = ctxOf(req);
      if (!(await loginStep(req, res))) return;
      const email = String(req.body?.email ?? '').trim();
      const user = email ? await findUserByEmail(db, tenant, email) : undefined;
      if (user && user.role === 'patient' && !user.disabled) {
        const code = String(randomInt(0, 1_000_000)).padStart(6, '0');
        const magic = randomBytes(24).toString('base64url');
        await auth.store.put(EMAIL_CODE, req.params.uid, { userId: user.id, code: sha(code), magic: sha(magic), tries: 0 }, 600);
        const link = `${config.publicUrl}/auth/${tenant}/interaction/${req.params.uid}/magic?t=${magic}`;
        await sendMail(config.smtpUrl, config.mailFrom, {
          tenant,
          to: user.email,
          subject: 'Your sign-in code',
          kind: 'sign-in-code',
          text: `Your sign-in code is ${code}.\n\nOr open this link in the same browser:\n${link}\n\nIt is valid for 10 minutes. If you did not ask to sign in, ignore this message.`,
        }, config.publicUrl);
        emitAuthEvent({ type: 'code-sent', tenant, outcome: 'success', userId: user.id, role: 'patient', ip });
      }
      codePage(req, res);
    } catch (e) {
      next(e);
    }
  });

  async function checkEmailCode(req: Request<any>, res: Response, kind: 'code' | 'magic', value: string) {
    const { tenant, auth, ip } = ctxOf(req);
    if (!(await loginStep(req, res))) return;
    const rec = await auth.store.get(EMAIL_CODE, req.params.uid);
    const ok = rec && !rec.consumed && rec.tries < 5 && value && timingSafeEqual(Buffer.from(sha(value)), Buffer.from(rec[kind]));
    if (!ok) {
      if (rec) await auth.store.put(EMAIL_CODE, req.params.uid, { ...rec, tries: (rec.tries ?? 0) + 1 }, 600);
      const owner = rec?.userId ? await findUserById(db, tenant, rec.userId) : undefined;
      const msg = await failure(req, res, 'That code is not right or has expired.', owner?.email);
      return msg === lockedMessage ? loginPage(req, res, msg, 429) : codePage(req, res, msg);
    }
    if (!(await auth.store.take(EMAIL_CODE, req.params.uid))) return codePage(req, res, 'That code was already used.');
    const user = await findUserById(db, tenant, rec.userId);
    if (!user || user.disabled) return loginPage(req, res, 'Please sign in again.');
    await finishLogin(req, res, user, ['otp', 'email']);
  }

  router.post('/interaction/:uid/code', form, (req, res, next) => checkEmailCode(req, res, 'code', String(req.body?.code ?? '').replace(/\s/g, '')).catch(next));
  router.get('/interaction/:uid/magic', (req, res, next) => checkEmailCode(req, res, 'magic', String(req.query.t ?? '')).catch(next));

  router.post('/interaction/:uid/patient', form, async (req, res, next) => {
    try {
      const d = await details(req, res);
      if (d.prompt.name !== 'consent') return res.redirect(303, `/auth/${(req.params as any).tenant}/interaction/${req.params.uid}`);
      await consent(req, res, d, String(req.body?.patient ?? ''));
    } catch (e) {
      next(e);
    }
  });

  // --- federation: "Sign in with {IdP}" ---
  const callbackUrl = (tenant: string) => `${config.publicUrl}/auth/${tenant}/federation/callback`;

  router.post('/interaction/:uid/federation', async (req, res, next) => {
    try {
      const { tenant, auth, ip, uid } = ctxOf(req);
      const d = await details(req, res);
      if (d.prompt.name !== 'login') return res.redirect(303, `/auth/${tenant}/interaction/${uid}`);
      const fed = federationOf(res);
      if (!fed) return loginPage(req, res, 'This practice has no external sign-in.', 404);
      if (await isLockedOut(db, tenant, ip, maxFailuresOf(res))) return loginPage(req, res, lockedMessage, 429);
      let start;
      try {
        start = await deps.federation.start(tenant, fed, callbackUrl(tenant));
      } catch (e) {
        if (!(e instanceof FederationError)) throw e;
        emitAuthEvent({ type: 'federation-failure', tenant, outcome: 'failure', ip, reason: e.reason });
        return loginPage(req, res, e.userMessage, 502);
      }
      // The browser that started is the one that may finish: a random value in a cookie, its hash
      // stored with the state (one value per browser, so parallel tabs both work).
      const existing = readCookie(req, fedCookie(tenant));
      const binding = existing && /^[A-Za-z0-9_-]{43}$/.test(existing) ? existing : randomBytes(32).toString('base64url');
      await auth.store.put(FED_STATE, start.state, { uid, nonce: start.nonce, verifier: start.verifier, binding: sha(binding) }, 600);
      res.cookie(fedCookie(tenant), binding, {
        httpOnly: true,
        sameSite: 'lax', // sent on the IdP's top-level redirect back to us
        secure: config.publicUrl.startsWith('https:'),
        path: `/auth/${tenant}`,
        maxAge: 600_000,
      });
      res.setHeader('Cache-Control', 'no-store');
      res.redirect(303, start.url);
    } catch (e) {
      next(e);
    }
  });

  router.get('/federation/callback', async (req: Request<any>, res: Response) => {
    const { tenant, auth, ip } = ctxOf(req);
    const fed = federationOf(res);
    const expired = () =>
      html(res, 400, 'Sign-in error', '<p>This sign-in attempt is not valid or has expired. Go back to the app and start again.</p>');
    try {
      const state = typeof req.query.state === 'string' ? req.query.state : '';
      const st = state && state.length <= 256 ? await auth.store.take(FED_STATE, state) : undefined;
      const binding = readCookie(req, fedCookie(tenant));
      const sameBrowser = st && binding && timingSafeEqual(Buffer.from(sha(binding)), Buffer.from(String(st.binding)));
      if (!st || !sameBrowser || !fed) {
        await failure(req, res, st ? 'federation: callback from another browser' : 'federation: unknown or reused state', undefined, 'federation-failure');
        return expired();
      }
      const uid = String(st.uid);
      // Is the interaction still alive? (Its cookie is checked when the browser comes back to it.)
      if (!(await auth.provider.Interaction.find(uid))) return expired();
      if (await isLockedOut(db, tenant, ip, maxFailuresOf(res))) return loginPage(req, res, lockedMessage, 429, uid);
      const query = req.originalUrl.includes('?') ? req.originalUrl.slice(req.originalUrl.indexOf('?')) : '';
      let who;
      try {
        who = await deps.federation.finish(tenant, fed, new URL(callbackUrl(tenant) + query), { state, nonce: st.nonce, verifier: st.verifier });
      } catch (e) {
        if (!(e instanceof FederationError)) throw e;
        // A forged or broken answer counts towards the lockout; the IdP being down or the person
        // cancelling there does not.
        if (e.kind === 'invalid') await failure(req, res, e.reason, undefined, 'federation-failure');
        else emitAuthEvent({ type: 'federation-failure', tenant, outcome: 'failure', ip, reason: e.reason });
        return loginPage(req, res, e.userMessage, e.kind === 'unreachable' ? 502 : 401, uid);
      }
      const label = fed.label ?? DEFAULT_LABEL;
      const refuse = async (reason: string, message: string, email?: string) => {
        const msg = await failure(req, res, reason, email, 'federation-failure');
        return loginPage(req, res, msg === lockedMessage ? msg : message, msg === lockedMessage ? 429 : 403, uid);
      };
      if (!who.email) return refuse('federation: no email from the identity provider', `${label} did not tell us your email address, so we cannot find your account. Ask your administrator.`);
      if (fed.requireEmailVerified !== false && !who.emailVerified) {
        return refuse('federation: email not verified at the identity provider', `Your email address is not verified at ${label}. Verify it there, or sign in with your password.`);
      }
      const user = await findUserByEmail(db, tenant, who.email);
      const roles = fed.roles ?? STAFF_ROLES;
      if (!user || user.disabled) {
        return refuse('federation: no account for this identity', `There is no account at this practice for the address you used at ${label}. Ask your administrator to add you.`);
      }
      if (!roles.includes(user.role)) {
        return refuse('federation: role may not use the identity provider', `Your account cannot sign in with ${label}. Use the sign-in form below.`, who.email);
      }
      const idpMfa = fed.acceptIdpMfa !== false && idpDidMfa(who.amr);
      emitAuthEvent({ type: 'federation-success', tenant, outcome: 'success', userId: user.id, role: user.role, ip, reason: idpMfa ? 'identity provider sign-in with mfa' : 'identity provider sign-in' });
      if (isStaff(user.role) && !idpMfa) {
        // Staff need a second factor: our TOTP step, as after a password (enrolment if needed).
        const secret = user.totpEnabled && user.totpSecret ? undefined : newTotpSecret();
        await auth.store.put(PENDING, uid, { userId: user.id, federated: true, ...(secret ? { secret } : {}) }, 600);
        emitAuthEvent({ type: 'mfa-challenge', tenant, outcome: 'success', userId: user.id, role: user.role, ip });
      } else {
        await auth.store.put(PENDING, uid, { userId: user.id, federated: true, done: true, amr: ['fed', ...(idpMfa ? ['mfa'] : [])] }, 600);
      }
      res.setHeader('Cache-Control', 'no-store');
      res.redirect(303, `/auth/${tenant}/interaction/${uid}`);
    } catch (e) {
      logger.error({ tenant, err: { name: (e as Error)?.name, message: (e as Error)?.message } }, 'federation callback failed');
      html(res, 500, 'Sign-in error', '<p>Something went wrong. Go back to the app and start again.</p>');
    }
  });

  // Errors of the sign-in pages (e.g. the interaction expired or its cookie is missing).
  router.use('/interaction', (err: any, _req: Request, res: Response, _next: express.NextFunction) => {
    const expired = err?.name === 'SessionNotFound' || err?.status === 400;
    html(res, expired ? 400 : 500, 'Sign-in error', `<p>${expired ? 'This sign-in page has expired. Go back to the app and start again.' : 'Something went wrong.'}</p>`);
  });
  return router;
}

/** One cookie of the request (no cookie parser in this app). */
function readCookie(req: Request, name: string): string | undefined {
  for (const part of String(req.headers.cookie ?? '').split(';')) {
    const i = part.indexOf('=');
    if (i > 0 && part.slice(0, i).trim() === name) {
      try {
        return decodeURIComponent(part.slice(i + 1).trim());
      } catch {
        return undefined;
      }
    }
  }
  return undefined;
}
