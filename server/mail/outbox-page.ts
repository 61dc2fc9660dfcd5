/**
 * GET /outbox/{tenant}: the messages this process would have emailed (no SMTP_URL), newest first:
 * sign-in codes, appointment confirmations, reminders, cancellations, waitlist offers. DEMO mode
 * only (it shows the messages to anyone who can reach the server).
 */
import express, { Request, Response } from 'express';
import type { Config } from '../config';
import { esc, page } from '../auth/provider';
import { outboxFor } from './mailer';

export function outboxRouter(config: Config): express.Router {
  const router = express.Router();
  router.get('/:tenant', (req: Request<{ tenant: string }>, res: Response) => {
    res.locals.route = '/outbox/:tenant';
    if (!config.demo || config.smtpUrl) {
      res.status(404).json({ error: 'not_found', error_description: 'the outbox exists only in DEMO mode without SMTP_URL' });
      return;
    }
    const mails = outboxFor(req.params.tenant);
    res.setHeader('Cache-Control', 'no-store');
    res.type('html').send(
      page(
        'Demo outbox',
        `<p class="hint">Messages of this server process that SMTP_URL would have sent (the last 200).</p>` +
          (mails.length
            ? mails
                .map(
                  (m) =>
                    `<fieldset><legend>${esc(m.at)} to ${esc(m.to)}: ${esc(m.subject)}${m.kind ? ` <small>(${esc(m.kind)})</small>` : ''}</legend><pre style="white-space:pre-wrap">${esc(m.text)}</pre></fieldset>`,
                )
                .join('')
            : '<p>No messages yet.</p>'),
      ),
    );
  });
  return router;
}
