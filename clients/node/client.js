// A small graph-mailer client in Node.js: what every calling service needs.
'use strict';

const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PROTO = path.join(__dirname, '..', '..', 'proto', 'graphmailer', 'v1', 'mailer.proto');

const definition = protoLoader.loadSync(PROTO, {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
  includeDirs: [path.join(__dirname, '..', '..', 'proto')],
});
const { graphmailer } = grpc.loadPackageDefinition(definition);

/** FAILED_PRECONDITION: an operator must act (connect the mailbox, add a permission). */
class SetupRequired extends Error {}

/**
 * UNAUTHENTICATED or PERMISSION_DENIED: the key is missing or wrong, or this caller may not do
 * this (send as that mailbox, Connect). Retrying cannot help.
 */
class NotAllowed extends Error {}

/**
 * A Mailer client presenting the caller key `key` (from the operator's `graph-mailer new-key`).
 * With `rootCertificates` (a Buffer with the PEM of the CA that signed the service's
 * certificate) the channel is TLS and the key travels as call credentials; without, plaintext
 * (only on one host, or inside a mesh that encrypts).
 */
function client(address, { key, rootCertificates } = {}) {
  const bearer = key
    ? grpc.credentials.createFromMetadataGenerator((_params, done) => {
        const metadata = new grpc.Metadata();
        metadata.add('authorization', `Bearer ${key}`);
        done(null, metadata);
      })
    : null;
  if (rootCertificates) {
    const tls = grpc.credentials.createSsl(rootCertificates);
    return new graphmailer.v1.Mailer(address, bearer ? grpc.credentials.combineChannelCredentials(tls, bearer) : tls);
  }
  const options = bearer ? { interceptors: [keyInterceptor(key)] } : {};
  return new graphmailer.v1.Mailer(address, grpc.credentials.createInsecure(), options);
}

/** Adds the key to every call on a plaintext channel (call credentials need TLS). */
function keyInterceptor(key) {
  return (options, nextCall) =>
    new grpc.InterceptingCall(nextCall(options), {
      start(metadata, listener, next) {
        metadata.add('authorization', `Bearer ${key}`);
        next(metadata, listener);
      },
    });
}

function call(mailer, method, request, deadlineSeconds = 60) {
  const deadline = new Date(Date.now() + deadlineSeconds * 1000);
  return new Promise((resolve, reject) => {
    mailer[method](request, { deadline }, (error, response) => (error ? reject(error) : resolve(response)));
  });
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Sends with retries on UNAVAILABLE and RESOURCE_EXHAUSTED. Give the request an
 * idempotency_key: then a retry after a lost answer cannot send twice. FAILED_PRECONDITION is
 * not retried: it needs a person.
 */
async function sendMail(mailer, request, { attempts = 5, deadlineSeconds = 60 } = {}) {
  let delay = 500;
  for (let attempt = 1; ; attempt += 1) {
    try {
      return await call(mailer, 'SendMail', request, deadlineSeconds);
    } catch (error) {
      if (error.code === grpc.status.FAILED_PRECONDITION) throw new SetupRequired(error.details);
      if (error.code === grpc.status.UNAUTHENTICATED || error.code === grpc.status.PERMISSION_DENIED) {
        throw new NotAllowed(error.details);
      }
      const retryable = error.code === grpc.status.UNAVAILABLE || error.code === grpc.status.RESOURCE_EXHAUSTED;
      if (!retryable || attempt >= attempts) throw error;
      await sleep(delay);
      delay = Math.min(delay * 2, 30000);
    }
  }
}

/** A message with an attachment and an idempotency key. */
function invoiceMail(mailbox, to, pdf, key) {
  return {
    mailbox,
    to: [{ address: to, name: 'Customer' }],
    cc: [{ address: 'accounts@example.org' }],
    subject: 'Your invoice',
    text_body: 'Your invoice is attached.',
    html_body: '<p>Your invoice is attached.</p>',
    attachments: [{ filename: 'invoice.pdf', content_type: 'application/pdf', content: pdf }],
    headers: { 'X-Invoice': key },
    idempotency_key: key,
  };
}

/** Starts connecting a mailbox; returns the link its owner must open. */
async function connect(mailer, mailbox) {
  try {
    const response = await call(mailer, 'Connect', { mailbox });
    return response.authorization_url;
  } catch (error) {
    if (error.code === grpc.status.FAILED_PRECONDITION) throw new SetupRequired(error.details);
    throw error;
  }
}

/** The service's status. */
function status(mailer, mailbox = '') {
  return call(mailer, 'Status', { mailbox });
}

/**
 * Puts a message in the outbox; resolves once it is durably stored. The service sends it as fast
 * as the mailbox's limits allow, retries, and never sends it twice: prefer this to sendMail for
 * anything that need not be sent before the call returns. Give the message an idempotency_key so
 * a retried queueMail queues it once.
 */
async function queueMail(mailer, message, { sendAt } = {}) {
  const request = { message };
  if (sendAt) request.send_at = { seconds: Math.floor(sendAt.getTime() / 1000), nanos: 0 };
  try {
    return await call(mailer, 'QueueMail', request);
  } catch (error) {
    if (error.code === grpc.status.FAILED_PRECONDITION) throw new SetupRequired(error.details);
    throw error;
  }
}

const FINAL_STATES = ['MESSAGE_STATE_SENT', 'MESSAGE_STATE_FAILED', 'MESSAGE_STATE_CANCELLED'];

/** What became of a queued message (its MessageStatus). */
function getMessage(mailer, messageId) {
  return call(mailer, 'GetMessage', { message_id: messageId });
}

/** Polls getMessage until the message is SENT, FAILED or CANCELLED. */
async function waitUntilFinal(mailer, messageId, { timeoutMs = 60000, pollMs = 200 } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const message = await getMessage(mailer, messageId);
    if (FINAL_STATES.includes(message.state) || Date.now() > deadline) return message;
    await sleep(pollMs);
  }
}

/**
 * Calls `onEvent(event)` for every state change after `afterSequence`, resuming after the last
 * sequence seen when the stream breaks. Returns a function that stops watching.
 */
function watchMessages(mailer, onEvent, { afterSequence = '0', mailbox = '', batchId = '' } = {}) {
  let last = afterSequence;
  let stream;
  let stopped = false;
  const open = () => {
    stream = mailer.WatchMessages({ after_sequence: last, mailbox, batch_id: batchId });
    stream.on('data', (event) => {
      last = event.sequence;
      onEvent(event);
    });
    stream.on('error', (error) => {
      if (!stopped && error.code === grpc.status.UNAVAILABLE) setTimeout(open, 500);
    });
  };
  open();
  return () => {
    stopped = true;
    stream.cancel();
  };
}

module.exports = {
  client,
  sendMail,
  invoiceMail,
  connect,
  status,
  queueMail,
  getMessage,
  waitUntilFinal,
  watchMessages,
  SetupRequired,
  NotAllowed,
  grpc,
};
