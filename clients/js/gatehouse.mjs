// Starts a real Gatehouse for the client suites and signs access tokens with its
// development key, as the auth endpoints will once they land.
import { spawn } from 'node:child_process';
import { createPrivateKey, sign } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

const binary = process.env.GATEHOUSE_BIN;
if (!binary) throw new Error('GATEHOUSE_BIN must name the gatehouse binary');

export async function startGatehouse(configFile) {
  const dataDir = mkdtempSync(join(tmpdir(), 'gatehouse-js-'));
  const child = spawn(
    binary,
    ['--config', configFile, '--data-dir', dataDir, 'serve', '--listen', '127.0.0.1:0'],
    {
      stdio: ['ignore', 'ignore', 'pipe'],
      // Only what the suite chooses: PostgreSQL when GATEHOUSE_DATABASE_URL names one.
      env: Object.fromEntries(
        Object.entries({ PATH: process.env.PATH, GATEHOUSE_DATABASE_URL: process.env.GATEHOUSE_DATABASE_URL })
          .filter(([, value]) => value !== undefined),
      ),
    },
  );
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('gatehouse did not start in 20 s')), 20_000);
    child.on('exit', (code) => reject(new Error(`gatehouse exited with ${code}`)));
    createInterface({ input: child.stderr }).on('line', (line) => {
      const match = line.match(/API URL:\s+(\S+)/);
      if (match) {
        clearTimeout(timer);
        resolve(match[1]);
      }
    });
  });
  const read = (file) => readFileSync(join(dataDir, file), 'utf8').trim();
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
    publishableKey: read('publishable.key'),
    secretKey: read('secret.key'),
    tokenFor(userId) {
      const now = Math.floor(Date.now() / 1000);
      const header = b64({ alg: 'ES256', typ: 'JWT', kid: current.kid });
      const claims = b64({
        sub: userId, role: 'authenticated', aud: 'authenticated',
        iss: `${url}/auth/v1`, iat: now, exp: now + 600,
      });
      const signature = sign('sha256', Buffer.from(`${header}.${claims}`), {
        key: privateKey,
        dsaEncoding: 'ieee-p1363',
      }).toString('base64url');
      return `${header}.${claims}.${signature}`;
    },
    async stop() {
      child.kill('SIGTERM');
      await new Promise((resolve) => child.once('exit', resolve));
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
