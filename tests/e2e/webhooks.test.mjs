// Webhook endpoints and deliveries through the official stripe client: the endpoints' CRUD
// and errors, deliveries verified by stripe-node's own webhooks.constructEvent, filtering by
// enabled_events, retries after a failed attempt, disabled and deleted endpoints, and a
// delivery that survives kill -9.

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { readFileSync } from 'node:fs';
import Stripe from 'stripe';
import { startServer, expectStripeError, uniq, sleep, eventually } from './helpers.mjs';

let srv;
let stripe;
before(async () => {
  // One unit of the retry schedule is a second here: the first retry comes 1 s after a failure.
  srv = await startServer({ args: ['--webhook-retry-unit', '1'] });
  stripe = srv.stripe;
});
after(async () => { await srv?.close(); });

/**
 * A receiver on a free port: records every POST (path, headers, raw body) and answers with
 * what `answer(req, body)` returns (a status; 200 by default).
 */
async function receiver(answer = () => 200) {
  const got = [];
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      const r = { path: req.url, method: req.method, headers: req.headers, body, at: Date.now() };
      got.push(r);
      r.status = answer(r);
      res.statusCode = r.status;
      res.end('{}');
    });
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const url = (path) => `http://127.0.0.1:${server.address().port}${path}`;
  return {
    got,
    url,
    on: (path) => got.filter((r) => r.path === path),
    close: () => new Promise((r) => server.close(r)),
  };
}

const verifier = new Stripe('sk_test_unused');
/** The event a delivery carries, verified as stripe-node verifies Stripe's own. */
function verified(delivery, secret) {
  return verifier.webhooks.constructEvent(delivery.body, delivery.headers['stripe-signature'], secret);
}

/** The t= of a delivery's Stripe-Signature header. */
const signedAt = (d) => Number(/^t=(\d+),/.exec(d.headers['stripe-signature'])[1]);

async function waitFor(fn, what, timeout = 8000) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const v = fn();
    if (v) return v;
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

