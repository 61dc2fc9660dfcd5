/** The Postgres database the test suite uses (created by global-setup when missing). */
export const TEST_DATABASE_URL = process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/fhir_test';
