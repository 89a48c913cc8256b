// Shared helpers for the Tollgate end-to-end suite.
//
// Every test file starts its own `tollgate serve` on a fresh data directory and a free port,
// talks to it through the official `stripe` npm client (and raw node:http for what the client
// cannot send), and stops it in an `after()` hook.

import { spawn, execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes, randomUUID } from 'node:crypto';
import net from 'node:net';
import http from 'node:http';
import assert from 'node:assert/strict';
import Stripe from 'stripe';

const here = dirname(fileURLToPath(import.meta.url));
export const BIN = process.env.TOLLGATE_BIN
  ? resolve(process.env.TOLLGATE_BIN)
  : resolve(here, '../../build/tollgate');

// Every server we spawned and have not seen exit: killed hard if the test process goes away.
const live = new Set();
process.on('exit', () => {
  for (const child of live) {
    try { child.kill('SIGKILL'); } catch { /* already gone */ }
  }
});

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Waits, when the wall clock is within 2 s of a UTC minute's start, until 2 s past it. Usage is
 * counted by minute, and an ending at hh:mm:00 does not take the minute it starts (docs/API.md,
 * "Usage by minute"): a scenario in real time that sends usage and then ends its subscription
 * within a second would bill nothing when that second is hh:mm:00.
 */
export async function awayFromMinuteStart() {
  const into = Date.now() % 60000;
  if (into < 2000 || into > 58000) await sleep((62000 - into) % 60000);
}
export const nowSec = () => Math.floor(Date.now() / 1000);
export const uniq = (prefix = 'x') => `${prefix}_${randomBytes(6).toString('hex')}`;
export { randomUUID };

/** Runs `tollgate ARGS...` to completion; resolves {code, stdout, stderr}. */
export function runCli(args, { timeout = 20000 } = {}) {
  return new Promise((res, rej) => {
    execFile(BIN, args, { timeout }, (err, stdout, stderr) => {
      if (err && typeof err.code !== 'number') return rej(err);
      res({ code: err ? err.code : 0, stdout, stderr });
    });
  });
}

