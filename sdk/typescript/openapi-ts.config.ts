import { defineConfig } from '@hey-api/openapi-ts';

// The TypeScript client of gigafab's API, generated from the document
// `gigafab openapi` prints (CI: .ci/openapi.sh).
export default defineConfig({
  input: '../../target/openapi.json',
  output: 'generated',
  plugins: ['@hey-api/typescript', '@hey-api/sdk', '@hey-api/client-fetch'],
});
