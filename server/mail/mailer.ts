/**
 * Outgoing mail: sign-in codes (server/auth) and notifications (server/jobs). With SMTP_URL:
 * nodemailer over SMTP. Without it: the message goes to an in-memory outbox of this process
 * (the last 200 messages), shown at /outbox/{tenant} in DEMO mode, and a log line (no address,
 * no content) says a message is waiting there.
 */
import nodemailer from 'nodemailer';
import { logger } from '../log';

export interface OutgoingMail {
  tenant: string;
  to: string;
  subject: string;
  text: string;
  /** What the message is (sign-in-code, appointment.confirmation, ...), for the outbox page and logs. */
  kind?: string;
  /** RFC 5322 Message-ID (with the angle brackets); a retried job sends the same one. */
  messageId?: string;
}

export interface Mail extends OutgoingMail {
  at: string;
}

export interface SentMail {
  via: 'smtp' | 'outbox';
  messageId?: string;
}

const OUTBOX_SIZE = 200;
const outbox: Mail[] = [];
const transports = new Map<string, ReturnType<typeof nodemailer.createTransport>>();

/** The demo outbox of a tenant, newest first. */
export function outboxFor(tenant: string): Mail[] {
  return outbox.filter((m) => m.tenant === tenant).reverse();
}

function transportFor(smtpUrl: string) {
  let t = transports.get(smtpUrl);
  if (!t) {
    // Short timeouts: a notification job holds its database transaction while it sends, so an
    // unreachable SMTP server must fail it quickly (it is retried later). Query parameters of
    // SMTP_URL override these.
    t = nodemailer.createTransport({ url: smtpUrl, connectionTimeout: 10_000, greetingTimeout: 10_000, socketTimeout: 30_000 });
    transports.set(smtpUrl, t);
  }
  return t;
}

export class Mailer {
  constructor(private opts: { smtpUrl?: string; from: string; publicUrl?: string }) {}

  get usesOutbox(): boolean {
    return !this.opts.smtpUrl;
  }

  async send(m: OutgoingMail): Promise<SentMail> {
    if (!this.opts.smtpUrl) {
      outbox.push({ ...m, at: new Date().toISOString() });
      if (outbox.length > OUTBOX_SIZE) outbox.shift();
      const where = this.opts.publicUrl ? `${this.opts.publicUrl}/outbox/${m.tenant}` : `/outbox/${m.tenant}`;
      logger.info({ tenant: m.tenant, kind: m.kind }, `no SMTP_URL: message kept in the local outbox (${where} in demo mode)`);
      return { via: 'outbox', messageId: m.messageId };
    }
    const info = await transportFor(this.opts.smtpUrl).sendMail({
      from: this.opts.from,
      to: m.to,
      subject: m.subject,
      text: m.text,
      ...(m.messageId ? { messageId: m.messageId } : {}),
    });
    return { via: 'smtp', messageId: info.messageId ?? m.messageId };
  }
}

/** One message with the given settings (the sign-in code path). */
export async function sendMail(smtpUrl: string | undefined, from: string, m: OutgoingMail, publicUrl?: string): Promise<SentMail> {
  return new Mailer({ smtpUrl, from, publicUrl }).send(m);
}
