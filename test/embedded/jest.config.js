/** Smoke suite for the quick start: the real `npm start` on embedded PGlite (no DATABASE_URL). */
module.exports = {
  rootDir: '../..',
  testEnvironment: 'node',
  transform: { '^.+\\.ts$': ['ts-jest', { diagnostics: false }] },
  testMatch: ['<rootDir>/test/embedded/**/*.test.ts'],
  testTimeout: 120000,
  maxWorkers: 1,
};