describe('webhook endpoints', () => {
  test('create, retrieve, update, list and delete with Stripe shapes', async () => {
    const created = await stripe.webhookEndpoints.create({
      url: 'https://hooks.example.com/tollgate',
      enabled_events: ['invoice.paid', 'invoice.created', 'invoice.paid'],
      description: 'billing sync',
      metadata: { team: 'finance' },
    });
    assert.match(created.id, /^we_/);
    assert.equal(created.object, 'webhook_endpoint');
    assert.match(created.secret, /^whsec_[A-Za-z0-9]{32}$/);
    assert.deepEqual(created.enabled_events, ['invoice.paid', 'invoice.created']);
    assert.equal(created.status, 'enabled');
    assert.equal(created.url, 'https://hooks.example.com/tollgate');
    assert.equal(created.description, 'billing sync');
    assert.deepEqual(created.metadata, { team: 'finance' });
    assert.equal(created.api_version, null);
    assert.equal(created.application, null);
    assert.equal(created.livemode, false);
    assert.equal(typeof created.created, 'number');

    const got = await stripe.webhookEndpoints.retrieve(created.id);
    assert.equal(got.secret, undefined, 'the secret is shown by the create only');
    const { secret, ...rest } = created;
    assert.ok(secret);
    assert.deepEqual(got, rest);

    const updated = await stripe.webhookEndpoints.update(created.id, {
      enabled_events: ['*'], disabled: true, description: '', metadata: { team: '', env: 'ci' },
    });
    assert.deepEqual(updated.enabled_events, ['*']);
    assert.equal(updated.status, 'disabled');
    assert.equal(updated.description, null);
    assert.deepEqual(updated.metadata, { env: 'ci' });
    assert.equal(updated.url, 'https://hooks.example.com/tollgate');
    const enabled = await stripe.webhookEndpoints.update(created.id, { disabled: false, url: 'https://hooks.example.com/v2' });
    assert.equal(enabled.status, 'enabled');
    assert.equal(enabled.url, 'https://hooks.example.com/v2');

    const other = await stripe.webhookEndpoints.create({
      url: 'http://127.0.0.1:9/x', enabled_events: ['*'], api_version: '2026-07-29.dahlia',
    });
    assert.equal(other.api_version, '2026-07-29.dahlia', 'echoed as Stripe does');
    const page = await stripe.webhookEndpoints.list({ limit: 1 });
    assert.equal(page.object, 'list');
    assert.equal(page.url, '/v1/webhook_endpoints');
    assert.equal(page.has_more, true);
    assert.equal(page.data[0].id, other.id, 'newest first');
    assert.equal(page.data[0].secret, undefined);
    const ids = [];
    for await (const e of stripe.webhookEndpoints.list({ limit: 1 })) ids.push(e.id);
    assert.ok(ids.includes(created.id) && ids.includes(other.id));

    for (const id of [created.id, other.id]) {
      const del = await stripe.webhookEndpoints.del(id);
      assert.deepEqual(del, { id, object: 'webhook_endpoint', deleted: true });
      await expectStripeError(stripe.webhookEndpoints.retrieve(id), {
        status: 404, code: 'resource_missing', param: 'id', message: `No such webhook endpoint: '${id}'`,
      });
    }
    await expectStripeError(stripe.webhookEndpoints.del(created.id), { status: 404, code: 'resource_missing' });
    await expectStripeError(stripe.webhookEndpoints.update('we_nope', { description: 'x' }), {
      status: 404, code: 'resource_missing', param: 'id',
    });
  });

  test('refuses bad input and changes nothing', async () => {
    const before = (await stripe.webhookEndpoints.list({ limit: 100 })).data.length;
    const ok = { url: 'https://hooks.example.com/a', enabled_events: ['*'] };
    await expectStripeError(stripe.webhookEndpoints.create({ enabled_events: ['*'] }), {
      status: 400, code: 'parameter_missing', param: 'url',
    });
    await expectStripeError(stripe.webhookEndpoints.create({ url: ok.url }), {
      status: 400, code: 'parameter_missing', param: 'enabled_events',
    });
    for (const url of ['ftp://hooks.example.com/', 'hooks.example.com/x', 'https://', 'https://a b/', 'http:///x']) {
      await expectStripeError(stripe.webhookEndpoints.create({ ...ok, url }), {
        status: 400, code: 'parameter_invalid', param: 'url',
      });
    }
    await expectStripeError(stripe.webhookEndpoints.create({ ...ok, url: `https://h/${'x'.repeat(2100)}` }), {
      status: 400, param: 'url', message: /at most 2048/,
    });
    await expectStripeError(
      stripe.webhookEndpoints.create({ ...ok, enabled_events: ['invoice.paid', 'charge.succeded'] }),
      { status: 400, code: 'parameter_invalid', param: 'enabled_events[1]', message: /'charge.succeded' is not a Stripe event type/ },
    );
    await expectStripeError(stripe.webhookEndpoints.create({ ...ok, enabled_events: [] }), {
      status: 400, param: 'enabled_events',
    });
    await expectStripeError(stripe.webhookEndpoints.create({ ...ok, connect: true }), {
      status: 400, param: 'connect',
    });
    await expectStripeError(stripe.webhookEndpoints.create({ ...ok, api_version: '2020-08-27' }), {
      status: 400, param: 'api_version',
    });
    await expectStripeError(stripe.webhookEndpoints.create({ ...ok, secret: 'whsec_mine' }), {
      status: 400, code: 'parameter_unknown', param: 'secret',
    });
    await expectStripeError(stripe.webhookEndpoints.create({ ...ok, expand: ['url'] }), { status: 400 });
    const e = await stripe.webhookEndpoints.create(ok);
    await expectStripeError(stripe.webhookEndpoints.update(e.id, { disabled: 'maybe' }), {
      status: 400, param: 'disabled',
    });
    await expectStripeError(stripe.webhookEndpoints.update(e.id, { enabled_events: ['nope'] }), {
      status: 400, param: 'enabled_events[0]',
    });
    await expectStripeError(stripe.webhookEndpoints.update(e.id, { url: 'gopher://x' }), {
      status: 400, param: 'url',
    });
    const after = await stripe.webhookEndpoints.retrieve(e.id);
    assert.deepEqual(after.enabled_events, ['*']);
    assert.equal(after.url, ok.url);
    assert.equal(after.status, 'enabled');
    await stripe.webhookEndpoints.del(e.id);
    assert.equal((await stripe.webhookEndpoints.list({ limit: 100 })).data.length, before);
  });

  test("every type the installed stripe client lists is accepted, as on Stripe", async () => {
    // The union type stripe-node declares for enabled_events: the wire format's spec.
    const dts = readFileSync(new URL('./node_modules/stripe/esm/resources/WebhookEndpoints.d.ts', import.meta.url), 'utf8');
    const union = /namespace WebhookEndpointCreateParams \{\s*type EnabledEvent = ([^;]*);/.exec(dts)[1];
    const types = [...union.matchAll(/'([^']+)'/g)].map((m) => m[1]);
    assert.ok(types.length > 200 && types.includes('*') && types.includes('charge.succeeded'));
    // Two endpoints: a request's array holds at most 256 entries (the parameter decoder's bound).
    for (const part of [types.slice(0, 200), types.slice(200)]) {
      const e = await stripe.webhookEndpoints.create({ url: 'https://hooks.example.com/all', enabled_events: part });
      assert.deepEqual(e.enabled_events, part);
      const back = await stripe.webhookEndpoints.retrieve(e.id);
      assert.deepEqual(back.enabled_events, part);
      await stripe.webhookEndpoints.del(e.id);
    }
  });

  test('live mode needs https, and a mode holds at most 16 endpoints', async () => {
    const live = srv.liveStripe;
    await expectStripeError(live.webhookEndpoints.create({ url: 'http://hooks.example.com/', enabled_events: ['*'] }), {
      status: 400, param: 'url', message: /live mode webhook endpoints must use https/,
    });
    const made = [];
    for (let i = 0; i < 16; i++) {
      made.push(await live.webhookEndpoints.create({ url: `https://hooks.example.com/${i}`, enabled_events: ['invoice.paid'] }));
    }
    assert.ok(made.every((e) => e.livemode === true));
    await expectStripeError(live.webhookEndpoints.create({ url: 'https://hooks.example.com/16', enabled_events: ['*'] }), {
      status: 400, message: 'You have reached the maximum of 16 live webhook endpoints.',
    });
    // The test mode's endpoints are separate.
    const t = await stripe.webhookEndpoints.create({ url: 'https://hooks.example.com/t', enabled_events: ['*'] });
    await stripe.webhookEndpoints.del(t.id);
    await expectStripeError(live.webhookEndpoints.retrieve(t.id), { status: 404 });
    for (const e of made) await live.webhookEndpoints.del(e.id);
  });
});

describe('deliveries', () => {
  test('each endpoint gets the events it enabled, signed, as GET /v1/events shows them', async () => {
    const rx = await receiver();
    try {
      const created = await stripe.webhookEndpoints.create({ url: rx.url('/created'), enabled_events: ['product.created'] });
      const all = await stripe.webhookEndpoints.create({ url: rx.url('/all'), enabled_events: ['*'] });
      // A live mode endpoint (https, so nothing would arrive anyway) never gets test mode's events:
      // its queue stays empty, which pending_webhooks shows below.
      const live = await srv.liveStripe.webhookEndpoints.create({ url: 'https://127.0.0.1:9/live', enabled_events: ['*'] });
      const product = await stripe.products.create({ name: uniq('hooked') });
      await stripe.products.update(product.id, { name: 'renamed' });

      const onAll = await waitFor(() => (rx.on('/all').length >= 2 ? rx.on('/all') : null), 'two deliveries to /all');
      const onCreated = await waitFor(() => (rx.on('/created').length >= 1 ? rx.on('/created') : null), 'a delivery to /created');
      const types = onAll.map((d) => verified(d, all.secret).type).sort();
      assert.deepEqual(types, ['product.created', 'product.updated']);
      const ev = verified(onCreated[0], created.secret);
      assert.equal(ev.type, 'product.created');
      assert.equal(ev.data.object.id, product.id);

      const d = onCreated[0];
      assert.equal(d.method, 'POST');
      assert.match(d.headers['content-type'], /^application\/json/);
      assert.match(d.headers['stripe-signature'], /^t=\d+,v1=[0-9a-f]{64}$/);
      // A wrong secret fails, so the checks above can fail.
      assert.throws(() => verified(d, all.secret), /signature/i);
      assert.throws(() => verified({ ...d, body: d.body.replace('"product.created"', '"product.deleted"') }, created.secret), /signature/i);

      // The body is the event as the API serves it.
      const served = await srv.raw('GET', `/v1/events/${ev.id}`);
      assert.equal(served.status, 200);
      const delivered = JSON.parse(d.body);
      assert.equal(delivered.pending_webhooks >= 1, true, 'counted while being delivered');
      assert.deepEqual({ ...delivered, pending_webhooks: 0 }, { ...served.json, pending_webhooks: 0 });
      await eventually(async () => (await stripe.events.retrieve(ev.id)).pending_webhooks, 0);

      const updated = onAll.map((x) => verified(x, all.secret)).find((x) => x.type === 'product.updated');
      assert.deepEqual(updated.data.previous_attributes.name !== undefined, true);
      await sleep(300);
      assert.equal(rx.on('/created').length, 1, 'product.updated is not sent where only product.created is enabled');

      await stripe.webhookEndpoints.del(created.id);
      await stripe.webhookEndpoints.del(all.id);
      await srv.liveStripe.webhookEndpoints.del(live.id);
    } finally {
      await rx.close();
    }
  });

  test("customers' and meters' events are delivered", async () => {
    const rx = await receiver();
    try {
      const ep = await stripe.webhookEndpoints.create({
        url: rx.url('/customers'),
        enabled_events: ['customer.created', 'customer.updated', 'customer.deleted', 'billing.meter.deactivated'],
      });
      const c = await stripe.customers.create({ email: 'hook@example.com' });
      await stripe.customers.update(c.id, { name: 'Hooked' });
      await stripe.customers.del(c.id);
      await stripe.products.create({ name: uniq('not enabled') });
      const m = await stripe.billing.meters.create({
        display_name: 'hooked', event_name: uniq('hooked'), default_aggregation: { formula: 'count' },
      });
      await stripe.billing.meters.deactivate(m.id);
      const got = await waitFor(() => (rx.on('/customers').length >= 4 ? rx.on('/customers') : null), 'four deliveries');
      const evs = got.map((d) => verified(d, ep.secret));
      assert.deepEqual(evs.map((e) => e.type).sort(),
        ['billing.meter.deactivated', 'customer.created', 'customer.deleted', 'customer.updated']);
      for (const e of evs) assert.equal(e.data.object.id, e.type.startsWith('customer.') ? c.id : m.id);
      const updated = evs.find((e) => e.type === 'customer.updated');
      assert.equal(updated.data.object.name, 'Hooked');
      assert.deepEqual(updated.data.previous_attributes, { name: null });
      assert.equal(evs.find((e) => e.type === 'billing.meter.deactivated').data.object.status, 'inactive');
      await sleep(300);
      assert.equal(rx.on('/customers').length, 4, 'product.created and billing.meter.created are not enabled there');
      await stripe.webhookEndpoints.del(ep.id);
    } finally {
      await rx.close();
    }
  });

  test('failed attempts are retried on the schedule, each freshly signed', async () => {
    const seen = new Map();
    const rx = await receiver((r) => {
      const n = (seen.get(r.body) || 0) + 1;
      seen.set(r.body, n);
      return n <= 2 ? 500 : 200; // the first attempt and the first retry fail
    });
    try {
      const ep = await stripe.webhookEndpoints.create({ url: rx.url('/flaky'), enabled_events: ['product.created'] });
      const product = await stripe.products.create({ name: uniq('retry') });
      const first = await waitFor(() => rx.on('/flaky')[0], 'the first attempt');
      const ev = verified(first, ep.secret);
      assert.equal(ev.data.object.id, product.id);
      assert.equal((await stripe.events.retrieve(ev.id)).pending_webhooks, 1, 'queued after the failure');
      const second = await waitFor(() => rx.on('/flaky')[1], 'the first retry', 10000);
      const third = await waitFor(() => rx.on('/flaky')[2], 'the second retry', 15000);
      for (const d of [second, third]) assert.equal(verified(d, ep.secret).id, ev.id);
      // The schedule's first two delays are 1 and 5 units (a second each here).
      assert.ok(second.at - first.at >= 900, `first retry ${second.at - first.at} ms after the failure`);
      assert.ok(third.at - second.at >= 4500, `second retry ${third.at - second.at} ms after the first`);
      assert.ok(signedAt(second) > signedAt(first) && signedAt(third) > signedAt(second), 'signed afresh');
      await eventually(async () => (await stripe.events.retrieve(ev.id)).pending_webhooks, 0);
      await sleep(1500);
      assert.equal(rx.on('/flaky').length, 3, 'nothing more once delivered');
      await stripe.webhookEndpoints.del(ep.id);
    } finally {
      await rx.close();
    }
  });

  test('a disabled endpoint gets nothing, and deleting an endpoint drops its queue', async () => {
    const rx = await receiver(() => 503);
    try {
      const off = await stripe.webhookEndpoints.create({ url: rx.url('/off'), enabled_events: ['*'] });
      await stripe.webhookEndpoints.update(off.id, { disabled: true });
      const failing = await stripe.webhookEndpoints.create({ url: rx.url('/failing'), enabled_events: ['product.created'] });
      await stripe.products.create({ name: uniq('quiet') });
      const first = await waitFor(() => rx.on('/failing')[0], 'the failing attempt');
      const ev = verified(first, failing.secret);
      await stripe.webhookEndpoints.del(failing.id);
      assert.equal((await stripe.events.retrieve(ev.id)).pending_webhooks, 0, 'its deliveries went with it');
      // Disabled once its delivery is queued: the retry is dropped when it comes due.
      const later = await stripe.webhookEndpoints.create({ url: rx.url('/later'), enabled_events: ['product.created'] });
      await stripe.products.create({ name: uniq('later') });
      const once = await waitFor(() => rx.on('/later')[0], 'the attempt before disabling');
      const queued = verified(once, later.secret);
      await stripe.webhookEndpoints.update(later.id, { disabled: true });
      await eventually(async () => (await stripe.events.retrieve(queued.id)).pending_webhooks, 0, { timeout: 5000 });
      await sleep(1000);
      assert.equal(rx.on('/failing').length, 1, 'no retry to a deleted endpoint');
      assert.equal(rx.on('/later').length, 1, 'no retry to an endpoint disabled since');
      assert.equal(rx.on('/off').length, 0, 'nothing to a disabled endpoint');
      await stripe.webhookEndpoints.del(off.id);
      await stripe.webhookEndpoints.del(later.id);
    } finally {
      await rx.close();
    }
  });

  test('a queued delivery survives kill -9', async () => {
    let up = false;
    const rx = await receiver(() => (up ? 200 : 500));
    try {
      const ep = await stripe.webhookEndpoints.create({ url: rx.url('/durable'), enabled_events: ['product.created'] });
      await stripe.products.create({ name: uniq('durable') });
      const first = await waitFor(() => rx.on('/durable')[0], 'the first attempt');
      const ev = verified(first, ep.secret);
      await srv.restart({ hard: true }); // the failure may or may not be recorded yet
      up = true; // from here on only the restarted server can be answered 200
      // Its retry comes on the schedule, or as the lease of an unrecorded attempt ends, or
      // after one more failed retry if it came before `up` (5 s later): whichever, it comes.
      const again = await waitFor(() => rx.on('/durable').find((d) => d.status === 200), 'the delivery after the restart', 15000);
      assert.equal(verified(again, ep.secret).id, ev.id);
      await eventually(async () => (await srv.stripe.events.retrieve(ev.id)).pending_webhooks, 0, { timeout: 5000 });
      await srv.stripe.webhookEndpoints.del(ep.id);
    } finally {
      await rx.close();
    }
  });
});
