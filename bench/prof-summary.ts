/**
 * Summarises a V8 .cpuprofile (from BENCH_CPU_PROF runs): self time by function and by
 * package/file, so you can see where a request's CPU goes.
 *   npx tsx bench/prof-summary.ts <file.cpuprofile> [topN] [lastSeconds]
 * lastSeconds: only count samples from the final N seconds of the profile (minus the last 0.5 s
 * of shutdown), e.g. the measured read phase of `BENCH_SCENARIOS=read`.
 */
import fs from 'node:fs';

interface Node {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
  children?: number[];
}
interface Profile {
  nodes: Node[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

const file = process.argv[2];
const top = Number(process.argv[3] ?? 30);
const lastSeconds = process.argv[4] ? Number(process.argv[4]) : undefined;
if (!file) {
  process.stderr.write('usage: npx tsx bench/prof-summary.ts <file.cpuprofile> [topN]\n');
  process.exit(2);
}
const prof = JSON.parse(fs.readFileSync(file, 'utf8')) as Profile;
const byId = new Map(prof.nodes.map((n) => [n.id, n]));
const self = new Map<number, number>();
const at: number[] = [];
let t = prof.startTime;
for (let i = 0; i < prof.samples.length; i++) at.push((t += prof.timeDeltas[i] ?? 0));
const to = prof.endTime - 500_000;
const from = lastSeconds !== undefined ? to - lastSeconds * 1e6 : -Infinity;
for (let i = 0; i < prof.samples.length; i++) {
  if (lastSeconds !== undefined && (at[i] < from || at[i] > to)) continue;
  self.set(prof.samples[i], (self.get(prof.samples[i]) ?? 0) + (prof.timeDeltas[i] ?? 0));
}
const total = [...self.values()].reduce((a, b) => a + b, 0);

function bucket(url: string, fn: string): string {
  if (!url) return fn.startsWith('(') ? fn : '(native)';
  const nm = url.lastIndexOf('node_modules/');
  if (nm >= 0) {
    const rest = url.slice(nm + 'node_modules/'.length).split('/');
    return rest[0].startsWith('@') ? `${rest[0]}/${rest[1]}` : rest[0];
  }
  if (url.startsWith('node:')) return url;
  const m = /\/work\/main\/(.*)$/.exec(url);
  return m ? m[1] : url;
}

const fnTimes = new Map<string, number>();
const pkgTimes = new Map<string, number>();
for (const [id, us] of self) {
  const n = byId.get(id)!;
  const { functionName, url, lineNumber } = n.callFrame;
  const b = bucket(url, functionName);
  const key = `${functionName || '(anonymous)'}  ${b}:${lineNumber + 1}`;
  fnTimes.set(key, (fnTimes.get(key) ?? 0) + us);
  pkgTimes.set(b, (pkgTimes.get(b) ?? 0) + us);
}
const pct = (us: number) => `${((100 * us) / total).toFixed(1).padStart(5)}%`;
const idle = [...fnTimes.entries()].filter(([k]) => k.startsWith('(idle)')).reduce((a, [, v]) => a + v, 0);
process.stdout.write(`${file}\nsampled ${(total / 1e6).toFixed(2)} s, idle ${pct(idle)}\n\nself time by package/file:\n`);
for (const [k, v] of [...pkgTimes.entries()].sort((a, b) => b[1] - a[1]).slice(0, top)) process.stdout.write(`  ${pct(v)}  ${k}\n`);
process.stdout.write(`\nself time by function:\n`);
for (const [k, v] of [...fnTimes.entries()].sort((a, b) => b[1] - a[1]).slice(0, top)) process.stdout.write(`  ${pct(v)}  ${k}\n`);
