/** The scheduling operations as the resource modules register them (resources/Appointment.ts, PractitionerRole.ts). */
import type { ModuleOperation } from '../../resources/module';
import { badRequest } from '../fhir/errors';
import { permit } from '../fhir/authorize';
import { run } from '../fhir/interactions';
import type { FhirResponse, TenantContext } from '../fhir/types';
import { store } from '../store/resource-store';
import { bookOperation, cancelOperation, rescheduleOperation } from './book';
import { findOperation } from './find';
import { regenerateAll, regenerateSlots, RegenerateResult } from './slots';
// the appointment emails follow the operations' bookings (subscribes on import)
import './notices';

const OD = 'urn:fhir-practice-server:OperationDefinition/';

export const appointmentOperations: ModuleOperation[] = [
  { name: 'find', level: ['type'], affectsState: false, definition: `${OD}Appointment-find`, handler: (ctx, req) => findOperation(ctx, req) },
  { name: 'book', level: ['type'], affectsState: true, definition: `${OD}Appointment-book`, handler: (ctx, req) => bookOperation(ctx, req) },
  { name: 'cancel', level: ['instance'], affectsState: true, definition: `${OD}Appointment-cancel`, handler: (ctx, req, t) => cancelOperation(ctx, req, t.id!) },
  { name: 'reschedule', level: ['instance'], affectsState: true, definition: `${OD}Appointment-reschedule`, handler: (ctx, req, t) => rescheduleOperation(ctx, req, t.id!) },
];

function summary(results: RegenerateResult[]): FhirResponse {
  const n = (k: keyof RegenerateResult) => results.reduce((a, r) => a + (r[k] as number), 0);
  return {
    status: 200,
    headers: {},
    body: {
      resourceType: 'Parameters',
      parameter: [
        { name: 'schedules', valueInteger: results.length },
        { name: 'created', valueInteger: n('created') },
        { name: 'updated', valueInteger: n('updated') },
        { name: 'removed', valueInteger: n('removed') },
        { name: 'kept', valueInteger: n('kept') },
      ],
    },
  };
}

async function regenerate(ctx: TenantContext, id?: string): Promise<FhirResponse> {
  permit(ctx, 'PractitionerRole', 'u');
  permit(ctx, 'Slot', 'c');
  const results = await run(ctx, async (tx) => {
    if (!id) return regenerateAll(tx, ctx);
    const v = await store.read(tx, 'PractitionerRole', id);
    if (!v) throw badRequest(`PractitionerRole/${id} is not known`);
    const r = await regenerateSlots(tx, ctx, id, v.deleted ? null : JSON.parse(v.json!));
    return r ? [r] : [];
  });
  return summary(results);
}

export const practitionerRoleOperations: ModuleOperation[] = [
  {
    name: 'regenerate-slots',
    level: ['type', 'instance'],
    affectsState: true,
    definition: `${OD}PractitionerRole-regenerate-slots`,
    handler: (ctx, _req, t) => regenerate(ctx, t.id),
  },
];
