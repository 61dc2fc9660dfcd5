/**
 * Request rate limits (rate-limiter-flexible): per tenant per minute on the FHIR API, and per IP
 * on sign-in. Counted in Redis when REDIS_URL is set (shared by every process and replica), in
 * memory otherwise (then per process). If Redis goes away, an in-memory limiter stands in until
 * it is back. Limits come from the tenant's settings (defaults below); 0 switches a limit off.
 */
import Redis from 'ioredis';
import { RateLimiterAbstract, RateLimiterMemory, RateLimiterRedis, RateLimiterRes } from 'rate-limiter-flexible';
import { FhirError } from '../fhir/errors';
import { logger } from '../log';

export const DEFAULT_TENANT_REQUESTS_PER_MINUTE = 600;
export const DEFAULT_SIGN_IN_ATTEMPTS_PER_15_MINUTES = 5;

export class RateLimits {
  private limiters = new Map<string, RateLimiterAbstract>();
  private redis?: Redis;

  constructor(redisUrl?: string) {
    if (redisUrl) {
      // commandTimeout: a Redis that accepts the connection but stops answering must not hold
      // requests; the command fails and the in-memory insurance limiter counts instead.
      this.redis = new Redis(redisUrl, { enableOfflineQueue: false, maxRetriesPerRequest: 1, lazyConnect: false, commandTimeout: 500 });
      this.redis.on('error', (e) => logger.warn({ err: { message: e.message } }, 'rate limit store (Redis) unavailable; counting in memory'));
    }
  }

  private limiter(name: string, points: number, duration: number): RateLimiterAbstract {
    const id = `${name}:${points}:${duration}`;
    let l = this.limiters.get(id);
    if (!l) {
      const memory = new RateLimiterMemory({ keyPrefix: `rl:${name}`, points, duration });
      l = this.redis
        ? new RateLimiterRedis({ storeClient: this.redis, keyPrefix: `rl:${name}`, points, duration, insuranceLimiter: memory })
        : memory;
      this.limiters.set(id, l);
    }
    return l;
  }

  /** Counts one request; resolves undefined when allowed, else the seconds to wait. */
  async hit(name: string, key: string, points: number, durationSeconds: number): Promise<number | undefined> {
    if (!(points > 0)) return undefined;
    try {
      await this.limiter(name, points, durationSeconds).consume(key);
      return undefined;
    } catch (e) {
      if (e instanceof RateLimiterRes) return Math.max(1, Math.ceil(e.msBeforeNext / 1000));
      throw e;
    }
  }

  /** Throws 429 with Retry-After when the tenant's FHIR request budget for this minute is spent. */
  async tenantRequest(tenant: string, perMinute = DEFAULT_TENANT_REQUESTS_PER_MINUTE): Promise<void> {
    const wait = await this.hit('tenant', tenant, perMinute, 60);
    if (wait !== undefined) throw tooMany(wait, `This practice's API allows ${perMinute} requests per minute; retry in ${wait} s`);
  }

  /** For sign-in endpoints: 5 attempts per 15 minutes per IP (per tenant setting). */
  async signInAttempt(ip: string, perQuarterHour = DEFAULT_SIGN_IN_ATTEMPTS_PER_15_MINUTES): Promise<number | undefined> {
    return this.hit('signin', ip, perQuarterHour, 15 * 60);
  }

  async close(): Promise<void> {
    this.redis?.disconnect();
  }
}

export function tooMany(retryAfterSeconds: number, message: string): FhirError {
  const e = FhirError.of(429, 'throttled', message);
  e.headers['Retry-After'] = String(retryAfterSeconds);
  return e;
}
