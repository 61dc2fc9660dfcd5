/**
 * npm run import -- <files or folders>: posts FHIR transaction/batch Bundles to a running server.
 * See HELP below. `importPaths` is the programmatic entry point (used by the tests).
 */
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import cliProgress from 'cli-progress';
import { localToken } from '../auth/local-token';

const HELP = `Usage: npm run import -- [options] <file or folder>...

Posts FHIR R4 Bundles of type "transaction" or "batch" to a running server, one HTTP request per
Bundle (POST [base]). Files: *.json or *.json.gz. Folders are searched recursively; their files are
taken in name order. Bundles whose file name starts with "00-" (e.g. Synthea's hospital and
practitioner support bundles) are loaded first, one at a time, before any other bundle starts.

Options:
  --url <base>         FHIR base URL (default: $FHIR_BASE_URL or http://localhost:8080/fhir/demo)
  --token <jwt>        access token (default: $FHIR_TOKEN, else a system/*.* token signed with
                       this machine's server key: DATA_DIR/SIGNING_KEY as for the server)
  --concurrency <n>    bundles in flight at once (default 2)
  --quiet              no progress output, only the summary
  -h, --help           this text

The import stops at the first failed bundle and exits with status 1, naming the file, the HTTP
status and the server's OperationOutcome diagnostics. In a batch, an entry whose response status
is 4xx/5xx also counts as a failure (the entry index and message are reported).

With --concurrency above 1 the other bundles may finish in any order. Data sets that must load
in a set order (e.g. one whose conditional references would become ambiguous once another set
adds resources with the same identifiers) are best imported with one run each.

Examples:
  npm run import -- --url http://localhost:8080/fhir/demo ./synthea/blaze-2021
  FHIR_BASE_URL=http://localhost:8080/fhir/demo npm run import -- --concurrency 4 ./bundles/patient-1.json.gz
`;

export interface ImportOptions {
  baseUrl: string;
  /** Bearer token sent with every Bundle. */
  token?: string;
  /** Bundles in flight at once (default 2). */
  concurrency?: number;
  /** No progress output. */
  quiet?: boolean;
  /** Called with every successful response Bundle (e.g. to collect the Locations). */
  onResponse?: (file: string, response: ResponseBundle) => void;
  /** Where progress goes (default process.stderr). */
  stream?: NodeJS.WriteStream;
}

export interface ImportSummary {
  bundles: number;
  /** Entries processed per resource type (created or, for a matched conditional create, found), sorted by type. */
  resources: Record<string, number>;
  /** Of those, the ones the server answered 201 Created. */
  created: Record<string, number>;
  total: number;
  seconds: number;
  perSecond: number;
}

interface ResponseEntry {
  response?: { status?: string; location?: string; outcome?: OperationOutcome };
}
export interface ResponseBundle {
  resourceType: string;
  type?: string;
  entry?: ResponseEntry[];
}
interface OperationOutcome {
  resourceType: 'OperationOutcome';
  issue?: Array<{ severity?: string; code?: string; diagnostics?: string; details?: { text?: string } }>;
}
interface RequestBundle {
  resourceType?: string;
  type?: string;
  entry?: Array<{ resource?: { resourceType?: string }; request?: { method?: string; url?: string } }>;
}

export class ImportError extends Error {
  constructor(
    message: string,
    readonly file?: string,
    readonly summary?: ImportSummary,
  ) {
    super(message);
    this.name = 'ImportError';
  }
}

const BUNDLE_FILE = /\.json(\.gz)?$/i;

/** The files to import, in order: arguments in the order given, folder contents by name. */
export function collectFiles(paths: string[]): string[] {
  const out: string[] = [];
  const walk = (dir: string) => {
    const names = fs.readdirSync(dir, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const d of names) {
      const p = path.join(dir, d.name);
      if (d.isDirectory()) walk(p);
      else if (d.isFile() && BUNDLE_FILE.test(d.name)) out.push(p);
    }
  };
  for (const p of paths) {
    let st: fs.Stats;
    try {
      st = fs.statSync(p);
    } catch {
      throw new ImportError(`${p}: no such file or folder`, p);
    }
    if (st.isDirectory()) walk(p);
    else out.push(p);
  }
  return [...new Set(out)];
}

export const isSupportBundle = (file: string) => path.basename(file).startsWith('00-');

function readBundle(file: string): { text: string; bundle: RequestBundle } {
  let buf: Buffer;
  try {
    buf = fs.readFileSync(file);
    if (/\.gz$/i.test(file) || (buf[0] === 0x1f && buf[1] === 0x8b)) buf = zlib.gunzipSync(buf);
  } catch (e) {
    throw new ImportError(`${file}: cannot read: ${(e as Error).message}`, file);
  }
  const text = buf.toString('utf8');
  let bundle: RequestBundle;
  try {
    bundle = JSON.parse(text);
  } catch (e) {
    throw new ImportError(`${file}: not valid JSON: ${(e as Error).message}`, file);
  }
  if (!bundle || typeof bundle !== 'object' || bundle.resourceType !== 'Bundle') {
    throw new ImportError(`${file}: not a FHIR Bundle (resourceType is ${JSON.stringify(bundle?.resourceType)})`, file);
  }
  if (bundle.type !== 'transaction' && bundle.type !== 'batch') {
    throw new ImportError(`${file}: Bundle.type is ${JSON.stringify(bundle.type)}; only transaction and batch Bundles can be imported`, file);
  }
  return { text, bundle };
}

