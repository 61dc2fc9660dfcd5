/** Prometheus metrics: request count and latency by route and status, DB pool usage, job runs. */
import client from 'prom-client';
import type { Knex } from 'knex';

export const registry = new client.Registry();
client.collectDefaultMetrics({ register: registry });

export const httpRequests = new client.Counter({
  name: 'http_requests_total',
  help: 'HTTP requests by method, route template and status',
  labelNames: ['method', 'route', 'status'],
  registers: [registry],
});

export const httpDuration = new client.Histogram({
  name: 'http_request_duration_seconds',
  help: 'HTTP request latency by method, route template and status',
  labelNames: ['method', 'route', 'status'],
  buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
  registers: [registry],
});

export const jobRuns = new client.Counter({
  name: 'jobs_runs_total',
  help: 'Background job runs by kind and outcome (done, skipped, retry, failed)',
  labelNames: ['kind', 'outcome'],
  registers: [registry],
});

type Pool = { numUsed(): number; numFree(): number; numPendingAcquires(): number };

/** Every knex instance the process serves from (several apps may live in one process, e.g. tests). */
const watched = new Map<Knex, Pool | undefined>();

new client.Gauge({
  name: 'db_pool_connections',
  help: 'Database pool connections by state',
  labelNames: ['state'],
  registers: [registry],
  collect() {
    let used = 0;
    let free = 0;
    let pending = 0;
    for (const [db, initial] of watched) {
      const p = (db.client as { pool?: Pool }).pool ?? initial;
      if (!p) continue;
      used += p.numUsed();
      free += p.numFree();
      pending += p.numPendingAcquires();
    }
    this.set({ state: 'used' }, used);
    this.set({ state: 'free' }, free);
    this.set({ state: 'pending' }, pending);
  },
});

/** Adds a pool to the db_pool_connections gauge (registering the gauge twice would throw). */
export function watchPool(db: Knex): void {
  watched.set(db, (db.client as { pool?: Pool }).pool);
}
