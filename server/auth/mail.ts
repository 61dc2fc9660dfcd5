/**
 * Outgoing mail (patients' one-time sign-in codes). With SMTP_URL: nodemailer over SMTP. Without
 * it: the message goes to an in-memory outbox (the last 50 messages), shown at
 * /auth/{tenant}/outbox when DEMO is on, and a log line says a message is waiting there.
 */
import nodemailer from 'nodemailer';
import { logger } from '../log';

export interface Mail {
  to: string;
  subject: string;
  text: string;
  tenant: string;
  at: string;
}

const outbox: Mail[] = [];
let transport: ReturnType<typeof nodemailer.createTransport> | undefined;
let transportUrl: string | undefined;

export function outboxFor(tenant: string): Mail[] {
  return outbox.filter((m) => m.tenant === tenant).reverse();
}

export async function sendMail(smtpUrl: string | undefined, from: string, m: Omit<Mail, 'at'>): Promise<void> {
  if (!smtpUrl) {
    outbox.push({ ...m, at: new Date().toISOString() });
    if (outbox.length > 50) outbox.shift();
    logger.info({ tenant: m.tenant }, `no SMTP_URL: sign-in message kept in the local outbox (/auth/${m.tenant}/outbox in demo mode)`);
    return;
  }
  if (!transport || transportUrl !== smtpUrl) {
    transport = nodemailer.createTransport(smtpUrl);
    transportUrl = smtpUrl;
  }
  await transport.sendMail({ from, to: m.to, subject: m.subject, text: m.text });
}
