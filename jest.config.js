/** Tests run against real PostgreSQL (TEST_DATABASE_URL, default the local server) over real HTTP. */
// Packages published only as ES modules (jose 6, ...) are compiled to CommonJS for jest's module
// system; the server itself loads them natively (Node >= 20.19 has require(esm)).
const ESM_ONLY = ['jose', 'oidc-provider', 'openid-client', 'oauth4webapi'];
module.exports = {
  testEnvironment: 'node',
  transform: {
    '^.+\\.ts$': ['ts-jest', { diagnostics: false }],
    '^.+\\.m?js$': ['ts-jest', { diagnostics: false, tsconfig: { allowJs: true, module: 'commonjs', target: 'ES2022', isolatedModules: true } }],
  },
  transformIgnorePatterns: [`/node_modules/(?!(${ESM_ONLY.join('|')})/)`],
  testMatch: ['<rootDir>/**/*.test.ts'],
  testPathIgnorePatterns: ['/node_modules/', '<rootDir>/test/embedded/'],
  globalSetup: '<rootDir>/test/helpers/global-setup.ts',
  testTimeout: 120000,
  maxWorkers: 2,
};