async function createKey(dir, live) {
  const args = ['keys', 'create', '--data', dir];
  if (live) args.push('--live');
  const r = await runCli(args);
  if (r.code !== 0) {
    throw new Error(`tollgate ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
  }
  const lines = r.stdout.split('\n').map((l) => l.trim()).filter(Boolean);
  const key = lines[lines.length - 1];
  const want = live ? /^sk_live_/ : /^sk_test_/;
  if (!want.test(key || '')) {
    throw new Error(`unexpected key output from tollgate ${args.join(' ')}: ${JSON.stringify(r.stdout)}`);
  }
  return key;
}

export function freePort() {
  return new Promise((res, rej) => {
    const s = net.createServer();
    s.unref();
    s.on('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => res(port));
    });
  });
}

export function stripeClient(key, port, extra = {}) {
  return new Stripe(key, {
    host: '127.0.0.1',
    port,
    protocol: 'http',
    maxNetworkRetries: 0,
    telemetry: false,
    ...extra,
  });
}

/**
 * Minimal HTTP client. `body` may be a string/Buffer (sent as is), or an object: JSON for
 * /v2 paths (or when json:true), form-encoded otherwise. `auth` is the key to send as Bearer
 * (default: none); pass headers.Authorization yourself for anything else.
 * Resolves {status, headers, json, text}. Never rejects on HTTP status; rejects on socket errors.
 */
export function rawRequest(port, method, path, { headers = {}, body, auth, agent, json, timeout = 30000, expectContinue = false } = {}) {
  return new Promise((res, rej) => {
    const h = { ...headers };
    let payload;
    if (body !== undefined && body !== null) {
      if (typeof body === 'string' || Buffer.isBuffer(body)) {
        payload = body;
      } else if (json || path.startsWith('/v2')) {
        payload = JSON.stringify(body);
        if (!hasHeader(h, 'content-type')) h['Content-Type'] = 'application/json';
      } else {
        payload = formEncode(body);
      }
      if (!hasHeader(h, 'content-type')) h['Content-Type'] = 'application/x-www-form-urlencoded';
      h['Content-Length'] = Buffer.byteLength(payload);
    }
    if (auth && !hasHeader(h, 'authorization')) h.Authorization = `Bearer ${auth}`;
    if (expectContinue) h.Expect = '100-continue';
    let settled = false;
    const req = http.request(
      { host: '127.0.0.1', port, method, path, headers: h, agent: agent ?? false },
      (resp) => {
        const chunks = [];
        resp.on('data', (c) => chunks.push(c));
        resp.on('error', (e) => { if (!settled) { settled = true; rej(e); } });
        resp.on('end', () => {
          if (settled) return;
          settled = true;
          const text = Buffer.concat(chunks).toString('utf8');
          let parsed = null;
          try { parsed = JSON.parse(text); } catch { parsed = null; }
          res({ status: resp.statusCode, headers: resp.headers, json: parsed, text });
        });
      },
    );
    req.setTimeout(timeout, () => req.destroy(new Error(`timeout after ${timeout} ms: ${method} ${path}`)));
    req.on('error', (e) => { if (!settled) { settled = true; rej(e); } });
    if (expectContinue && payload !== undefined) {
      // Send the body only if the server asks for it; a final status instead of
      // "100 Continue" (e.g. 413) arrives as the response.
      req.on('continue', () => req.end(payload));
    } else if (payload !== undefined) req.end(payload); else req.end();
  });
}

function hasHeader(h, name) {
  return Object.keys(h).some((k) => k.toLowerCase() === name);
}

/** Stripe-style form encoding: nested objects as a[b]=c, arrays as a[0]=x. */
export function formEncode(obj, prefix = '') {
  const parts = [];
  for (const [k, v] of Object.entries(obj)) {
    if (v === undefined) continue;
    const key = prefix ? `${prefix}[${k}]` : k;
    if (v !== null && typeof v === 'object') {
      if (Array.isArray(v)) {
        v.forEach((item, i) => {
          if (item !== null && typeof item === 'object') parts.push(formEncode(item, `${key}[${i}]`));
          else parts.push(`${key}[${i}]=${encodeURIComponent(String(item))}`);
        });
      } else {
        const inner = formEncode(v, key);
        if (inner) parts.push(inner);
      }
    } else {
      parts.push(`${key}=${encodeURIComponent(v === null ? '' : String(v))}`);
    }
  }
  return parts.filter(Boolean).join('&');
}

/**
 * Starts `tollgate serve` on a fresh data dir (or `opts.dir`). Returns a handle:
 * {port, key, liveKey, dir, stripe, liveStripe, raw(), stop(), kill9(), restart(), output()}
 */
export async function startServer({ args = [], dir } = {}) {
  const ownDir = !dir;
  dir = dir ?? (await mkdtemp(join(tmpdir(), 'tollgate-e2e-')));
  const key = await createKey(dir, false);
  const liveKey = await createKey(dir, true);

  const srv = {
    dir, key, liveKey, port: 0, child: null, exitInfo: null, log: '',
    stripe: null, liveStripe: null,
  };

  async function launch() {
    let lastErr;
    for (let attempt = 0; attempt < 5; attempt++) {
      // Keep the port across restarts so clients made from the old handle keep working.
      const port = srv.port && attempt === 0 ? srv.port : await freePort();
      try {
        await spawnAndWait(port);
        if (srv.port !== port) {
          srv.port = port;
          srv.stripe = stripeClient(key, port);
          srv.liveStripe = stripeClient(liveKey, port);
        }
        return;
      } catch (e) {
        lastErr = e;
      }
    }
    throw lastErr;
  }

  function spawnAndWait(port) {
    return new Promise((res, rej) => {
      const child = spawn(BIN, ['serve', '--data', dir, '--listen', `127.0.0.1:${port}`, ...args], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      srv.child = child;
      srv.exitInfo = null;
      live.add(child);
      const append = (d) => {
        srv.log += d.toString();
        if (srv.log.length > 200000) srv.log = srv.log.slice(-100000);
      };
      child.stdout.on('data', append);
      child.stderr.on('data', append);
      child.exited = new Promise((r) => {
        child.on('exit', (code, signal) => {
          live.delete(child);
          srv.exitInfo = { code, signal };
          r({ code, signal });
        });
      });
      child.on('error', (e) => rej(e));
      const deadline = Date.now() + 15000;
      (async () => {
        while (Date.now() < deadline) {
          if (srv.exitInfo) {
            return rej(new Error(`tollgate serve exited early (${JSON.stringify(srv.exitInfo)}):\n${srv.log.slice(-4000)}`));
          }
          try {
            const r = await rawRequest(port, 'GET', '/healthz', { timeout: 1000 });
            if (r.status === 200) return res();
          } catch { /* not up yet */ }
          await sleep(40);
        }
        child.kill('SIGKILL');
        await child.exited;
        rej(new Error(`tollgate serve did not answer /healthz on port ${port}:\n${srv.log.slice(-4000)}`));
      })();
    });
  }

  srv.raw = (method, path, opts = {}) => {
    const o = { ...opts };
    if (!('auth' in o)) o.auth = key;
    return rawRequest(srv.port, method, path, o);
  };
  srv.output = () => srv.log;

  /** SIGTERM and wait; resolves {code, signal}. */
  srv.stop = async ({ timeout = 10000 } = {}) => {
    const child = srv.child;
    if (!child || srv.exitInfo) return srv.exitInfo;
    child.kill('SIGTERM');
    const t = setTimeout(() => child.kill('SIGKILL'), timeout);
    const info = await child.exited;
    clearTimeout(t);
    return info;
  };
  srv.kill9 = async () => {
    const child = srv.child;
    if (!child || srv.exitInfo) return srv.exitInfo;
    child.kill('SIGKILL');
    return child.exited;
  };
  srv.restart = async ({ hard = false } = {}) => {
    if (hard) await srv.kill9(); else await srv.stop();
    await launch();
    return srv;
  };
  /** Stop (SIGTERM, then SIGKILL) and remove the data dir. Safe to call twice. */
  srv.close = async () => {
    try { await srv.stop({ timeout: 5000 }); } catch { /* ignore */ }
    if (ownDir && !process.env.TOLLGATE_KEEP_DATA) await rm(dir, { recursive: true, force: true }).catch(() => {});
  };

  await launch();
  return srv;
}

// ---------------------------------------------------------------------------------------------
// Assertions

/**
 * Awaits a promise that must reject with a Stripe error and checks it.
 * `want` may hold: status, type (raw error type, default 'invalid_request_error'), code,
 * param (use null for "no param"), message (string or RegExp), cls (SDK class name).
 */
export async function expectStripeError(promise, want) {
  let err;
  try {
    const r = await promise;
    assert.fail(`expected an error ${JSON.stringify(want)}, got success: ${JSON.stringify(r)}`);
  } catch (e) {
    if (e instanceof assert.AssertionError) throw e;
    err = e;
  }
  const got = {
    status: err.statusCode,
    type: err.rawType,
    code: err.code,
    param: err.param,
    message: err.message,
    cls: err.type,
  };
  const ctx = `error was ${JSON.stringify(got)}`;
  if ('status' in want) assert.equal(got.status, want.status, ctx);
  assert.equal(got.type, 'type' in want ? want.type : 'invalid_request_error', ctx);
  if ('code' in want) assert.equal(got.code, want.code, ctx);
  if ('param' in want) assert.equal(got.param ?? null, want.param, ctx);
  if ('message' in want) {
    if (want.message instanceof RegExp) assert.match(got.message, want.message, ctx);
    else assert.equal(got.message, want.message, ctx);
  }
  if ('cls' in want) assert.equal(got.cls, want.cls, ctx);
  return err;
}

/** Checks a raw response for the Stripe error envelope. */
export function expectRawError(res, want) {
  const ctx = `response was ${res.status} ${res.text.slice(0, 500)}`;
  if ('status' in want) assert.equal(res.status, want.status, ctx);
  assert.ok(res.json && typeof res.json.error === 'object' && res.json.error !== null, `no error envelope: ${ctx}`);
  const e = res.json.error;
  assert.equal(e.type, 'type' in want ? want.type : 'invalid_request_error', ctx);
  if ('code' in want) assert.equal(e.code, want.code, ctx);
  if ('param' in want) assert.equal(e.param ?? null, want.param, ctx);
  if ('message' in want) {
    if (want.message instanceof RegExp) assert.match(e.message, want.message, ctx);
    else assert.equal(e.message, want.message, ctx);
  }
  assert.equal(typeof e.message, 'string', ctx);
  return e;
}

/** Polls fn() until it returns `expected` (deepStrictEqual) or the timeout passes, then asserts. */
export async function eventually(fn, expected, { timeout = 4000, interval = 100, message } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    last = await fn();
    try {
      assert.deepStrictEqual(last, expected);
      return last;
    } catch (e) {
      if (Date.now() >= deadline) {
        assert.deepStrictEqual(last, expected, message);
      }
    }
    await sleep(interval);
  }
}

// ---------------------------------------------------------------------------------------------
// Domain helpers

export const HOUR = 3600;
export const DAY = 86400;
export const floorTo = (t, step) => Math.floor(t / step) * step;

/** Creates a meter with a unique event_name. */
export async function createMeter(stripe, { formula = 'sum', ...rest } = {}) {
  const event_name = rest.event_name ?? uniq('ev');
  return stripe.billing.meters.create({
    display_name: `Meter ${event_name}`,
    event_name,
    default_aggregation: { formula },
    ...rest,
  });
}

export async function createCustomer(stripe, extra = {}) {
  return stripe.customers.create({ name: 'E2E customer', ...extra });
}

/** Total over [start, end) without grouping: the single summary's value (0 when none returned). */
export async function usage(stripe, meterId, customer, start, end) {
  const list = await stripe.billing.meters.listEventSummaries(meterId, {
    customer, start_time: start, end_time: end,
  });
  assert.ok(list.data.length <= 1, `ungrouped summaries must be at most one, got ${JSON.stringify(list.data)}`);
  return list.data.length ? list.data[0].aggregated_value : 0;
}

/** Waits until usage(...) equals expected (summaries may be eventually consistent). */
export function expectUsage(stripe, meterId, customer, start, end, expected, opts) {
  return eventually(() => usage(stripe, meterId, customer, start, end), expected, opts);
}
