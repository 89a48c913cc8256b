// Customers through the official stripe client: CRUD, metadata semantics, errors, pagination,
// and test/live isolation.

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, expectStripeError, expectRawError, nowSec } from './helpers.mjs';

let srv;
let stripe;
before(async () => {
  srv = await startServer();
  stripe = srv.stripe;
});
after(async () => { await srv?.close(); });

describe('customer CRUD', () => {
  test('create returns the customer with every given field', async () => {
    const t0 = nowSec();
    const c = await stripe.customers.create({
      email: 'ada@example.com',
      name: 'Ada Lovelace',
      description: 'first programmer',
      metadata: { plan: 'pro', region: 'eu' },
    });
    assert.match(c.id, /^cus_[A-Za-z0-9]+$/);
    assert.equal(c.object, 'customer');
    assert.equal(c.email, 'ada@example.com');
    assert.equal(c.name, 'Ada Lovelace');
    assert.equal(c.description, 'first programmer');
    assert.deepEqual(c.metadata, { plan: 'pro', region: 'eu' });
    assert.equal(c.livemode, false);
    assert.ok(Number.isInteger(c.created), `created ${c.created}`);
    assert.ok(c.created >= t0 - 2 && c.created <= nowSec() + 2, `created ${c.created}`);
    assert.ok(c.lastResponse.requestId.startsWith('req_'));
    assert.equal(c.lastResponse.statusCode, 200);
  });

  test('create with no params gives null optional fields and empty metadata', async () => {
    const c = await stripe.customers.create();
    assert.match(c.id, /^cus_/);
    assert.equal(c.email, null);
    assert.equal(c.name, null);
    assert.equal(c.description, null);
    assert.deepEqual(c.metadata, {});
  });

  test('retrieve returns the same object as create', async () => {
    const c = await stripe.customers.create({ email: 'r@example.com', metadata: { a: '1' } });
    const r = await stripe.customers.retrieve(c.id);
    assert.deepStrictEqual({ ...r }, { ...c });
  });

  test('update changes given fields, unsets with empty string, edits metadata per key', async () => {
    const c = await stripe.customers.create({
      email: 'u@example.com', name: 'Before', description: 'desc',
      metadata: { keep: 'k', drop: 'd', change: 'old' },
    });
    const u = await stripe.customers.update(c.id, {
      name: 'After',
      description: '',
      metadata: { drop: '', change: 'new', added: 'x' },
    });
    assert.equal(u.id, c.id);
    assert.equal(u.name, 'After');
    assert.equal(u.email, 'u@example.com');
    assert.equal(u.description, null);
    assert.deepEqual(u.metadata, { keep: 'k', change: 'new', added: 'x' });
    const r = await stripe.customers.retrieve(c.id);
    assert.deepStrictEqual({ ...r }, { ...u });
  });

  test("metadata '' clears every key", async () => {
    const c = await stripe.customers.create({ metadata: { a: '1', b: '2' } });
    const u = await stripe.customers.update(c.id, { metadata: '' });
    assert.deepEqual(u.metadata, {});
    const r = await stripe.customers.retrieve(c.id);
    assert.deepEqual(r.metadata, {});
  });

  test('delete returns the deleted stub; the customer leaves the list', async () => {
    const c = await stripe.customers.create({ name: 'to delete' });
    const d = await stripe.customers.del(c.id);
    assert.deepStrictEqual({ ...d }, { id: c.id, object: 'customer', deleted: true });
    const list = await stripe.customers.list({ limit: 100 });
    assert.ok(!list.data.some((x) => x.id === c.id), 'deleted customer still listed');
    // Stripe answers a retrieve of a deleted customer with the deleted stub; a 404 is also a
    // defensible choice for a clone. Either way it must not come back as a live customer.
    let r;
    try {
      r = await stripe.customers.retrieve(c.id);
    } catch (e) {
      assert.equal(e.statusCode, 404);
      assert.equal(e.code, 'resource_missing');
      return;
    }
    assert.equal(r.id, c.id);
    assert.equal(r.deleted, true);
    assert.equal(r.object, 'customer');
  });

  test('deleting an unknown customer is 404', async () => {
    await expectStripeError(stripe.customers.del('cus_doesnotexist'), {
      status: 404, code: 'resource_missing', param: 'id',
      message: "No such customer: 'cus_doesnotexist'",
    });
  });

  test('unknown id is 404 resource_missing', async () => {
    await expectStripeError(stripe.customers.retrieve('cus_doesnotexist'), {
      status: 404, code: 'resource_missing', param: 'id', cls: 'StripeInvalidRequestError',
      message: "No such customer: 'cus_doesnotexist'",
    });
    await expectStripeError(stripe.customers.update('cus_doesnotexist', { name: 'x' }), {
      status: 404, code: 'resource_missing', param: 'id',
    });
  });

  test('unknown parameter is 400 parameter_unknown naming it', async () => {
    await expectStripeError(stripe.customers.create({ name: 'x', favourite_colour: 'blue' }), {
      status: 400, code: 'parameter_unknown', param: 'favourite_colour',
      message: /Received unknown parameter: favourite_colour/,
    });
    const c = await stripe.customers.create({ name: 'y' });
    await expectStripeError(stripe.customers.update(c.id, { shoe_size: '42' }), {
      status: 400, code: 'parameter_unknown', param: 'shoe_size',
      message: /Received unknown parameter: shoe_size/,
    });
  });

  test('metadata values and keys are limited', async () => {
    await expectStripeError(stripe.customers.create({ metadata: { ['k'.repeat(41)]: 'v' } }), {
      status: 400, code: 'parameter_invalid',
    });
    await expectStripeError(stripe.customers.create({ metadata: { k: 'v'.repeat(501) } }), {
      status: 400, code: 'parameter_invalid',
    });
    const ok = await stripe.customers.create({ metadata: { ['k'.repeat(40)]: 'v'.repeat(500) } });
    assert.equal(ok.metadata['k'.repeat(40)], 'v'.repeat(500));
  });
});

