// Durability: kill -9 the server under load, restart it on the same data dir, and check that
// every acknowledged meter event was persisted and that every event counts exactly once.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import {
  startServer, rawRequest, stripeClient, nowSec, uniq, createMeter, createCustomer,
  eventually, floorTo, sleep, expectStripeError,
} from './helpers.mjs';

const N = Number(process.env.TOLLGATE_CRASH_EVENTS || 20000);
const CONC = 16;
const KILL_AFTER_MS = 1500;

let srv;
before(async () => { srv = await startServer(); });
after(async () => { await srv?.close(); });

function isConnError(e) {
  return e && (e.code === 'ECONNRESET' || e.code === 'ECONNREFUSED' || e.code === 'EPIPE' ||
    e.code === 'ECONNABORTED' || /socket hang up|timeout/.test(e.message));
}

/**
 * Runs fn(i) for each index with `conc` workers until done or stop() is true.
 * fn returns 'retry' to put the index back (after a short pause).
 */
async function pool(indices, conc, fn, stop = () => false) {
  const queue = [...indices];
  async function worker() {
    while (queue.length && !stop()) {
      const i = queue.shift();
      const r = await fn(i);
      if (r === 'retry') { queue.push(i); await sleep(5); }
    }
  }
  await Promise.all(Array.from({ length: conc }, worker));
}

/**
 * Phase 1 of a crash test: sends request i (send(i) resolves to a response) for each of n
 * indices on `conc` workers and kills the server with SIGKILL once `killAt` requests are
 * acknowledged or `killAfterMs` has passed. Requests keep going until the process is gone, so
 * the kill lands between commits. Resolves {acked, sent, unexpected, ms}.
 */
async function loadUntilKilled(n, conc, killAt, killAfterMs, send) {
  const acked = new Set();
  const sent = new Set();
  const unexpected = [];
  let killing = false;
  let killed = false;
  const t0 = Date.now();
  const killer = (async () => {
    while (Date.now() - t0 < killAfterMs && acked.size < killAt) await sleep(5);
    killing = true;
    await srv.kill9();
    killed = true;
  })();
  await pool([...Array(n).keys()], conc, async (i) => {
    sent.add(i);
    try {
      const r = await send(i);
      if (r.status === 200) acked.add(i);
      else if (r.status === 429) return 'retry';
      else unexpected.push(`${i}: ${r.status} ${r.text.slice(0, 200)}`);
    } catch (e) {
      if (!killing && !isConnError(e)) unexpected.push(`${i}: ${e.message}`);
    }
    return undefined;
  }, () => killed);
  await killer;
  return { acked, sent, unexpected, ms: Date.now() - t0 };
}

async function total(stripe, meterId, customer, start) {
  const l = await stripe.billing.meters.listEventSummaries(meterId, { customer, start_time: start, end_time: start + 60 });
  return l.data.length ? l.data[0].aggregated_value : 0;
}