function outcomeText(o: unknown): string {
  const oo = o as OperationOutcome | undefined;
  if (!oo || oo.resourceType !== 'OperationOutcome' || !oo.issue?.length) return '';
  return oo.issue
    .map((i) => [i.severity, i.code].filter(Boolean).join('/') + ': ' + (i.diagnostics ?? i.details?.text ?? '(no diagnostics)'))
    .join('; ');
}

const typeOfLocation = (loc?: string) => (loc ? /(?:^|\/)([A-Z][A-Za-z]+)\/[^/]+(?:\/_history\/[^/]+)?$/.exec(loc)?.[1] : undefined);

async function postBundle(file: string, baseUrl: string, text: string, bundle: RequestBundle, token?: string): Promise<ResponseBundle> {
  let res: Response;
  try {
    res = await fetch(baseUrl, {
      method: 'POST',
      headers: {
        'Content-Type': 'application/fhir+json',
        Accept: 'application/fhir+json',
        Prefer: 'return=minimal',
        ...(token ? { Authorization: `Bearer ${token}` } : {}),
      },
      body: text,
    });
  } catch (e) {
    const cause = (e as { cause?: { code?: string; message?: string } }).cause;
    throw new ImportError(`${file}: cannot reach ${baseUrl}: ${cause?.code ?? cause?.message ?? (e as Error).message}`, file);
  }
  const body = await res.text();
  let json: unknown;
  try {
    json = body ? JSON.parse(body) : undefined;
  } catch {
    json = undefined;
  }
  if (!res.ok) {
    const why = outcomeText(json) || body.slice(0, 500) || '(empty body)';
    throw new ImportError(`${file}: the server answered HTTP ${res.status} ${res.statusText}: ${why}`, file);
  }
  const rb = json as ResponseBundle | undefined;
  const expected = `${bundle.type}-response`;
  if (!rb || rb.resourceType !== 'Bundle' || rb.type !== expected) {
    throw new ImportError(`${file}: expected a ${expected} Bundle, got ${rb ? `${rb.resourceType} ${rb.type ?? ''}` : 'no JSON'}`, file);
  }
  const n = bundle.entry?.length ?? 0;
  if ((rb.entry?.length ?? 0) !== n) {
    throw new ImportError(`${file}: sent ${n} entries but the ${expected} has ${rb.entry?.length ?? 0}`, file);
  }
  (rb.entry ?? []).forEach((e, i) => {
    const status = e.response?.status ?? '';
    if (!/^[123]\d\d/.test(status)) {
      const req = bundle.entry![i].request;
      const why = outcomeText(e.response?.outcome) || '(no OperationOutcome)';
      throw new ImportError(`${file}: entry ${i} (${req?.method} ${req?.url}) failed with status ${status || '(none)'}: ${why}`, file);
    }
  });
  return rb;
}

function sortedRecord(m: Map<string, number>): Record<string, number> {
  return Object.fromEntries([...m.entries()].sort(([a], [b]) => (a < b ? -1 : 1)));
}

interface Progress {
  tick(bundles: number, resources: number): void;
  stop(): void;
}

function progress(total: number, opts: ImportOptions): Progress {
  const stream = opts.stream ?? process.stderr;
  const started = Date.now();
  if (opts.quiet) return { tick() {}, stop() {} };
  if (stream.isTTY) {
    const bar = new cliProgress.SingleBar(
      {
        stream,
        format: 'import [{bar}] {value}/{total} bundles | {resources} resources | {rate}/s | {duration_formatted}',
        hideCursor: true,
        clearOnComplete: false,
      },
      cliProgress.Presets.shades_classic,
    );
    bar.start(total, 0, { resources: 0, rate: 0 });
    return {
      tick(bundles, resources) {
        const rate = Math.round(resources / Math.max(0.001, (Date.now() - started) / 1000));
        bar.update(bundles, { resources, rate });
      },
      stop: () => bar.stop(),
    };
  }
  let last = 0;
  return {
    tick(bundles, resources) {
      const now = Date.now();
      if (now - last < 5000 && bundles !== total) return;
      last = now;
      const s = (now - started) / 1000;
      stream.write(`import: ${bundles}/${total} bundles, ${resources} resources, ${Math.round(resources / Math.max(s, 0.001))}/s\n`);
    },
    stop() {},
  };
}

