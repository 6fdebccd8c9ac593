#!/usr/bin/env node
// Realtime under load: `node bench/realtime.mjs` (or `bench/realtime`).
//
// Starts Gatehouse (release build) on 127.0.0.1 with the shop's tables and opens
// 1,000 WebSockets (vsn 1.0.0) on one channel, each subscribed to the orders'
// inserts: half as the user who writes the orders (entitled to every row), half
// as 500 other users (entitled to none). Then, for the baseline of the same run,
// the server broadcasts to the channel through /realtime/v1/api/broadcast (fan-out
// with no policy to decide), and then the writer inserts orders at a steady rate.
// Reported: commit-to-delivery latency p50/p99 (the payload's commit_timestamp
// against the arrival; the broadcasts' send time for the baseline), deliveries
// per second, the server's resident memory per 1,000 idle connections, and the
// deliveries to clients not entitled (must be 0). Writes bench/realtime.json.
// With ACROSS=1 (PostgreSQL only) the sockets hold on a second instance of the
// same deployment while the writes and broadcasts go to the first: the figures
// are then across instances.
// Bounded: a fixed number of sockets and messages; everything on 127.0.0.1.
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const target = process.env.CARGO_TARGET_DIR ?? join(root, 'target');
process.env.GATEHOUSE_BIN ??= join(target, 'release', 'gatehouse');
const { default: ws } = await import(join(root, 'clients/js/node_modules/ws/index.js'));
const { startGatehouse } = await import(join(root, 'clients/js/gatehouse.mjs'));

const SOCKETS = Number(process.env.SOCKETS ?? 1000);
const MESSAGES = Number(process.env.MESSAGES ?? 200);
const PER_SECOND = Number(process.env.PER_SECOND ?? 20);

const work = mkdtempSync(join(tmpdir(), 'gatehouse-bench-realtime-'));
const config = join(work, 'gatehouse.toml');
writeFileSync(config, `schema_files = ["${root}/examples/shop/tables.toml"]
[rate_limits]
enabled = false
[realtime]
max_connections_per_address = ${SOCKETS + 10}
max_connections_per_user = ${SOCKETS + 10}
`);

const rssKb = (pid) => Number(readFileSync(`/proc/${pid}/status`, 'utf8').match(/VmRSS:\s+(\d+)/)[1]);
const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const percentile = (values, p) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
};

if (!process.env.SKIP_BUILD) {
  execFileSync('cargo', ['build', '--release', '-q', '-p', 'gatehouse-server'], { cwd: root, stdio: 'inherit' });
}
const server = await startGatehouse(config);
try {
  const across = Boolean(process.env.ACROSS);
  const front = across ? await server.twin() : server;
  await pause(500);
  const idleBefore = rssKb(front.pid);
  const writer = randomUUID();
  const url = `${front.url.replace('http', 'ws')}/realtime/v1/websocket?apikey=${server.publishableKey}&vsn=1.0.0`;
  const sockets = [];
  const latencies = { changes: [], broadcast: [] };
  let leaks = 0;
  let delivered = 0;
  for (let at = 0; at < SOCKETS; at += 1) {
    const entitled = at < SOCKETS / 2;
    const socket = new ws(url);
    const joined = new Promise((resolve, reject) => {
      socket.on('message', (data) => {
        const message = JSON.parse(data.toString());
        if (message.event === 'phx_reply' && message.ref === 'join') {
          if (message.payload.status === 'ok') resolve();
          else reject(new Error(JSON.stringify(message.payload)));
        } else if (message.event === 'postgres_changes') {
          delivered += 1;
          if (!entitled) leaks += 1;
          latencies.changes.push(Date.now() - Date.parse(message.payload.data.commit_timestamp));
        } else if (message.event === 'broadcast') {
          latencies.broadcast.push(Date.now() - message.payload.payload.sent_at);
        }
      });
      socket.on('error', reject);
    });
    await new Promise((resolve) => socket.on('open', resolve));
    socket.send(JSON.stringify({
      topic: 'realtime:orders', event: 'phx_join', ref: 'join', join_ref: 'join',
      payload: {
        config: { postgres_changes: [{ event: 'INSERT', schema: 'public', table: 'orders' }] },
        access_token: server.tokenFor(entitled ? writer : randomUUID(), 3600),
      },
    }));
    await joined;
    sockets.push(socket);
  }
  const beat = setInterval(() => {
    for (const socket of sockets) socket.send(JSON.stringify({ topic: 'phoenix', event: 'heartbeat', payload: {}, ref: 'beat' }));
  }, 20_000);
  await pause(1000);
  const idleWith = rssKb(front.pid);

  const paced = async (send) => {
    const started = Date.now();
    for (let n = 0; n < MESSAGES; n += 1) {
      await pause(Math.max(0, started + (n * 1000) / PER_SECOND - Date.now()));
      await send(n);
    }
    await pause(2000);
    return (Date.now() - started) / 1000;
  };
  const service = { apikey: server.secretKey, authorization: `Bearer ${server.secretKey}`, 'content-type': 'application/json' };
  await paced(async () => {
    const body = { messages: [{ topic: 'orders', event: 'tick', payload: { sent_at: Date.now() } }] };
    const answer = await fetch(`${server.url}/realtime/v1/api/broadcast`, { method: 'POST', headers: service, body: JSON.stringify(body) });
    if (answer.status !== 202) throw new Error(`broadcast: ${answer.status}`);
  });
  const token = server.tokenFor(writer, 3600);
  const as = { apikey: server.publishableKey, authorization: `Bearer ${token}`, 'content-type': 'application/json' };
  const seconds = await paced(async (n) => {
    const answer = await fetch(`${server.url}/rest/v1/orders`, { method: 'POST', headers: as, body: JSON.stringify({ total_cents: n }) });
    if (answer.status !== 201) throw new Error(`insert: ${answer.status} ${await answer.text()}`);
  });
  clearInterval(beat);
  const expected = MESSAGES * (SOCKETS / 2);
  const report = {
    across_instances: across,
    sockets: SOCKETS,
    inserts: MESSAGES,
    inserts_per_second: PER_SECOND,
    deliveries: delivered,
    deliveries_expected: expected,
    deliveries_per_second: Math.round(delivered / seconds),
    deliveries_to_clients_not_entitled: leaks,
    change_latency_ms: { p50: percentile(latencies.changes, 50), p99: percentile(latencies.changes, 99) },
    broadcast_latency_ms: { p50: percentile(latencies.broadcast, 50), p99: percentile(latencies.broadcast, 99) },
    server_rss_kb_per_1000_idle_connections: Math.round(((idleWith - idleBefore) / SOCKETS) * 1000),
    server_rss_kb_idle_before: idleBefore,
  };
  report.change_p99_against_broadcast_p99 = +(report.change_latency_ms.p99 / Math.max(1, report.broadcast_latency_ms.p99)).toFixed(2);
  console.log(JSON.stringify(report, null, 2));
  writeFileSync(join(root, 'bench', 'realtime.json'), `${JSON.stringify(report, null, 2)}\n`);
  for (const socket of sockets) socket.terminate();
} finally {
  await server.stop();
  rmSync(work, { recursive: true, force: true });
}
