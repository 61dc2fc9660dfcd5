/**
 * The sign-in pages oidc-provider sends the browser to (/auth/{tenant}/interaction/{uid}):
 *  - staff: email + password (argon2id), then TOTP (enrolment on first sign-in; required);
 *  - patients: an emailed one-time code or magic link, no password;
 *  - then the SMART context: the `launch` parameter's context (EHR launch), the patient picker for
 *    staff asking for launch/patient or patient/ scopes, the patient's own record for patients;
 *    and the grant (scopes cut to the client's registered policy).
 * Failures count towards the per-IP lockout; every step emits an auth event.
 */
import { createHash, randomBytes, randomInt, timingSafeEqual } from 'node:crypto';
import express, { Request, Response } from 'express';
import type { Knex } from 'knex';
import type { Config } from '../config';
import { inTenant } from '../db/tenant-tx';
import { emitAuthEvent } from './events';
import { isLockedOut, LOCKOUT, recordFailure } from './lockout';
import { sendMail } from '../mail/mailer';
import { esc, LAUNCH, page, policyOf, SMART_CONTEXT, SmartContext, TenantAuth, TTL } from './provider';
import { mediate, OIDC_SCOPES } from './scope-policy';
import { newTotpSecret, otpauthUri, totpCode, verifyTotp } from './totp';
import { checkPassword, findUserByEmail, findUserById, isStaff, setTotp, User } from './users';

const PENDING = 'PendingLogin';
const EMAIL_CODE = 'EmailCode';
const sha = (s: string) => createHash('sha256').update(s).digest('hex');

export interface InteractionDeps {
  config: Config;
  db: Knex;
  auth: (tenant: string) => TenantAuth;
}

export function interactionRouter(deps: InteractionDeps): express.Router {
  const { config, db } = deps;
  const router = express.Router({ mergeParams: true });
  const form = express.urlencoded({ extended: false, limit: '16kb' });

  const ctxOf = (req: Request<any>) => {
    const tenant = req.params.tenant;
    return { tenant, auth: deps.auth(tenant), ip: req.ip ?? 'unknown', uid: req.params.uid };
  };
  const action = (req: Request<any>, step: string) => `/auth/${req.params.tenant}/interaction/${req.params.uid}/${step}`;
  const html = (res: Response, status: number, title: string, body: string) => {
    res.setHeader('Cache-Control', 'no-store');
    res.status(status).type('html').send(page(title, body));
  };
  const demoHint = (secret: string) =>
    config.demo ? `<p class="hint">Demo server: the current code is <b>${totpCode(secret)}</b> (never shown outside DEMO mode).</p>` : '';

  function loginPage(req: Request<any>, res: Response, error?: string, status = 200) {
    html(
      res,
      status,
      'Sign in',
      `${error ? `<p class="err">${esc(error)}</p>` : ''}
<fieldset><legend>Practice staff</legend>
<form method="post" action="${action(req, 'login')}">
<label>Email <input name="email" type="email" autocomplete="username" required></label>
<label>Password <input name="password" type="password" autocomplete="current-password" required></label>
<button type="submit">Sign in</button></form></fieldset>
<fieldset><legend>Patients</legend>
<form method="post" action="${action(req, 'email')}">
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

  async function failure(req: Request<any>, reason: string, email?: string): Promise<string> {
    const { tenant, ip } = ctxOf(req);
    const locked = await recordFailure(db, tenant, ip, email);
    emitAuthEvent({ type: 'login-failure', tenant, outcome: 'failure', ip, reason });
    if (locked) emitAuthEvent({ type: 'lockout', tenant, outcome: 'failure', ip, reason: `${LOCKOUT.maxFailures} failures in ${LOCKOUT.windowMinutes} minutes` });
    return locked ? lockedMessage : reason;
  }
  const lockedMessage = `Too many failed sign-ins from this address. Try again in ${LOCKOUT.windowMinutes} minutes.`;

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
      const d = await details(req, res);
      if (d.prompt.name !== 'login') return res.redirect(303, `/auth/${tenant}/interaction/${req.params.uid}`);
      if (await isLockedOut(db, tenant, ip)) {
        emitAuthEvent({ type: 'lockout', tenant, outcome: 'failure', ip, reason: 'sign-in attempted while locked out' });
        return loginPage(req, res, lockedMessage, 429);
      }
      const email = String(req.body?.email ?? '');
      const user = await checkPassword(db, tenant, email, String(req.body?.password ?? ''));
      if (!user || !isStaff(user.role)) return loginPage(req, res, await failure(req, 'Wrong email or password.', email), 401);
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
      const d = await details(req, res);
      if (d.prompt.name !== 'login') return res.redirect(303, `/auth/${tenant}/interaction/${req.params.uid}`);
      if (await isLockedOut(db, tenant, ip)) return loginPage(req, res, lockedMessage, 429);
      const pending = await auth.store.get(PENDING, req.params.uid);
      const user = pending?.userId ? await findUserById(db, tenant, pending.userId) : undefined;
      if (!user || user.disabled) return loginPage(req, res, 'Please sign in again.');
      const secret: string | undefined = pending!.secret ?? user.totpSecret;
      if (!secret || !verifyTotp(secret, String(req.body?.code ?? ''))) {
        const msg = await failure(req, 'That code is not right.');
        emitAuthEvent({ type: 'mfa-failure', tenant, outcome: 'failure', userId: user.id, ip });
        if (msg === lockedMessage) {
          await auth.store.destroy(PENDING, req.params.uid);
          return loginPage(req, res, msg, 429);
        }
        return totpPage(req, res, pending!.secret ?? (config.demo ? user.totpSecret : undefined), Boolean(pending!.secret), msg);
      }
      if (pending!.secret) await setTotp(db, tenant, user.id, pending!.secret, true);
      await finishLogin(req, res, user, ['pwd', 'otp']);
    } catch (e) {
      next(e);
    }
  });

  router.post('/interaction/:uid/email', form, async (req, res, next) => {
    try {
      const { tenant, auth, ip } = ctxOf(req);
      const d = await details(req, res);
      if (d.prompt.name !== 'login') return res.redirect(303, `/auth/${tenant}/interaction/${req.params.uid}`);
      if (await isLockedOut(db, tenant, ip)) return loginPage(req, res, lockedMessage, 429);
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
    const d = await details(req, res);
    if (d.prompt.name !== 'login') return res.redirect(303, `/auth/${tenant}/interaction/${req.params.uid}`);
    if (await isLockedOut(db, tenant, ip)) return loginPage(req, res, lockedMessage, 429);
    const rec = await auth.store.get(EMAIL_CODE, req.params.uid);
    const ok = rec && !rec.consumed && rec.tries < 5 && value && timingSafeEqual(Buffer.from(sha(value)), Buffer.from(rec[kind]));
    if (!ok) {
      if (rec) await auth.store.put(EMAIL_CODE, req.params.uid, { ...rec, tries: (rec.tries ?? 0) + 1 }, 600);
      const msg = await failure(req, 'That code is not right or has expired.');
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

  // Errors of the sign-in pages (e.g. the interaction expired or its cookie is missing).
  router.use('/interaction', (err: any, _req: Request, res: Response, _next: express.NextFunction) => {
    const expired = err?.name === 'SessionNotFound' || err?.status === 400;
    html(res, expired ? 400 : 500, 'Sign-in error', `<p>${expired ? 'This sign-in page has expired. Go back to the app and start again.' : 'Something went wrong.'}</p>`);
  });
  return router;
}
