import type { Practitioner } from 'fhir/r4';
import { defineResource } from './module';
import { calendarTokenOperation } from '../server/calendar/feed';

export default defineResource<Practitioner>({
  type: 'Practitioner',
  // the practitioner's iCalendar feed token (server/calendar/feed.ts)
  operations: [
    {
      name: 'calendar-token',
      level: ['instance'],
      affectsState: true,
      definition: 'urn:fhir-practice-server:OperationDefinition/calendar-token',
      handler: (ctx, req, t) => calendarTokenOperation(ctx, req, t.id!),
    },
  ],
});
