// Starts a real Gatehouse for the client suites and signs access tokens with its
// development key, as the auth endpoints will once they land.
import { execFileSync, spawn } from 'node:child_process';
import { createPrivateKey, sign } from 'node:crypto';
import { copyFileSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { createClient } from '@supabase/supabase-js';
import ws from 'ws';

const binary = process.env.GATEHOUSE_BIN;
if (!binary) throw new Error('GATEHOUSE_BIN must name the gatehouse binary');

let databasesMade = 0;

/// With GATEHOUSE_DATABASE_URL naming a PostgreSQL server, a database of its own
/// there for one server (suites declare different tables), dropped at its stop.
function freshDatabase() {
  const server = process.env.GATEHOUSE_DATABASE_URL;
  if (!server) return { env: {}, drop() {} };
  const name = `gatehouse_test_js_${process.pid}_${++databasesMade}`;
  const admin = new URL(server);
  admin.pathname = '/postgres';
  const psql = (sql) => execFileSync('psql', [admin.href, '-qc', sql]);
  psql(`CREATE DATABASE ${name}`);
  const url = new URL(server);
  url.pathname = `/${name}`;
  return {
    env: { GATEHOUSE_DATABASE_URL: url.href },
    drop: () => psql(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`),
  };
}

/// Runs the binary on `dataDir` until it says where it listens; resolves with
/// the child and its URL.
async function launch(configFile, dataDir, env, listen) {
  const child = spawn(
    binary,
    ['--config', configFile, '--data-dir', dataDir, 'serve', '--listen', listen],
    {
      stdio: ['ignore', 'ignore', 'pipe'],
      // Only what the suite chooses: PostgreSQL when GATEHOUSE_DATABASE_URL names one.
      env: Object.fromEntries(
        Object.entries({ PATH: process.env.PATH, ...env })
          .filter(([, value]) => value !== undefined),
      ),
    },
  );
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('gatehouse did not start in 20 s')), 20_000);
    const said = [];
    child.on('exit', (code) => reject(new Error(`gatehouse exited with ${code}: ${said.join('\n')}`)));
    createInterface({ input: child.stderr }).on('line', (line) => {
      said.push(line);
      const match = line.match(/Listening on:\s+(\S+)/);
      if (match) {
        clearTimeout(timer);
        resolve(`http://${match[1]}`);
      }
    });
  });
  return { child, url };
}

async function ended(child) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGTERM');
  await new Promise((resolve) => child.once('exit', resolve));
}

