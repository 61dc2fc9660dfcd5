import type { Binary } from 'fhir/r4';
import { defineResource, ruleIssue } from './module';

export default defineResource<Binary>({
  type: 'Binary',
  rules: (b) =>
    b.data !== undefined && !/^[A-Za-z0-9+/]*={0,2}$/.test(b.data.replace(/\s+/g, ''))
      ? [ruleIssue('Binary.data', 'Binary.data must be base64')]
      : [],
});