/** Imports every Bundle under `paths`; rejects with an ImportError at the first failure. */
export async function importPaths(paths: string[], opts: ImportOptions): Promise<ImportSummary> {
  const baseUrl = opts.baseUrl.replace(/\/+$/, '');
  const concurrency = Math.max(1, Math.floor(opts.concurrency ?? 2));
  const files = collectFiles(paths);
  const support = files.filter(isSupportBundle);
  const rest = files.filter((f) => !isSupportBundle(f));
  const started = Date.now();
  const byType = new Map<string, number>();
  const createdByType = new Map<string, number>();
  let bundles = 0;
  let total = 0;
  const bar = progress(files.length, opts);
  const summary = (): ImportSummary => {
    const seconds = (Date.now() - started) / 1000;
    return {
      bundles,
      resources: sortedRecord(byType),
      created: sortedRecord(createdByType),
      total,
      seconds: Math.round(seconds * 1000) / 1000,
      perSecond: Math.round(total / Math.max(seconds, 0.001)),
    };
  };

  const one = async (file: string) => {
    const { text, bundle } = readBundle(file);
    const rb = await postBundle(file, baseUrl, text, bundle, opts.token);
    (rb.entry ?? []).forEach((e, i) => {
      const req = bundle.entry![i];
      if (['GET', 'HEAD', 'DELETE'].includes((req.request?.method ?? '').toUpperCase())) return;
      const type = req.resource?.resourceType ?? typeOfLocation(e.response?.location) ?? 'unknown';
      byType.set(type, (byType.get(type) ?? 0) + 1);
      if (e.response?.status?.startsWith('201')) createdByType.set(type, (createdByType.get(type) ?? 0) + 1);
      total++;
    });
    bundles++;
    opts.onResponse?.(file, rb);
    bar.tick(bundles, total);
  };

  let failure: unknown;
  try {
    for (const f of support) await one(f);
    let next = 0;
    const worker = async () => {
      while (failure === undefined && next < rest.length) {
        const f = rest[next++];
        try {
          await one(f);
        } catch (e) {
          failure ??= e;
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(concurrency, rest.length) }, worker));
  } catch (e) {
    failure ??= e;
  } finally {
    bar.stop();
  }
  if (failure !== undefined) {
    const e = failure instanceof ImportError ? failure : new ImportError(String((failure as Error)?.message ?? failure));
    throw new ImportError(e.message, e.file, summary());
  }
  return summary();
}

export function formatSummary(s: ImportSummary): string {
  const width = Math.max(8, ...Object.keys(s.resources).map((k) => k.length));
  const lines = Object.entries(s.resources).map(([t, n]) => {
    const created = s.created[t] ?? 0;
    return `  ${t.padEnd(width)} ${String(n).padStart(7)}${created !== n ? `  (${created} created, ${n - created} already present)` : ''}`;
  });
  return [
    `Imported ${s.bundles} bundle(s):`,
    ...lines,
    `  ${'total'.padEnd(width)} ${String(s.total).padStart(7)}`,
    `${s.total} resources in ${s.seconds.toFixed(1)} s (${s.perSecond} resources/s)`,
    '',
  ].join('\n');
}

interface CliArgs {
  help: boolean;
  url: string;
  token?: string;
  concurrency: number;
  quiet: boolean;
  paths: string[];
}

function parseArgs(argv: string[]): CliArgs {
  const a: CliArgs = {
    help: false,
    url: process.env.FHIR_BASE_URL || 'http://localhost:8080/fhir/demo',
    token: process.env.FHIR_TOKEN || undefined,
    concurrency: 2,
    quiet: false,
    paths: [],
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const value = (name: string) => {
      const eq = arg.indexOf('=');
      if (eq > 0) return arg.slice(eq + 1);
      const v = argv[++i];
      if (v === undefined) throw new ImportError(`${name} needs a value (see --help)`);
      return v;
    };
    if (arg === '-h' || arg === '--help') a.help = true;
    else if (arg === '--quiet' || arg === '-q') a.quiet = true;
    else if (arg === '--url' || arg.startsWith('--url=')) a.url = value('--url');
    else if (arg === '--token' || arg.startsWith('--token=')) a.token = value('--token');
    else if (arg === '--concurrency' || arg.startsWith('--concurrency=')) {
      const v = value('--concurrency');
      const n = Number(v);
      if (!Number.isInteger(n) || n < 1) throw new ImportError(`--concurrency must be a positive integer, not "${v}"`);
      a.concurrency = n;
    } else if (arg === '--') continue;
    else if (arg.startsWith('-')) throw new ImportError(`Unknown option ${arg} (see --help)`);
    else a.paths.push(arg);
  }
  if (!/^https?:\/\//i.test(a.url)) throw new ImportError(`--url must be an http(s) URL, not "${a.url}"`);
  return a;
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  if (args.help) {
    process.stdout.write(HELP);
    return;
  }
  if (!args.paths.length) throw new ImportError('No files or folders given (see --help)');
  const token = args.token ?? (await localToken(args.url.replace(/\/+$/, '')));
  const s = await importPaths(args.paths, { baseUrl: args.url, token, concurrency: args.concurrency, quiet: args.quiet });
  process.stdout.write(formatSummary(s));
}

if (require.main === module) {
  main().catch((e) => {
    const err = e as ImportError;
    process.stderr.write(`\nImport failed: ${err?.message ?? e}\n`);
    if (err?.summary?.bundles) process.stderr.write(`(${err.summary.bundles} bundle(s), ${err.summary.total} resources were imported before the failure)\n`);
    process.exit(1);
  });
}