test(`kill -9 under v1 load (${N} events, ${CONC} keep-alive clients): no acknowledged event lost, none doubled`, async (t) => {
  const meter = await createMeter(srv.stripe, { formula: 'sum' });
  const cus = await createCustomer(srv.stripe);
  const T = floorTo(nowSec() - 7200, 60);
  const run = uniq('crash');
  const ident = (i) => `${run}-${i}`;
  const bodyFor = (i) => `event_name=${meter.event_name}&identifier=${ident(i)}` +
    `&payload[stripe_customer_id]=${cus.id}&payload[value]=1&timestamp=${T + (i % 60)}`;

  let agent = new http.Agent({ keepAlive: true, maxSockets: CONC });
  const port = srv.port;
  const { acked, sent, unexpected, ms: loadMs } = await loadUntilKilled(N, CONC, N * 0.6, KILL_AFTER_MS,
    (i) => rawRequest(port, 'POST', '/v1/billing/meter_events', { body: bodyFor(i), auth: srv.key, agent, timeout: 10000 }));
  agent.destroy();
  assert.deepEqual(unexpected, [], 'unexpected responses before the kill');
  assert.ok(acked.size > 0, 'nothing was acknowledged before the kill');
  t.diagnostic(`phase 1: ${acked.size} acked of ${sent.size} sent in ${loadMs} ms`);

  await srv.restart({ hard: true });
  assert.notEqual(srv.port, 0);

  // Everything acknowledged is already counted; nothing beyond what was sent.
  const afterRestart = await total(srv.stripe, meter.id, cus.id, T);
  assert.ok(afterRestart >= acked.size, `after restart ${afterRestart} < acknowledged ${acked.size}`);
  assert.ok(afterRestart <= sent.size, `after restart ${afterRestart} > sent ${sent.size}`);

  // Resend every identifier.
  agent = new http.Agent({ keepAlive: true, maxSockets: CONC });
  const lost = [];
  const bad = [];
  let fresh = 0;
  let dups = 0;
  await pool([...Array(N).keys()], CONC, async (i) => {
    let r;
    try {
      r = await rawRequest(srv.port, 'POST', '/v1/billing/meter_events', { body: bodyFor(i), auth: srv.key, agent, timeout: 20000 });
    } catch (e) {
      bad.push(`${i}: ${e.message}`);
      return undefined;
    }
    if (r.status === 429) return 'retry';
    const isDup = r.status === 400 && r.json?.error?.code === 'duplicate_meter_event';
    if (acked.has(i)) {
      if (!isDup) lost.push(`${ident(i)}: ${r.status} ${r.text.slice(0, 160)}`);
    }
    if (r.status === 200) fresh++;
    else if (isDup) dups++;
    else bad.push(`${i}: ${r.status} ${r.text.slice(0, 160)}`);
    return undefined;
  });
  agent.destroy();
  t.diagnostic(`phase 2: ${fresh} new, ${dups} duplicates`);
  assert.deepEqual(lost.slice(0, 20), [], `${lost.length} acknowledged events were not persisted`);
  assert.deepEqual(bad.slice(0, 20), [], `${bad.length} unexpected responses on resend`);
  assert.equal(fresh + dups, N);
  assert.equal(dups, afterRestart, 'duplicates on resend = events already stored after restart');

  await eventually(() => total(srv.stripe, meter.id, cus.id, T), N, { timeout: 15000 });
});

test('kill -9 under v2 stream load: acknowledged batches persisted, each event counted once', async (t) => {
  const BATCH = 100;
  const BATCHES = Math.max(20, Math.floor(N / 2 / BATCH));
  const meter = await createMeter(srv.stripe, { formula: 'sum' });
  const cus = await createCustomer(srv.stripe);
  const T = floorTo(nowSec() - 3 * 3600, 60);
  const run = uniq('scrash');
  const batch = (b) => ({
    events: Array.from({ length: BATCH }, (_, j) => ({
      event_name: meter.event_name,
      identifier: `${run}-${b}-${j}`,
      timestamp: new Date((T + j % 60) * 1000).toISOString(),
      payload: { stripe_customer_id: cus.id, value: '1' },
    })),
  });
  const bodies = Array.from({ length: BATCHES }, (_, b) => JSON.stringify(batch(b)));

  let token = (await srv.stripe.v2.billing.meterEventSession.create()).authentication_token;
  const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });
  const port = srv.port;
  const { acked, sent, unexpected } = await loadUntilKilled(BATCHES, 4, BATCHES * 0.5, 1000,
    (b) => rawRequest(port, 'POST', '/v2/billing/meter_event_stream', {
      body: bodies[b], auth: token, agent, headers: { 'Content-Type': 'application/json' }, timeout: 10000,
    }));
  agent.destroy();
  assert.deepEqual(unexpected, []);
  assert.ok(acked.size > 0, 'no batch acknowledged before the kill');
  t.diagnostic(`stream phase 1: ${acked.size} batches acked of ${sent.size} sent`);

  await srv.restart({ hard: true });
  const afterRestart = await total(srv.stripe, meter.id, cus.id, T);
  assert.ok(afterRestart >= acked.size * BATCH, `after restart ${afterRestart} < acknowledged ${acked.size * BATCH}`);
  assert.ok(afterRestart <= sent.size * BATCH, `after restart ${afterRestart} > sent ${sent.size * BATCH}`);

  // Resend every batch (a new session if the old token did not survive the restart).
  const client = () => stripeClient(token, srv.port);
  for (let b = 0; b < BATCHES; b++) {
    try {
      await client().v2.billing.meterEventStream.create(JSON.parse(bodies[b]));
    } catch (e) {
      if (e.statusCode !== 401) throw e;
      token = (await srv.stripe.v2.billing.meterEventSession.create()).authentication_token;
      await client().v2.billing.meterEventStream.create(JSON.parse(bodies[b]));
    }
  }
  await eventually(() => total(srv.stripe, meter.id, cus.id, T), BATCHES * BATCH, { timeout: 20000 });
});