describe('customer list pagination', () => {
  // A server of its own, so the list holds exactly the 25 customers made here.
  let p;
  let ps;
  let ids; // newest first
  before(async () => {
    p = await startServer();
    ps = p.stripe;
    const created = [];
    for (let i = 0; i < 25; i++) {
      created.push((await ps.customers.create({ name: `c${i}` })).id);
    }
    ids = created.reverse();
  });
  after(async () => { await p?.close(); });

  test('default page: 10 newest first, has_more, list envelope', async () => {
    const l = await ps.customers.list();
    assert.equal(l.object, 'list');
    assert.equal(l.url, '/v1/customers');
    assert.equal(l.has_more, true);
    assert.deepEqual(l.data.map((c) => c.id), ids.slice(0, 10));
    assert.equal(l.data[0].name, 'c24');
  });

  test('limit', async () => {
    const l3 = await ps.customers.list({ limit: 3 });
    assert.deepEqual(l3.data.map((c) => c.id), ids.slice(0, 3));
    assert.equal(l3.has_more, true);
    const l25 = await ps.customers.list({ limit: 25 });
    assert.deepEqual(l25.data.map((c) => c.id), ids);
    assert.equal(l25.has_more, false);
    const l24 = await ps.customers.list({ limit: 24 });
    assert.equal(l24.has_more, true);
    const l100 = await ps.customers.list({ limit: 100 });
    assert.deepEqual(l100.data.map((c) => c.id), ids);
    assert.equal(l100.has_more, false);
  });

  test('starting_after gives the next older page', async () => {
    const l = await ps.customers.list({ limit: 5, starting_after: ids[4] });
    assert.deepEqual(l.data.map((c) => c.id), ids.slice(5, 10));
    assert.equal(l.has_more, true);
    const tail = await ps.customers.list({ limit: 5, starting_after: ids[19] });
    assert.deepEqual(tail.data.map((c) => c.id), ids.slice(20, 25));
    assert.equal(tail.has_more, false);
    const none = await ps.customers.list({ limit: 5, starting_after: ids[24] });
    assert.deepEqual(none.data, []);
    assert.equal(none.has_more, false);
  });

  test('ending_before gives the adjacent newer page, still newest first', async () => {
    const l = await ps.customers.list({ limit: 3, ending_before: ids[10] });
    assert.deepEqual(l.data.map((c) => c.id), ids.slice(7, 10));
    assert.equal(l.has_more, true);
    const head = await ps.customers.list({ limit: 5, ending_before: ids[3] });
    assert.deepEqual(head.data.map((c) => c.id), ids.slice(0, 3));
    assert.equal(head.has_more, false);
    const none = await ps.customers.list({ limit: 5, ending_before: ids[0] });
    assert.deepEqual(none.data, []);
    assert.equal(none.has_more, false);
  });

  test('auto-pagination walks all 25 exactly once, in order', async () => {
    const seen = [];
    for await (const c of ps.customers.list({ limit: 3 })) seen.push(c.id);
    assert.deepEqual(seen, ids);
    const viaArray = await ps.customers.list({ limit: 7 }).autoPagingToArray({ limit: 1000 });
    assert.deepEqual(viaArray.map((c) => c.id), ids);
  });

  test('auto-pagination backwards with ending_before', async () => {
    const seen = [];
    for await (const c of ps.customers.list({ limit: 4, ending_before: ids[20] })) seen.push(c.id);
    // stripe-node walks towards newer objects, yielding each page from its end.
    assert.deepEqual(seen, ids.slice(0, 20).reverse());
  });

  test('limit out of range is 400 parameter_invalid', async () => {
    for (const limit of [0, 101, -1]) {
      await expectStripeError(ps.customers.list({ limit }), {
        status: 400, code: 'parameter_invalid', param: 'limit',
      });
    }
  });

  test('non-integer limit is 400 parameter_invalid_integer', async () => {
    const r = await p.raw('GET', '/v1/customers?limit=abc');
    expectRawError(r, { status: 400, code: 'parameter_invalid_integer', param: 'limit' });
  });

  test('starting_after with ending_before is 400 parameters_exclusive', async () => {
    await expectStripeError(ps.customers.list({ starting_after: ids[3], ending_before: ids[1] }), {
      status: 400, code: 'parameters_exclusive', param: null,
    });
  });

  test('delete removes exactly one from the list', async () => {
    const victim = ids[12];
    await ps.customers.del(victim);
    const l = await ps.customers.list({ limit: 100 });
    assert.deepEqual(l.data.map((c) => c.id), ids.filter((id) => id !== victim));
    ids = ids.filter((id) => id !== victim);
  });
});

