/** Structured JSON logs (pino). Never log names, bodies or query values: ids, routes, statuses only. */
import pino from 'pino';

export const logger = pino({
  level: process.env.LOG_LEVEL ?? (process.env.NODE_ENV === 'test' ? 'silent' : 'info'),
  base: { pid: process.pid },
  redact: { paths: ['req.headers.authorization', 'req.headers.cookie'], remove: true },
});
