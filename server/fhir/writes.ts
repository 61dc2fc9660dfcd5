/**
 * Every FHIR write goes through here (interactions, transaction and batch entries, $restore and
 * the operations), so a resource module's write hook (resources/module.ts `onWrite`) runs for all
 * of them in the writing transaction: one place, nothing sprinkled over the call sites.
 */
import type { FhirResource as Resource } from 'fhir/r4';
import { registry } from '../../resources';
import type { WriteChange } from '../../resources/module';
import type { Tx } from '../db/tenant-tx';
import { store, WriteOptions, WriteResult } from '../store/resource-store';
import type { TenantContext } from './types';

/** True when writes of `type` have a hook (they then never take the single-statement create path). */
export function hasWriteHook(type: string): boolean {
  return Boolean(registry.get(type)?.module?.onWrite);
}

async function runHook(tx: Tx, ctx: TenantContext, change: WriteChange): Promise<void> {
  const hook = registry.get(change.type)?.module?.onWrite;
  if (hook) await hook(tx, ctx, change);
}

export const writes = {
  async create(tx: Tx, ctx: TenantContext, resource: Resource, opts: WriteOptions = {}): Promise<WriteResult> {
    const w = await store.create(tx, resource, opts);
    await runHook(tx, ctx, { type: w.type, id: w.id, interaction: 'create', resource: w.resource });
    return w;
  },

  async createMany(tx: Tx, ctx: TenantContext, items: Array<{ resource: Resource; id: string }>, opts: WriteOptions = {}): Promise<WriteResult[]> {
    const results = await store.createMany(tx, items, opts);
    const order = (w: WriteResult) => registry.get(w.type)?.module?.hookOrder ?? 0;
    const hooked = results.filter((w) => hasWriteHook(w.type));
    // stable: by hookOrder, then in entry order
    for (const w of hooked.map((w, i) => ({ w, i })).sort((a, b) => order(a.w) - order(b.w) || a.i - b.i).map((x) => x.w)) {
      await runHook(tx, ctx, { type: w.type, id: w.id, interaction: 'create', resource: w.resource });
    }
    return results;
  },

  async update(tx: Tx, ctx: TenantContext, resource: Resource, id: string, opts: WriteOptions = {}): Promise<WriteResult> {
    const w = await store.update(tx, resource, id, opts);
    const interaction = w.created ? 'create' : opts.method === 'PATCH' ? 'patch' : 'update';
    await runHook(tx, ctx, { type: w.type, id: w.id, interaction, resource: w.resource });
    return w;
  },

  async delete(tx: Tx, ctx: TenantContext, type: string, id: string, opts: { ifMatch?: number } = {}): Promise<WriteResult | undefined> {
    const w = await store.delete(tx, type, id, opts);
    if (w) await runHook(tx, ctx, { type, id, interaction: 'delete', resource: null });
    return w;
  },

  async restore(tx: Tx, ctx: TenantContext, type: string, id: string, opts: WriteOptions = {}): Promise<WriteResult> {
    const w = await store.restore(tx, type, id, opts);
    await runHook(tx, ctx, { type, id, interaction: 'restore', resource: w.resource });
    return w;
  },
};
