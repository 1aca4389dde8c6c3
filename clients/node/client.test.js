// Runs the Node example against the real graph-mailer binary in sandbox mode.
'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const gm = require('./client');

const ROOT = path.join(__dirname, '..', '..');
const BINARY = process.env.GRAPH_MAILER_BIN || path.join(ROOT, 'target', 'debug', 'graph-mailer');

function freePort() {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

async function startServer(grpcPort, callers) {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'gm-node-'));
  const httpPort = await freePort();
  const env = {
    PATH: process.env.PATH,
    GRAPH_MAILER_DATA_DIR: dataDir,
    GRAPH_MAILER_GRPC_ADDR: `127.0.0.1:${grpcPort}`,
    GRAPH_MAILER_HTTP_ADDR: `127.0.0.1:${httpPort}`,
    RUST_LOG: 'warn',
  };
  if (callers) {
    env.GRAPH_MAILER_CALLERS_FILE = path.join(dataDir, 'callers.toml');
    fs.writeFileSync(env.GRAPH_MAILER_CALLERS_FILE, callers);
  }
  const child = spawn(BINARY, [], { env, stdio: 'ignore' });
  const deadline = Date.now() + 20000;
  while (Date.now() < deadline) {
    try {
      const response = await fetch(`http://127.0.0.1:${httpPort}/readyz`);
      if (response.status === 200) return { child, dataDir };
    } catch {
      // not up yet
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error('graph-mailer did not start');
}

async function stopServer(server) {
  const exited = new Promise((resolve) => server.child.on('exit', resolve));
  server.child.kill('SIGTERM');
  assert.equal(await exited, 0);
  fs.rmSync(server.dataDir, { recursive: true, force: true });
}

let server;
let mailer;

before(async () => {
  const port = await freePort();
  server = await startServer(port);
  mailer = gm.client(`127.0.0.1:${port}`);
});

after(async () => {
  mailer.close();
  await stopServer(server);
});

test('a send with an attachment is written once under its idempotency key', async () => {
  const request = gm.invoiceMail('billing@contoso.com', 'customer@example.com', Buffer.from('%PDF-1.7 node'), 'inv-7');
  const first = await gm.sendMail(mailer, request);
  const again = await gm.sendMail(mailer, request);
  assert.equal(first.deduplicated, false);
  assert.equal(again.deduplicated, true);
  assert.equal(again.message_id, first.message_id);
  const dir = path.join(server.dataDir, 'sandbox', 'billing@contoso.com');
  const files = fs.readdirSync(dir).filter((f) => f.endsWith('.eml'));
  assert.equal(files.length, 1);
  const eml = fs.readFileSync(path.join(dir, files[0]), 'utf8');
  assert.match(eml, /^To: "?Customer"? <customer@example\.com>/m);
  assert.match(eml, /^Cc: <?accounts@example\.org>?/m);
  assert.match(eml, /^X-Invoice: inv-7/m);
  assert.match(eml, /filename="?invoice\.pdf"?/);
  assert.ok(eml.includes(Buffer.from('%PDF-1.7 node').toString('base64')));
});

test('status reports the sandbox and counts', async () => {
  await gm.sendMail(mailer, gm.invoiceMail('status@contoso.com', 'x@example.com', Buffer.from('1'), 's-1'));
  const status = await gm.status(mailer, 'status@contoso.com');
  assert.equal(status.transport, 'sandbox');
  assert.equal(status.mailboxes[0].sent_total, '1');
});

test('connect in the sandbox is a setup problem to report, not to retry', async () => {
  await assert.rejects(gm.connect(mailer, 'noreply@contoso.com'), (error) => {
    assert.ok(error instanceof gm.SetupRequired);
    assert.match(error.message, /GRAPH_MAILER_TENANT_ID/);
    return true;
  });
});

test('invalid input is INVALID_ARGUMENT naming the field', async () => {
  const bad = { mailbox: 'a@contoso.com', to: [{ address: 'bob@' }] };
  await assert.rejects(gm.sendMail(mailer, bad), (error) => {
    assert.equal(error.code, gm.grpc.status.INVALID_ARGUMENT);
    assert.match(error.details, /^to\[0\]\.address:/);
    return true;
  });
});

test('UNAVAILABLE is retried until the service is up', async () => {
  const port = await freePort();
  const late = gm.client(`127.0.0.1:${port}`);
  const starting = new Promise((resolve) => setTimeout(() => resolve(startServer(port)), 1000));
  try {
    const response = await gm.sendMail(late, gm.invoiceMail('late@contoso.com', 'x@example.com', Buffer.from('1'), 'late-1'), {
      attempts: 8,
      deadlineSeconds: 5,
    });
    assert.ok(response.message_id);
  } finally {
    late.close();
    await stopServer(await starting);
  }
});

test('with a callers file the key names the caller, who sends only as its mailbox', async () => {
  const key = 'gm_node-example-key-0000000000000000000000000';
  const digest = require('node:crypto').createHash('sha256').update(key).digest('hex');
  const port = await freePort();
  const guarded = await startServer(
    port,
    `[[caller]]\nname = "billing"\nkey_sha256 = "${digest}"\nrole = "sender"\nmailboxes = ["billing@contoso.com"]\n`,
  );
  const anonymous = gm.client(`127.0.0.1:${port}`);
  const keyed = gm.client(`127.0.0.1:${port}`, { key });
  try {
    await assert.rejects(
      gm.sendMail(anonymous, gm.invoiceMail('billing@contoso.com', 'x@example.com', Buffer.from('1'), 'k-0')),
      (error) => error instanceof gm.NotAllowed && /authorization/.test(error.message),
    );
    const sent = await gm.sendMail(keyed, gm.invoiceMail('billing@contoso.com', 'x@example.com', Buffer.from('1'), 'k-1'));
    assert.ok(sent.message_id);
    await assert.rejects(
      gm.sendMail(keyed, gm.invoiceMail('ceo@contoso.com', 'x@example.com', Buffer.from('1'), 'k-2')),
      (error) => error instanceof gm.NotAllowed && /caller billing may not send as ceo@contoso.com/.test(error.message),
    );
  } finally {
    anonymous.close();
    keyed.close();
    await stopServer(guarded);
  }
});

test('a queued message answers at once and is followed to SENT', async () => {
  const request = gm.invoiceMail('outbox@contoso.com', 'customer@example.com', Buffer.from('%PDF q'), 'q-7');
  const queued = await gm.queueMail(mailer, request);
  const again = await gm.queueMail(mailer, request);
  assert.equal(again.deduplicated, true);
  assert.equal(again.message_id, queued.message_id);
  const message = await gm.waitUntilFinal(mailer, queued.message_id);
  assert.equal(message.state, 'MESSAGE_STATE_SENT');
  const files = fs.readdirSync(path.join(server.dataDir, 'sandbox', 'outbox@contoso.com'));
  assert.equal(files.filter((f) => f.endsWith('.eml')).length, 1);
});

test('watchMessages streams each state of a queued message', async () => {
  const states = [];
  let id;
  const done = new Promise((resolve) => {
    const stop = gm.watchMessages(
      mailer,
      (event) => {
        if (id && event.message.message_id === id) {
          states.push(event.message.state);
          if (event.message.state === 'MESSAGE_STATE_SENT') {
            stop();
            resolve();
          }
        }
      },
      { mailbox: 'watch@contoso.com' },
    );
  });
  const queued = await gm.queueMail(mailer, gm.invoiceMail('watch@contoso.com', 'c@example.com', Buffer.from('w'), 'w-7'));
  id = queued.message_id;
  await done;
  assert.deepEqual(states.slice(-2), ['MESSAGE_STATE_SENDING', 'MESSAGE_STATE_SENT']);
});