test('kill -9 under v1 load with Idempotency-Keys and no identifiers: retries count each request once', async (t) => {
  // stripe-node sends an Idempotency-Key with every POST and reuses it when it retries. An
  // event sent without an identifier is committed before its key's answer is stored, so a
  // retry after a crash between the two must not count it again.
  const M = Math.max(2000, Math.floor(N / 5));
  const meter = await createMeter(srv.stripe, { formula: 'sum' });
  const cus = await createCustomer(srv.stripe);
  const T = floorTo(nowSec() - 5 * 3600, 60);
  const run = uniq('kcrash');
  const key = (i) => `${run}-${i}`;
  const bodyFor = (i) => `event_name=${meter.event_name}&payload[stripe_customer_id]=${cus.id}` +
    `&payload[value]=1&timestamp=${T + (i % 60)}`;
  const send = (port, agent, i) => rawRequest(port, 'POST', '/v1/billing/meter_events', {
    body: bodyFor(i), auth: srv.key, agent, timeout: 20000, headers: { 'Idempotency-Key': key(i) },
  });

  let agent = new http.Agent({ keepAlive: true, maxSockets: CONC });
  const port = srv.port;
  const { acked, unexpected } = await loadUntilKilled(M, CONC, M * 0.6, KILL_AFTER_MS, (i) => send(port, agent, i));
  agent.destroy();
  assert.deepEqual(unexpected, []);
  assert.ok(acked.size > 0, 'nothing was acknowledged before the kill');
  await srv.restart({ hard: true });

  // Retry every request with its key, as a client that saw no answer (or retries anyway) does:
  // each succeeds, and each counts once.
  agent = new http.Agent({ keepAlive: true, maxSockets: CONC });
  const bad = [];
  let replayed = 0;
  await pool([...Array(M).keys()], CONC, async (i) => {
    const r = await send(srv.port, agent, i);
    if (r.status === 429) return 'retry';
    if (r.status !== 200) bad.push(`${i}: ${r.status} ${r.text.slice(0, 160)}`);
    else if (r.headers['idempotent-replayed'] === 'true') replayed++;
    return undefined;
  });
  agent.destroy();
  t.diagnostic(`${acked.size} acked of ${M} before the kill; on retry ${replayed} replayed`);
  assert.deepEqual(bad.slice(0, 20), [], `${bad.length} retries failed`);
  assert.equal(await total(srv.stripe, meter.id, cus.id, T), M, 'each request counted once');
});