export async function startGatehouse(configFile, extraEnv = {}) {
  const dataDir = mkdtempSync(join(tmpdir(), 'gatehouse-js-'));
  const database = freshDatabase();
  const env = { ...database.env, ...extraEnv };
  let child;
  let url;
  try {
    ({ child, url } = await launch(configFile, dataDir, env, '127.0.0.1:0'));
  } catch (error) {
    database.drop();
    throw error;
  }
  const read = (file) => readFileSync(join(dataDir, file), 'utf8').trim();
  const twins = [];
  const keySet = JSON.parse(read('signing-keys.json'));
  const current = keySet.keys.find((key) => key.kid === keySet.current);
  const privateKey = createPrivateKey({
    key: Buffer.from(current.private_key, 'base64'),
    format: 'der',
    type: 'pkcs8',
  });
  const b64 = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
  return {
    url,
    /// The server process's id (it changes at a restart).
    get pid() {
      return child.pid;
    },
    publishableKey: read('publishable.key'),
    secretKey: read('secret.key'),
    /// An access token for `userId`, valid for `lifetime` seconds.
    tokenFor(userId, lifetime = 600) {
      const now = Math.floor(Date.now() / 1000);
      const header = b64({ alg: 'ES256', typ: 'JWT', kid: current.kid });
      const claims = b64({
        sub: userId, role: 'authenticated', aud: 'authenticated',
        iss: `${url}/auth/v1`, iat: now, exp: now + lifetime,
      });
      const signature = sign('sha256', Buffer.from(`${header}.${claims}`), {
        key: privateKey,
        dsaEncoding: 'ieee-p1363',
      }).toString('base64url');
      return `${header}.${claims}.${signature}`;
    },
    /// A second instance of the same deployment: the same database and keys
    /// (copied), a data directory and address of its own, `moreEnv` added.
    /// Stopped by this server's `stop` at the latest.
    async twin(moreEnv = {}) {
      const twinDir = mkdtempSync(join(tmpdir(), 'gatehouse-js-'));
      for (const file of readdirSync(dataDir)) {
        if (file.endsWith('.key') || file === 'signing-keys.json') {
          copyFileSync(join(dataDir, file), join(twinDir, file));
        }
      }
      // Behind one address, as a load balancer would put them: tokens name it.
      const twinEnv = { ...env, GATEHOUSE_PUBLIC_URL: url, ...moreEnv };
      const twin = await launch(configFile, twinDir, twinEnv, '127.0.0.1:0');
      const stopTwin = async () => {
        await ended(twin.child);
        rmSync(twinDir, { recursive: true, force: true });
      };
      twins.push(stopTwin);
      return { url: twin.url, pid: twin.child.pid, stop: stopTwin };
    },
    /// Stops the server and starts it again on the same address, data and database.
    async restart() {
      await ended(child);
      ({ child } = await launch(configFile, dataDir, env, new URL(url).host));
    },
    async stop() {
      for (const stopTwin of twins) await stopTwin();
      await ended(child);
      database.drop();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/// supabase-js clients of `server`: with the secret key, with the publishable
/// key, and `as(user)` signed in as that user id.
export function clientsOf(server) {
  // Node 20 has no WebSocket of its own; realtime is not used here but is built.
  const options = { auth: { persistSession: false, autoRefreshToken: false }, realtime: { transport: ws } };
  return {
    service: createClient(server.url, server.secretKey, options),
    anon: createClient(server.url, server.publishableKey, options),
    as: (user) =>
      createClient(server.url, server.publishableKey, {
        accessToken: async () => server.tokenFor(user),
        realtime: { transport: ws },
      }),
  };
}

/// A real SMTP server (aiosmtpd, from PyPI) writing what it receives to a maildir.
export async function startMailbox() {
  const { createServer, connect } = await import('node:net');
  const port = await new Promise((resolve) => {
    const probe = createServer().listen(0, '127.0.0.1', () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
  const root = mkdtempSync(join(tmpdir(), 'gatehouse-mail-'));
  // aiosmtpd's Mailbox creates the maildir (with tmp/, new/, cur/) itself.
  const dir = join(root, 'maildir');
  const child = spawn('python3', ['-m', 'aiosmtpd', '-n', '-l', `127.0.0.1:${port}`, '-c', 'aiosmtpd.handlers.Mailbox', dir], {
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  for (let attempt = 0; ; attempt++) {
    const up = await new Promise((resolve) => {
      const socket = connect(port, '127.0.0.1', () => { socket.end(); resolve(true); });
      socket.on('error', () => resolve(false));
    });
    if (up) break;
    if (attempt > 100) throw new Error('aiosmtpd did not start (pip install aiosmtpd)');
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  const seen = new Set();
  return {
    url: `smtp://127.0.0.1:${port}`,
    /// The next new message to `recipient` (with `subject`, when given),
    /// decoded: its first link and its code, where it has them.
    async next(recipient, subject) {
      for (let attempt = 0; attempt < 150; attempt++) {
        for (const folder of ['new', 'cur']) {
          let files = [];
          try { files = readdirSync(join(dir, folder)); } catch { continue; }
          for (const file of files) {
            const path = join(dir, folder, file);
            if (seen.has(path)) continue;
            const raw = readFileSync(path, 'utf8');
            if (!raw.toLowerCase().includes(`to: ${recipient}`)) continue;
            if (subject && !raw.includes(`Subject: ${subject}`)) continue;
            seen.add(path);
            const text = raw.replace(/=\r?\n/g, '').replace(/=([0-9A-F]{2})/g, (_, hex) => String.fromCharCode(parseInt(hex, 16)));
            const link = text.match(/https?:\/\/\S+\/auth\/v1\/verify\?[^\s"<]+/)?.[0].replace(/&amp;/g, '&');
            const code = text.match(/(?:Or enter this code:|^)\s*(?:<strong>)?(\d{6})/m)?.[1];
            return { link, code, raw };
          }
        }
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      throw new Error(`no email to ${recipient}`);
    },
    stop() {
      child.kill('SIGTERM');
      rmSync(root, { recursive: true, force: true });
    },
  };
}
