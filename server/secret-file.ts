/** A secret kept in a file of DATA_DIR/secrets (the signing key, the master key): created once. */
import fs from 'node:fs';
import path from 'node:path';

/** Writes `make()` to `file` (mode 600, folder 700) unless it exists. Returns true if it wrote it. */
export function ensureSecretFile(file: string, make: () => string): boolean {
  if (fs.existsSync(file)) return false;
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  try {
    fs.writeFileSync(file, make() + '\n', { mode: 0o600, flag: 'wx' });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e; // another process won the race
    return false;
  }
  return true;
}