test('kill -9 under customer creates and updates with Idempotency-Keys: a retry never runs a write twice', async (t) => {
  // A create commits before its key's answer is stored; a crash between the two used to let the
  // retry create a second customer. Now the write and a record of it commit together, and the
  // retry answers with the object the first run wrote (created) or changed (updated).
  const M = 800;
  const run = uniq('icrash');
  const key = (i) => `${run}-${i}`;
  const targets = await Promise.all(Array.from({ length: 8 }, () => createCustomer(srv.stripe)));
  const isUpdate = (i) => i % 4 === 3;
  const target = (i) => targets[Math.floor(i / 4) % targets.length].id; // 25 updates each
  const pathFor = (i) => (isUpdate(i) ? `/v1/customers/${target(i)}` : '/v1/customers');
  const params = (i) => (isUpdate(i) ? { metadata: { [`u${i}`]: key(i) } }
    : { email: `${key(i)}@example.test`, metadata: { k: key(i) } });
  const bodyFor = (i) => (isUpdate(i) ? `metadata[u${i}]=${key(i)}`
    : `email=${key(i)}%40example.test&metadata[k]=${key(i)}`);
  const firstId = new Map();
  let agent = new http.Agent({ keepAlive: true, maxSockets: CONC });
  const port = srv.port;
  const { acked, unexpected } = await loadUntilKilled(M, CONC, M * 0.5, KILL_AFTER_MS, async (i) => {
    const r = await rawRequest(port, 'POST', pathFor(i), {
      body: bodyFor(i), auth: srv.key, agent, timeout: 20000, headers: { 'Idempotency-Key': key(i) },
    });
    if (r.status === 200) firstId.set(i, r.json.id);
    return r;
  });
  agent.destroy();
  assert.deepEqual(unexpected, []);
  assert.ok(acked.size > 0, 'nothing was acknowledged before the kill');
  await srv.restart({ hard: true });

  // Retry every request with its key through the official client, as stripe-node does when a
  // connection drops: each succeeds and names the object of the first run.
  const bad = [];
  let replayed = 0;
  await pool([...Array(M).keys()], CONC, async (i) => {
    let res;
    try {
      res = isUpdate(i)
        ? await srv.stripe.customers.update(target(i), params(i), { idempotencyKey: key(i) })
        : await srv.stripe.customers.create(params(i), { idempotencyKey: key(i) });
    } catch (e) {
      bad.push(`${i}: ${e.statusCode} ${e.message}`);
      return undefined;
    }
    if (res.lastResponse.headers['idempotent-replayed'] === 'true') replayed++;
    if (isUpdate(i) && res.id !== target(i)) bad.push(`${i}: update answered ${res.id}`);
    if (firstId.has(i) && res.id !== firstId.get(i)) bad.push(`${i}: ${res.id} != first ${firstId.get(i)}`);
    if (!isUpdate(i)) firstId.set(i, res.id);
    return undefined;
  });
  const lost = (srv.output().match(/response was lost; answering \/v1\/customers/g) ?? []).length;
  t.diagnostic(`${acked.size} acked of ${M} before the kill; on retry ${replayed} replayed, ` +
    `${lost} of them from the objects (their responses were lost in the kill)`);
  assert.deepEqual(bad.slice(0, 20), [], `${bad.length} retries failed`);

  // Exactly one customer per create key; every update applied once, to its target.
  const perKey = new Map();
  for await (const c of srv.stripe.customers.list({ limit: 100 })) {
    const k = c.metadata?.k;
    if (k?.startsWith(run)) perKey.set(k, (perKey.get(k) ?? 0) + 1);
  }
  const creates = [...Array(M).keys()].filter((i) => !isUpdate(i));
  const doubled = creates.filter((i) => perKey.get(key(i)) !== 1).map((i) => `${key(i)}: ${perKey.get(key(i))}`);
  assert.deepEqual(doubled.slice(0, 20), [], `${doubled.length} keys without exactly one customer`);
  for (const c of targets) {
    const now = await srv.stripe.customers.retrieve(c.id);
    const want = [...Array(M).keys()].filter((i) => isUpdate(i) && target(i) === c.id).length;
    assert.equal(Object.keys(now.metadata).length, want, `updates of ${c.id}`);
  }
});

