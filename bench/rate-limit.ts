/**
 * npm run bench:ratelimit — what the per-tenant rate limiter costs a request (server/http/
 * rate-limit.ts): latency and CPU per tenantRequest() with Redis (REDIS_URL, default the local
 * one) and in memory, one at a time and 50 in flight, against a bare Redis PING on the same
 * connection settings (the baseline measured in the same run). Prints numbers; asserts nothing.
 */
import Redis from 'ioredis';
import { RateLimits } from '../server/http/rate-limit';

const N = Number(process.env.BENCH_RATELIMIT_N ?? 20000);
const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

function pct(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

async function measure(label: string, inFlight: number, fn: () => Promise<unknown>): Promise<void> {
  for (let i = 0; i < 500; i++) await fn(); // warm-up
  const lat: number[] = [];
  const cpu0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  let next = 0;
  await Promise.all(
    Array.from({ length: inFlight }, async () => {
      while (next++ < N) {
        const s = process.hrtime.bigint();
        await fn();
        lat.push(Number(process.hrtime.bigint() - s) / 1e6);
      }
    }),
  );
  const wall = Number(process.hrtime.bigint() - t0) / 1e6;
  const cpu = process.cpuUsage(cpu0);
  lat.sort((a, b) => a - b);
  const cpuPer = (cpu.user + cpu.system) / 1000 / lat.length;
  console.log(
    `${label.padEnd(40)} ${String(inFlight).padStart(3)}  ${Math.round((lat.length / wall) * 1000).toString().padStart(7)}/s  p50 ${pct(lat, 50).toFixed(3)}  p99 ${pct(lat, 99).toFixed(3)} ms  CPU ${cpuPer.toFixed(4)} ms/call`,
  );
}

async function main(): Promise<void> {
  console.log(`rate limiter cost, ${N} calls per row, node ${process.version}, Redis ${REDIS_URL}\n`);
  console.log(`${'what'.padEnd(40)} in-flight  calls/s  latency            CPU (this process)`);
  const ping = new Redis(REDIS_URL, { enableOfflineQueue: false, maxRetriesPerRequest: 1 });
  await new Promise((r) => ping.once('ready', r));
  const redisLimits = new RateLimits(REDIS_URL);
  const memoryLimits = new RateLimits(undefined);
  const tenant = `bench-rl-${process.pid}`;
  await new Promise((r) => setTimeout(r, 200));
  for (const inFlight of [1, 50]) {
    await measure('baseline: Redis PING', inFlight, () => ping.ping());
    await measure('tenantRequest(), Redis', inFlight, () => redisLimits.tenantRequest(tenant, 1e9));
    await measure('tenantRequest(), in memory', inFlight, () => memoryLimits.tenantRequest(tenant, 1e9));
  }
  await ping.del(`rl:tenant:${tenant}`);
  ping.disconnect();
  await redisLimits.close();
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