describe('test and live modes are disjoint', () => {
  test('livemode follows the key and objects do not cross modes', async () => {
    const lc = await srv.liveStripe.customers.create({ name: 'live one', email: 'live@example.com' });
    assert.match(lc.id, /^cus_/);
    assert.equal(lc.livemode, true);
    const tc = await stripe.customers.create({ name: 'test one' });
    assert.equal(tc.livemode, false);

    await expectStripeError(stripe.customers.retrieve(lc.id), {
      status: 404, code: 'resource_missing', param: 'id',
    });
    await expectStripeError(srv.liveStripe.customers.retrieve(tc.id), {
      status: 404, code: 'resource_missing', param: 'id',
    });
    await expectStripeError(stripe.customers.update(lc.id, { name: 'hijack' }), {
      status: 404, code: 'resource_missing', param: 'id',
    });
    await expectStripeError(stripe.customers.del(lc.id), {
      status: 404, code: 'resource_missing', param: 'id',
    });

    const liveList = await srv.liveStripe.customers.list({ limit: 100 });
    assert.deepEqual(liveList.data.map((c) => c.id), [lc.id]);
    assert.ok(liveList.data.every((c) => c.livemode === true));
    const testList = await stripe.customers.list({ limit: 100 });
    assert.ok(!testList.data.some((c) => c.id === lc.id));
    assert.ok(testList.data.some((c) => c.id === tc.id));
    assert.ok(testList.data.every((c) => c.livemode === false));

    const still = await srv.liveStripe.customers.retrieve(lc.id);
    assert.equal(still.name, 'live one');
  });
});

