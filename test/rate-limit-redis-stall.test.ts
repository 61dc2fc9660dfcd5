/**
 * A Redis that accepts the connection and then stops answering must not hold FHIR requests: the
 * rate limiter's command times out (commandTimeout) and the in-memory limiter counts instead.
 * The "Redis" here answers the client's handshake (CLIENT SETINFO, the INFO ready check) and
 * nothing after it.
 */
import net from 'node:net';
import { startTestServer, TestServer } from './helpers/test-server';

let s: TestServer;
let stalled: net.Server;
const sockets = new Set<net.Socket>();

beforeAll(async () => {
  stalled = net.createServer((sock) => {
    sockets.add(sock);
    let answered = false;
    sock.on('data', (d) => {
      if (answered) return; // after the ready check: silence, every command waits for ever
      const text = d.toString();
      for (let i = 0; i < (text.match(/SETINFO/gi) ?? []).length; i++) sock.write('+OK\r\n');
      if (/\$4\r\ninfo\r\n/i.test(text)) {
        answered = true;
        const info = '# Server\r\nredis_version:7.0.0\r\n# Persistence\r\nloading:0\r\n';
        sock.write(`$${Buffer.byteLength(info)}\r\n${info}\r\n`);
      }
    });
  });
  await new Promise<void>((r) => stalled.listen(0, '127.0.0.1', () => r()));
  const port = (stalled.address() as net.AddressInfo).port;
  s = await startTestServer({ REDIS_URL: `redis://127.0.0.1:${port}` });
  await s.setSettings({ rateLimitPerMinute: 600 }); // the limiter on, for this tenant
});
afterAll(async () => {
  await s?.close();
  for (const sock of sockets) sock.destroy();
  await new Promise((r) => stalled.close(r));
});

test('requests are answered within the command timeout (500 ms), counted in memory', async () => {
  await new Promise((r) => setTimeout(r, 300)); // let the client pass its ready check
  const t0 = Date.now();
  const r = await s.http.get(`${s.base}/Patient?_count=1`);
  expect(r.status).toBe(200);
  expect(Date.now() - t0).toBeLessThan(5000);
});