test('a response lost in a restart is answered from the objects its request wrote, never by running it again', async () => {
  // The state a crash leaves between a request's commit and its stored response, made exactly:
  // each request runs once, the server stops, and its stored response is turned back into the
  // record its writes committed with (status 0, the id of the object it created).
  const stripe = srv.stripe;
  const run = uniq('lost');
  const k = (name) => `${run}-${name}`;
  const target = await createCustomer(stripe);
  const meter = await createMeter(stripe);
  await stripe.billing.meterEvents.create({
    event_name: meter.event_name, identifier: k('event'), payload: { stripe_customer_id: target.id, value: '1' },
  });
  const calls = {
    create: () => stripe.customers.create({ name: 'lost create' }, { idempotencyKey: k('create') }),
    update: () => stripe.customers.update(target.id, { name: 'lost update' }, { idempotencyKey: k('update') }),
    product: () => stripe.products.create({ name: 'lost product' }, { idempotencyKey: k('product') }),
    price: () => stripe.prices.create({ product: first.product.id, currency: 'usd', unit_amount: 100, expand: ['product'] },
      { idempotencyKey: k('price') }),
    adjustment: () => stripe.billing.meterEventAdjustments.create(
      { event_name: meter.event_name, type: 'cancel', cancel: { identifier: k('event') } },
      { idempotencyKey: k('adjustment') }),
  };
  const first = {};
  for (const [name, call] of Object.entries(calls)) first[name] = await call();
  // A v2 meter event session keeps no record (a second session harms nothing): its lost
  // response leaves no row at all, and the retry makes a new session.
  const session = () => stripe.v2.billing.meterEventSession.create({}, { idempotencyKey: k('session') });
  const firstSession = await session();
  await stripe.customers.update(first.create.id, { email: 'changed@example.test' }); // since then

  await srv.stop();
  const created = { create: first.create.id, product: first.product.id, price: first.price.id };
  const sql = Object.keys(calls).map((name) => `UPDATE idempotency SET status=0, body='${created[name] ?? ''}' ` +
    `WHERE key='${k(name)}';`).join('\n') + `\nDELETE FROM idempotency WHERE key='${k('session')}';`;
  const out = spawnSync('sqlite3', [join(srv.dir, 'tollgate.db')], { input: sql, encoding: 'utf8' });
  assert.equal(out.status, 0, out.stderr);
  await srv.restart();

  for (let round = 0; round < 2; round++) { // the second round replays what the first stored
    const again = await calls.create();
    assert.equal(again.id, first.create.id);
    assert.equal(again.email, 'changed@example.test', 'the object as it is now');
    assert.equal(again.lastResponse.headers['idempotent-replayed'], 'true');
    const updated = await calls.update();
    assert.equal(updated.id, target.id);
    assert.equal(updated.name, 'lost update');
    assert.equal(updated.lastResponse.headers['idempotent-replayed'], 'true');
    const product = await calls.product();
    assert.equal(product.id, first.product.id);
    const price = await calls.price(); // answered with the first request's expand[]
    assert.equal(price.id, first.price.id);
    assert.equal(price.product.name, 'lost product');
    assert.equal(price.lastResponse.headers['idempotent-replayed'], 'true');
    // No object to show: refused, and still not run again.
    await expectStripeError(calls.adjustment(), {
      status: 400, type: 'idempotency_error', code: 'idempotency_response_lost', message: /not run again/,
    });
  }
  const again = await session();
  assert.notEqual(again.id, firstSession.id);
  assert.notEqual(again.lastResponse.headers['idempotent-replayed'], 'true');
  const named = [];
  for await (const c of stripe.customers.list({ limit: 100 })) if (c.name === 'lost create') named.push(c.id);
  assert.deepEqual(named, [first.create.id]);
  const products = await stripe.products.list({ limit: 100 });
  assert.equal(products.data.filter((p) => p.name === 'lost product').length, 1);
});

test('the server still shuts down cleanly after the crash tests', async () => {
  const r = await rawRequest(srv.port, 'GET', '/healthz');
  assert.equal(r.status, 200);
  const info = await srv.stop();
  assert.deepEqual(info, { code: 0, signal: null });
});