describe('customer events', () => {
  /** The events of one customer, newest first, as GET /v1/events lists them. */
  async function eventsOf(id) {
    const all = await stripe.events.list({ type: 'customer.*', limit: 100 }).autoPagingToArray({ limit: 10000 });
    return all.filter((e) => e.data.object.id === id);
  }
  const strip = ({ lastResponse, ...o }) => o;

  test('create, update and delete each record their event, with the object as the API showed it', async () => {
    const c = await stripe.customers.create(
      { email: 'grace@example.com', name: 'Grace', metadata: { tier: 'gold' } },
      { idempotencyKey: 'cust-event-create' },
    );
    let evs = await eventsOf(c.id);
    assert.equal(evs.length, 1);
    const created = evs[0];
    assert.equal(created.type, 'customer.created');
    assert.match(created.id, /^evt_/);
    assert.equal(created.object, 'event');
    assert.deepEqual(created.data.object, strip(c));
    assert.equal(created.data.previous_attributes, undefined);
    assert.equal(created.created, c.created);
    assert.deepEqual(created.request, { id: c.lastResponse.requestId, idempotency_key: 'cust-event-create' });
    assert.deepEqual(strip(await stripe.events.retrieve(created.id)), strip(created));

    const u = await stripe.customers.update(c.id, { email: 'grace@navy.mil', metadata: { tier: '', unit: 'x' } });
    evs = await eventsOf(c.id);
    assert.deepEqual(evs.map((e) => e.type), ['customer.updated', 'customer.created'], 'newest first');
    assert.deepEqual(evs[0].data.object, strip(u));
    // Within metadata only the changed keys show: a removed one with its value, an added one null.
    assert.deepEqual(evs[0].data.previous_attributes, { email: 'grace@example.com', metadata: { tier: 'gold', unit: null } });

    // Keys are written as they are, escapes and all; an address that was null stays null whole.
    const odd = await stripe.customers.update(c.id, { metadata: { 'we"ird\\key': 'v' }, address: { city: 'Arlington' } });
    const [oddEv] = await eventsOf(c.id);
    assert.deepEqual(oddEv.data.object, strip(odd));
    assert.deepEqual(oddEv.data.previous_attributes, { address: null, metadata: { 'we"ird\\key': null } });
    await stripe.customers.update(c.id, { metadata: { 'we"ird\\key': '' }, address: { city: '' } });
    const u2 = await stripe.customers.update(c.id, {}); // nothing changes
    assert.deepEqual(strip(u2), strip(u));
    evs = await eventsOf(c.id);
    assert.equal(evs.length, 4);
    assert.deepEqual(evs[0].data.previous_attributes, {
      address: { city: 'Arlington', country: null, line1: null, line2: null, postal_code: null, state: null },
      metadata: { 'we"ird\\key': 'v' },
    });

    // An update that changes nothing records nothing ("whenever any property changes"), nor
    // do failed requests.
    await stripe.customers.update(c.id, { email: 'grace@navy.mil', metadata: { unit: 'x' } });
    await expectStripeError(stripe.customers.update(c.id, { email: 'x'.repeat(513) }), { status: 400, param: 'email' });
    await expectStripeError(stripe.customers.update(c.id, { no_such_param: 1 }), { status: 400, code: 'parameter_unknown' });
    assert.equal((await eventsOf(c.id)).length, 4);

    const gone = await stripe.customers.del(c.id);
    assert.equal(gone.deleted, true);
    evs = await eventsOf(c.id);
    assert.equal(evs[0].type, 'customer.deleted');
    assert.deepEqual(evs[0].data.object, strip(u), 'the customer as it was, not the deleted stub');
    await expectStripeError(stripe.customers.del(c.id), { status: 404, code: 'resource_missing' });
    assert.equal((await eventsOf(c.id)).length, 5, 'deleting it again records nothing');
  });

  test("a deleted customer's subscriptions end first; a test clock's customers go with it", async () => {
    const product = await stripe.products.create({ name: 'events plan' });
    const price = await stripe.prices.create({ product: product.id, currency: 'usd', unit_amount: 500, recurring: { interval: 'month' } });
    const c = await stripe.customers.create({ name: 'subscribed' });
    const sub = await stripe.subscriptions.create({ customer: c.id, items: [{ price: price.id }] });
    await stripe.customers.del(c.id);
    const recent = await stripe.events.list({ limit: 5 });
    const i = recent.data.findIndex((e) => e.type === 'customer.deleted' && e.data.object.id === c.id);
    const j = recent.data.findIndex((e) => e.type === 'customer.subscription.deleted' && e.data.object.id === sub.id);
    assert.ok(i >= 0 && j > i, `customer.deleted (${i}) is newer than customer.subscription.deleted (${j})`);

    const frozen = nowSec() - 86400 * 30;
    const clock = await stripe.testHelpers.testClocks.create({ frozen_time: frozen });
    const onClock = await stripe.customers.create({ name: 'on a clock', test_clock: clock.id });
    let evs = await eventsOf(onClock.id);
    assert.deepEqual(evs.map((e) => e.type), ['customer.created']);
    assert.equal(evs[0].created, frozen, "at the time of the customer's world");
    await stripe.testHelpers.testClocks.del(clock.id);
    evs = await eventsOf(onClock.id);
    assert.deepEqual(evs.map((e) => e.type), ['customer.deleted', 'customer.created']);
    assert.deepEqual(evs[0].data.object, strip(onClock));
  });
});
