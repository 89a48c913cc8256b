// What code written for Stripe meets first when it is pointed at Tollgate: list filters,
// metadata limits on nested objects, previews with many lines, schedule errors, and the
// endpoints Tollgate does not have answering as unknown URLs (never as an unknown object).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { startServer, createCustomer, createMeter, expectStripeError, expectRawError, uniq, awayFromMinuteStart } from './helpers.mjs';

let srv, stripe;
const cat = {};
before(async () => {
  srv = await startServer();
  stripe = srv.stripe;
  cat.prod = await stripe.products.create({ name: 'Seats' });
  cat.seat = await stripe.prices.create({ product: cat.prod.id, currency: 'usd', unit_amount: 1000, recurring: { interval: 'month' } });
});
after(async () => { await srv?.close(); });

const payingCustomer = (extra = {}) => createCustomer(stripe, { invoice_settings: { default_payment_method: 'pm_x' }, ...extra });

test('customers.list({email}) finds the customers with exactly that email', async () => {
  const email = `${uniq('a')}@example.test`;
  const a = await createCustomer(stripe, { email });
  const b = await createCustomer(stripe, { email });
  await createCustomer(stripe, { email: email.toUpperCase() });
  const found = await stripe.customers.list({ email, limit: 1 });
  assert.deepEqual(found.data.map((c) => c.id), [b.id]);
  assert.equal(found.has_more, true);
  assert.deepEqual((await stripe.customers.list({ email }).autoPagingToArray({ limit: 10 })).map((c) => c.id), [b.id, a.id]);
  assert.deepEqual((await stripe.customers.list({ email: 'nobody@example.test' })).data, []);
});

test('a resource without search answers 404 unrecognized_request_url, not a lookup of an object named "search"', async () => {
  for (const resource of ['charges', 'payment_intents', 'coupons', 'quotes']) {
    const res = await srv.raw('GET', `/v1/${resource}/search?query=${encodeURIComponent("status:'x'")}`);
    expectRawError(res, { status: 404, code: 'unrecognized_request_url', message: new RegExp(`/v1/${resource}/search`) });
  }
});

test('subscription item metadata has Stripe\'s limits, on create and on update, and a refusal changes nothing', async () => {
  const cus = await payingCustomer();
  await expectStripeError(stripe.subscriptions.create({
    customer: cus.id, items: [{ price: cat.seat.id, metadata: { ['k'.repeat(41)]: 'v' } }],
  }), { status: 400, param: `items[0][metadata][${'k'.repeat(41)}]` });
  await expectStripeError(stripe.subscriptions.create({
    customer: cus.id, items: [{ price: cat.seat.id, metadata: { k: 'v'.repeat(501) } }],
  }), { status: 400, param: 'items[0][metadata][k]' });
  const many = Object.fromEntries(Array.from({ length: 51 }, (_, i) => [`k${i}`, 'v']));
  await expectStripeError(stripe.subscriptions.create({ customer: cus.id, items: [{ price: cat.seat.id, metadata: many }] }),
    { status: 400, param: 'items[0][metadata]' });
  assert.equal((await stripe.subscriptions.list({ customer: cus.id })).data.length, 0);
  const sub = await stripe.subscriptions.create({ customer: cus.id, items: [{ price: cat.seat.id, metadata: { a: '1' } }] });
  const item = sub.items.data[0].id;
  await expectStripeError(stripe.subscriptions.update(sub.id, { items: [{ id: item, metadata: { k: 'v'.repeat(501) } }] }),
    { status: 400, param: 'items[0][metadata][k]' });
  // 50 keys in all once merged: one more than the item has room for.
  const fifty = Object.fromEntries(Array.from({ length: 50 }, (_, i) => [`k${i}`, 'v']));
  await expectStripeError(stripe.subscriptions.update(sub.id, { items: [{ id: item, metadata: fifty }] }),
    { status: 400, param: 'items[0][metadata]' });
  assert.deepEqual((await stripe.subscriptions.retrieve(sub.id)).items.data[0].metadata, { a: '1' });
});

test('a preview with more than ten lines shows them all (it is not stored: there is no /lines to page)', async () => {
  const cus = await payingCustomer();
  const prices = [];
  for (let i = 0; i < 14; i++)
    prices.push(await stripe.prices.create({ product: cat.prod.id, currency: 'usd', unit_amount: 100 + i, recurring: { interval: 'month' } }));
  const sub = await stripe.subscriptions.create({ customer: cus.id, items: prices.map((p) => ({ price: p.id })) });
  const preview = await stripe.invoices.createPreview({ subscription: sub.id });
  assert.equal(preview.lines.data.length, 14);
  assert.equal(preview.lines.has_more, false);
  assert.equal(preview.lines.data.reduce((a, l) => a + l.amount, 0), preview.total);
  assert.equal(preview.ending_balance, null);
  // A stored invoice shows ten and pages the rest.
  const first = await stripe.invoices.retrieve(sub.latest_invoice);
  assert.equal(first.lines.data.length, 10);
  assert.equal(first.lines.has_more, true);
  assert.equal((await stripe.invoices.listLineItems(first.id).autoPagingToArray({ limit: 100 })).length, 14);
  assert.equal(first.status, 'open');
  assert.equal(first.ending_balance, 0, 'finalized: the (absent) customer balance is 0, not null');
});

test('schedules: an unknown one is named as a schedule; a subscription with one cannot make another', async () => {
  await expectStripeError(stripe.subscriptionSchedules.retrieve('sub_sched_nope'),
    { status: 404, code: 'resource_missing', message: "No such subscription schedule: 'sub_sched_nope'" });
  await expectStripeError(stripe.subscriptionSchedules.update('sub_sched_nope', { phases: [{ items: [{ price: cat.seat.id }] }] }),
    { status: 404, code: 'resource_missing', message: /No such subscription schedule/ });
  const cus = await payingCustomer();
  const sub = await stripe.subscriptions.create({ customer: cus.id, items: [{ price: cat.seat.id }] });
  const sched = await stripe.subscriptionSchedules.create({ from_subscription: sub.id });
  await expectStripeError(stripe.subscriptionSchedules.create({ from_subscription: sub.id }),
    { status: 400, param: 'from_subscription', message: new RegExp(`already attached to the schedule ${sched.id}`) });
});

test('subscription items: list, retrieve, create, update and delete, each a change of the subscription', async () => {
  const cus = await payingCustomer();
  const extra = await stripe.prices.create({ product: cat.prod.id, currency: 'usd', unit_amount: 500, recurring: { interval: 'month' } });
  const third = await stripe.prices.create({ product: cat.prod.id, currency: 'usd', unit_amount: 700, recurring: { interval: 'month' } });
  const sub = await stripe.subscriptions.create({ customer: cus.id, items: [{ price: cat.seat.id, quantity: 2 }] });
  const first = sub.items.data[0];

  const listed = await stripe.subscriptionItems.list({ subscription: sub.id });
  assert.equal(listed.url, '/v1/subscription_items');
  assert.deepEqual(listed.data.map((i) => [i.id, i.object, i.quantity, i.subscription]), [[first.id, 'subscription_item', 2, sub.id]]);
  assert.deepEqual(await stripe.subscriptionItems.retrieve(first.id), listed.data[0]);

  // Create: the new item, on the subscription, with a proration for the rest of the period.
  const created = await stripe.subscriptionItems.create({ subscription: sub.id, price: extra.id, quantity: 3, metadata: { tier: 'b' } },
    { idempotencyKey: uniq('si') });
  assert.equal(created.object, 'subscription_item');
  assert.equal(created.price.id, extra.id);
  assert.equal(created.quantity, 3);
  assert.deepEqual(created.metadata, { tier: 'b' });
  let now = await stripe.subscriptions.retrieve(sub.id);
  assert.deepEqual(now.items.data.map((i) => i.id), [first.id, created.id]);
  const page1 = await stripe.subscriptionItems.list({ subscription: sub.id, limit: 1 });
  assert.deepEqual([page1.data.map((i) => i.id), page1.has_more], [[first.id], true]);
  assert.deepEqual((await stripe.subscriptionItems.list({ subscription: sub.id, starting_after: first.id })).data.map((i) => i.id), [created.id]);
  assert.deepEqual((await stripe.subscriptionItems.list({ subscription: sub.id }).autoPagingToArray({ limit: 10 })).map((i) => i.id), [first.id, created.id]);

  // Update: quantity and metadata merge; price change.
  const updated = await stripe.subscriptionItems.update(created.id, { quantity: 4, metadata: { more: 'x' }, proration_behavior: 'none' });
  assert.equal(updated.id, created.id);
  assert.equal(updated.quantity, 4);
  assert.deepEqual(updated.metadata, { tier: 'b', more: 'x' });
  const moved = await stripe.subscriptionItems.update(created.id, { price: third.id });
  assert.equal(moved.price.id, third.id);

  // Delete: gone from the subscription; the last item cannot go.
  const deleted = await stripe.subscriptionItems.del(created.id);
  assert.deepEqual([deleted.id, deleted.object, deleted.deleted], [created.id, 'subscription_item', true]);
  now = await stripe.subscriptions.retrieve(sub.id);
  assert.deepEqual(now.items.data.map((i) => i.id), [first.id]);
  await expectStripeError(stripe.subscriptionItems.del(first.id), { status: 400, param: 'items' });
  assert.equal((await stripe.subscriptions.retrieve(sub.id)).items.data.length, 1);

  // Errors name the item request's own parameters and objects.
  await expectStripeError(stripe.subscriptionItems.retrieve(created.id), { status: 404, code: 'resource_missing', message: /No such subscription item/ });
  await expectStripeError(stripe.subscriptionItems.update('si_nope', { quantity: 1 }), { status: 404, param: 'id', message: "No such subscription item: 'si_nope'" });
  await expectStripeError(stripe.subscriptionItems.list({}), { status: 400, code: 'parameter_missing', param: 'subscription' });
  await expectStripeError(stripe.subscriptionItems.list({ subscription: 'sub_nope' }), { status: 404, param: 'subscription' });
  await expectStripeError(stripe.subscriptionItems.create({ subscription: 'sub_nope', price: extra.id }), { status: 404, param: 'subscription' });
  await expectStripeError(stripe.subscriptionItems.create({ subscription: sub.id, price: cat.seat.id }), { status: 400, param: 'price', message: /already on this subscription/ });
  await expectStripeError(stripe.subscriptionItems.create({ subscription: sub.id, price: 'price_nope' }), { status: 404, param: 'price' });
  await expectStripeError(stripe.subscriptionItems.create({ subscription: sub.id, price: extra.id, metadata: { k: 'v'.repeat(501) } }),
    { status: 400, param: 'metadata[k]', message: /^Invalid metadata value/ });
  await expectStripeError(stripe.subscriptionItems.update(first.id, { bogus: 1 }), { status: 400, code: 'parameter_unknown', param: 'bogus' });
  await expectStripeError(stripe.subscriptionItems.list({ subscription: sub.id, starting_after: 'si_nope' }), { status: 404, param: 'starting_after' });
  assert.equal((await stripe.subscriptions.retrieve(sub.id)).items.data.length, 1, 'refusals changed nothing');
});

test('an item of a subscription saved before items were tagged is still found (by reading the subscriptions)', async () => {
  const cus = await payingCustomer();
  const subs = [];
  for (let i = 0; i < 3; i++) subs.push(await stripe.subscriptions.create({ customer: cus.id, items: [{ price: cat.seat.id }] }));
  const item = subs[1].items.data[0].id;
  await srv.stop();
  // The tags as the previous version wrote them: prices and products, no items.
  const ids = subs.map((x) => `'${x.id}'`).join(',');
  const sql = `UPDATE objects SET tags=' price=${cat.seat.id} product=${cat.prod.id} ' ` +
    `WHERE kind='subscription' AND id IN (${ids});` +
    `SELECT count(*) FROM objects WHERE kind='subscription' AND id IN (${ids}) AND instr(tags, ' item=') > 0;`;
  const out = spawnSync('sqlite3', [join(srv.dir, 'tollgate.db')], { input: sql, encoding: 'utf8' });
  assert.equal(out.status, 0, out.stderr);
  assert.equal(out.stdout.trim(), '0', 'no item tags left on them');
  await srv.restart();
  const found = await stripe.subscriptionItems.retrieve(item);
  assert.equal(found.subscription, subs[1].id);
  const updated = await stripe.subscriptionItems.update(item, { quantity: 5 });
  assert.equal(updated.quantity, 5);
  // Saved again, it is tagged: found by its tag from now on.
  const tagged = spawnSync('sqlite3', [join(srv.dir, 'tollgate.db')],
    { input: `SELECT count(*) FROM objects WHERE kind='subscription' AND instr(tags, ' item=${item} ') > 0;`, encoding: 'utf8' });
  assert.equal(tagged.stdout.trim(), '1');
  await expectStripeError(stripe.subscriptionItems.retrieve('si_nope'), { status: 404, param: 'id' });
});

test('expand[] replaces ids with their objects, nested and in lists; a path that cannot be expanded is refused before anything runs', async () => {
  const clock = await stripe.testHelpers.testClocks.create({ frozen_time: Math.floor(Date.now() / 1000) });
  const cus = await payingCustomer({ test_clock: clock.id });
  const sub = await stripe.subscriptions.create({
    customer: cus.id, items: [{ price: cat.seat.id }],
    expand: ['latest_invoice.customer', 'items.data.price.product', 'test_clock'],
  });
  assert.equal(typeof sub.customer, 'string', 'not asked for');
  assert.equal(sub.latest_invoice.object, 'invoice');
  assert.equal(sub.latest_invoice.customer.id, cus.id);
  assert.equal(sub.latest_invoice.customer.object, 'customer');
  assert.equal(sub.items.data[0].price.product.name, 'Seats');
  assert.equal(sub.test_clock.id, clock.id);
  assert.equal(sub.test_clock.object, 'test_helpers.test_clock');

  const got = await stripe.subscriptions.retrieve(sub.id, { expand: ['customer', 'schedule'] });
  assert.equal(got.customer.email, cus.email);
  assert.equal(got.schedule, null, 'no schedule: null stays null');
  assert.equal(typeof got.latest_invoice, 'string');

  const listed = await stripe.subscriptions.list({ customer: cus.id, expand: ['data.customer', 'data.latest_invoice'] });
  assert.equal(listed.data[0].customer.id, cus.id);
  assert.equal(listed.data[0].latest_invoice.id, sub.latest_invoice.id);

  const inv = await stripe.invoices.retrieve(sub.latest_invoice.id, {
    expand: ['customer', 'parent.subscription_details.subscription', 'lines.data.pricing.price_details.price'],
  });
  assert.equal(inv.customer.id, cus.id);
  assert.equal(inv.parent.subscription_details.subscription.id, sub.id);
  assert.equal(inv.lines.data[0].pricing.price_details.price.id, cat.seat.id);
  assert.equal(inv.lines.data[0].pricing.price_details.price.unit_amount, 1000);

  const price = await stripe.prices.retrieve(cat.seat.id, { expand: ['product'] });
  assert.equal(price.product.id, cat.prod.id);
  const item = await stripe.subscriptionItems.retrieve(sub.items.data[0].id, { expand: ['price.product'] });
  assert.equal(item.price.product.id, cat.prod.id);
  const customer = await stripe.customers.retrieve(cus.id, { expand: ['test_clock'] });
  assert.equal(customer.test_clock.id, clock.id);
  const sched = await stripe.subscriptionSchedules.create({ from_subscription: sub.id, expand: ['subscription', 'customer'] });
  assert.equal(sched.subscription.id, sub.id);
  assert.equal(sched.customer.id, cus.id);

  const feature = await stripe.entitlements.features.create({ name: 'Expandable', lookup_key: uniq('exp') });
  await stripe.products.createFeature(cat.prod.id, { entitlement_feature: feature.id });
  const ents = await stripe.entitlements.activeEntitlements.list({ customer: cus.id, expand: ['data.feature'] });
  assert.equal(ents.data.find((e) => e.lookup_key === feature.lookup_key).feature.name, 'Expandable');

  // Expandable on Stripe and empty or opaque here: accepted, shown as they are.
  const opaque = await stripe.subscriptions.retrieve(sub.id, { expand: ['default_payment_method', 'discounts', 'customer.invoice_settings.default_payment_method'] });
  assert.equal(opaque.default_payment_method, null);
  assert.equal(opaque.customer.invoice_settings.default_payment_method, 'pm_x');

  // Refused: fields that do not exist or are not expandable, too deep, on a write too.
  for (const [call, path] of [
    [() => stripe.customers.retrieve(cus.id, { expand: ['bogus'] }), 'bogus'],
    [() => stripe.subscriptions.retrieve(sub.id, { expand: ['status'] }), 'status'],
    [() => stripe.subscriptions.retrieve(sub.id, { expand: ['items'] }), 'items'],
    [() => stripe.subscriptions.list({ expand: ['customer'] }), 'customer'],
    [() => stripe.invoices.retrieve(inv.id, { expand: ['customer.bogus'] }), 'customer.bogus'],
    // five expanded fields along one path: one more than Stripe allows
    [() => stripe.subscriptions.retrieve(sub.id, { expand: ['latest_invoice.parent.subscription_details.subscription.latest_invoice.parent.subscription_details.subscription.customer'] }), 'latest_invoice.parent.subscription_details.subscription.latest_invoice.parent.subscription_details.subscription.customer'],
  ])
    await expectStripeError(call(), { status: 400, param: 'expand', message: `This property cannot be expanded (${path}).` });
  const before = (await stripe.customers.list({ limit: 100 })).data.length;
  await expectStripeError(stripe.customers.create({ name: 'x', expand: ['nope'] }), { status: 400, param: 'expand' });
  assert.equal((await stripe.customers.list({ limit: 100 })).data.length, before, 'nothing created');
});

test('events: previous_attributes of *.updated, the request that caused them, filters by types and created', async () => {
  const cus = await payingCustomer();
  const sub = await stripe.subscriptions.create({ customer: cus.id, items: [{ price: cat.seat.id }] });
  const key = uniq('upd');
  const updated = await stripe.subscriptions.update(sub.id, { cancel_at_period_end: true, metadata: { plan: 'b' } },
    { idempotencyKey: key });
  const ev = (await stripe.events.list({ type: 'customer.subscription.updated', limit: 10 })).data
    .find((e) => e.data.object.id === sub.id);
  assert.ok(ev, 'the update recorded an event');
  // (Scheduling the cancellation also stamps canceled_at and the reason, as on Stripe.) Within
  // an object (metadata, cancellation_details) only the changed members show, an added one
  // as null, as on Stripe.
  assert.deepEqual(ev.data.previous_attributes, {
    cancel_at_period_end: false, canceled_at: null,
    cancellation_details: { reason: null }, metadata: { plan: null },
  });
  assert.equal(ev.data.object.cancel_at_period_end, true);
  assert.deepEqual(ev.request, { id: updated.lastResponse.requestId, idempotency_key: key });
  const created = (await stripe.events.list({ type: 'customer.subscription.created', limit: 10 })).data
    .find((e) => e.data.object.id === sub.id);
  assert.equal(created.data.previous_attributes, undefined, 'only *.updated events have them');
  assert.match(created.request.id, /^req_/);
  assert.match(created.request.idempotency_key, /^stripe-node-retry-/, 'the key the client sent by itself');

  // A product renamed; a lookup key moved off another price (that price's event).
  const prod = await stripe.products.create({ name: 'Before' });
  await stripe.products.update(prod.id, { name: 'After' });
  const pev = (await stripe.events.list({ type: 'product.updated', limit: 10 })).data.find((e) => e.data.object.id === prod.id);
  assert.equal(pev.data.previous_attributes.name, 'Before');
  assert.equal(pev.data.object.name, 'After');
  const lk = uniq('lk');
  const p1 = await stripe.prices.create({ product: prod.id, currency: 'usd', unit_amount: 5, lookup_key: lk });
  await stripe.prices.create({ product: prod.id, currency: 'usd', unit_amount: 6, lookup_key: lk, transfer_lookup_key: true });
  const moved = (await stripe.events.list({ type: 'price.updated', limit: 10 })).data.find((e) => e.data.object.id === p1.id);
  assert.deepEqual(moved.data.previous_attributes, { lookup_key: lk });

  // A resume: its updated event shows the pause it ended (the resumed event before it
  // already has the new state). Renewals run by a clock advance name no request.
  const clock = await stripe.testHelpers.testClocks.create({ frozen_time: Math.floor(Date.now() / 1000) });
  const pc = await createCustomer(stripe, { test_clock: clock.id });
  const ps = await stripe.subscriptions.create({ customer: pc.id, items: [{ price: cat.seat.id }], trial_period_days: 1,
    trial_settings: { end_behavior: { missing_payment_method: 'pause' } } });
  await stripe.testHelpers.testClocks.advance(clock.id, { frozen_time: clock.frozen_time + 2 * 86400 }, { idempotencyKey: uniq('adv') });
  const ofSub = async (type) => (await stripe.events.list({ type, limit: 20 })).data.filter((e) => e.data.object.id === ps.id);
  const [pausedEv] = await ofSub('customer.subscription.paused');
  assert.deepEqual(pausedEv.request, { id: null, idempotency_key: null }, 'the trial ended by itself');
  await stripe.subscriptions.update(ps.id, { default_payment_method: 'pm_x' });
  await stripe.subscriptions.resume(ps.id, { billing_cycle_anchor: 'now' });
  const [resumedUpdate] = await ofSub('customer.subscription.updated');
  assert.equal(resumedUpdate.data.previous_attributes.status, 'paused');
  assert.equal(resumedUpdate.data.object.status, 'active');
  assert.match(resumedUpdate.request.id, /^req_/);

  // types[] and created filters.
  const both = await stripe.events.list({ types: ['product.updated', 'price.updated'], limit: 100 });
  assert.ok(both.data.length >= 2);
  assert.ok(both.data.every((e) => ['product.updated', 'price.updated'].includes(e.type)));
  const t = ev.created;
  const atT = await stripe.events.list({ created: { gte: t, lte: t }, limit: 100 });
  assert.ok(atT.data.some((e) => e.id === ev.id) && atT.data.every((e) => e.created === t));
  assert.deepEqual((await stripe.events.list({ created: { gt: t + 30 * 86400 } })).data, []);
  assert.ok((await stripe.events.list({ created: t })).data.every((e) => e.created === t));
  await expectStripeError(stripe.events.list({ type: 'price.updated', types: ['price.updated'] }), { status: 400, param: 'types' });
  await expectStripeError(stripe.events.list({ types: Array.from({ length: 21 }, (_, i) => `t${i}`) }), { status: 400, param: 'types' });
  await expectStripeError(stripe.events.list({ created: { after: t } }), { status: 400, code: 'parameter_unknown', param: 'created[after]' });
  await expectStripeError(stripe.events.list({ created: 'soon' }), { status: 400, param: 'created' });
});

test('lists of customers, products, prices, subscriptions and invoices filter by created', async () => {
  const now = Math.floor(Date.now() / 1000);
  const at = [now - 10 * 86400, now - 5 * 86400];
  const subs = [];
  for (const t of at) {
    const clock = await stripe.testHelpers.testClocks.create({ frozen_time: t });
    const cus = await payingCustomer({ test_clock: clock.id });
    subs.push(await stripe.subscriptions.create({ customer: cus.id, items: [{ price: cat.seat.id }] }));
  }
  assert.deepEqual(subs.map((s) => s.created), at, 'created on their clocks');
  const ids = (l) => l.data.map((x) => x.id);
  for (const [i, s] of subs.entries()) {
    assert.deepEqual(ids(await stripe.subscriptions.list({ customer: s.customer, created: at[i] })), [s.id]);
    assert.deepEqual(ids(await stripe.subscriptions.list({ customer: s.customer, created: { gt: at[i] } })), []);
    assert.deepEqual(ids(await stripe.invoices.list({ customer: s.customer, created: { gte: at[i], lt: at[i] + 1 } })), [s.latest_invoice]);
    assert.deepEqual(ids(await stripe.invoices.list({ customer: s.customer, created: { lte: at[i] - 1 } })), []);
  }
  const cus = await createCustomer(stripe);
  assert.ok(ids(await stripe.customers.list({ created: { gte: cus.created }, limit: 100 })).includes(cus.id));
  assert.deepEqual(ids(await stripe.customers.list({ created: { lt: cus.created - 86400 * 365 * 30 } })), []);
  const prod = await stripe.products.create({ name: 'Dated' });
  assert.ok(ids(await stripe.products.list({ created: { gte: prod.created }, limit: 100 })).includes(prod.id));
  assert.deepEqual(ids(await stripe.products.list({ created: { gt: prod.created + 3600 } })), []);
  assert.deepEqual(ids(await stripe.prices.list({ product: cat.prod.id, created: { gt: now + 3600 } })), []);
  assert.ok((await stripe.prices.list({ product: cat.prod.id, created: { lte: now + 3600 } })).data.length > 0);
});

test('schedules: list, metadata, an update without phases, release and cancel (both kept); a subscription without one has none', async () => {
  const cus = await payingCustomer();
  const other = await stripe.prices.create({ product: cat.prod.id, currency: 'usd', unit_amount: 2000, recurring: { interval: 'month' } });
  const plain = await stripe.subscriptions.create({ customer: cus.id, items: [{ price: cat.seat.id }] });
  await expectStripeError(stripe.subscriptionSchedules.retrieve(`sub_sched_${plain.id.slice(4)}`),
    { status: 404, message: /No such subscription schedule/ });
  const a = await stripe.subscriptions.create({ customer: cus.id, items: [{ price: cat.seat.id }] });
  const b = await stripe.subscriptions.create({ customer: cus.id, items: [{ price: cat.seat.id }] });
  const sa = await stripe.subscriptionSchedules.create({ from_subscription: a.id, metadata: { team: 'a' } });
  const sb = await stripe.subscriptionSchedules.create({ from_subscription: b.id });
  assert.deepEqual(sa.metadata, { team: 'a' });

  // Listed newest first, by customer, and paged by schedule ids.
  const listed = await stripe.subscriptionSchedules.list({ customer: cus.id });
  assert.deepEqual(listed.data.map((x) => x.id), [sb.id, sa.id]);
  assert.equal(listed.url, '/v1/subscription_schedules');
  assert.deepEqual((await stripe.subscriptionSchedules.list({ customer: cus.id, starting_after: sb.id })).data.map((x) => x.id), [sa.id]);
  assert.deepEqual((await stripe.subscriptionSchedules.list({ customer: cus.id }).autoPagingToArray({ limit: 10 })).map((x) => x.id), [sb.id, sa.id]);

  // Metadata alone (phases left as they are), then a next phase, then metadata again.
  const m = await stripe.subscriptionSchedules.update(sa.id, { metadata: { team: 'b', owner: 'x' } });
  assert.deepEqual(m.metadata, { team: 'b', owner: 'x' });
  const phased = await stripe.subscriptionSchedules.update(sa.id, { phases: [{ items: [{ price: cat.seat.id, quantity: 1 }] }, { items: [{ price: other.id }] }] });
  assert.equal(phased.phases.length, 2);
  const kept = await stripe.subscriptionSchedules.update(sa.id, { metadata: { owner: '' } });
  assert.equal(kept.phases.length, 2, 'an update without phases keeps them');
  assert.deepEqual(kept.metadata, { team: 'b' });

  // Release: the plan is dropped, the subscription goes on as it is.
  const released = await stripe.subscriptionSchedules.release(sa.id);
  assert.equal(released.status, 'released');
  assert.equal(released.released_subscription, a.id);
  assert.ok(released.released_at > 0);
  const after = await stripe.subscriptions.retrieve(a.id);
  assert.equal(after.schedule, null);
  assert.equal(after.status, 'active');
  assert.deepEqual(after.items.data.map((i) => i.price.id), [cat.seat.id]);
  // Kept as released, as Stripe keeps it: retrieved and listed, but not released again.
  assert.deepEqual(await stripe.subscriptionSchedules.retrieve(sa.id), released);
  await expectStripeError(stripe.subscriptionSchedules.release(sa.id), { status: 400, code: 'resource_state_invalid' });
  assert.deepEqual((await stripe.subscriptionSchedules.list({ customer: cus.id })).data.map((x) => [x.id, x.status]),
    [[sb.id, 'active'], [sa.id, 'released']]);

  // Cancel: its subscription ends at once, with a final invoice of its usage (invoice_now is
  // true by default here, as on Stripe); prorate is refused as on a subscription cancel.
  const meter = await createMeter(stripe);
  const metered = await stripe.prices.create({ product: cat.prod.id, currency: 'usd', unit_amount: 10,
    recurring: { interval: 'month', usage_type: 'metered', meter: meter.id } });
  await awayFromMinuteStart(); // created and canceled in one second, hh:mm:00 would bill nothing
  const m1 = await stripe.subscriptions.create({ customer: cus.id, items: [{ price: metered.id }] });
  await stripe.billing.meterEvents.create({ event_name: meter.event_name, payload: { stripe_customer_id: cus.id, value: '7' } });
  const sm = await stripe.subscriptionSchedules.create({ from_subscription: m1.id });
  await expectStripeError(stripe.subscriptionSchedules.cancel(sm.id, { prorate: true }), { status: 400, code: 'parameter_unknown' });
  await stripe.subscriptionSchedules.cancel(sm.id);
  const finals = (await stripe.invoices.list({ subscription: m1.id })).data;
  assert.deepEqual(finals.map((i) => [i.billing_reason, i.total]), [['subscription_cycle', 70], ['subscription_create', 0]]);
  const canceled = await stripe.subscriptionSchedules.cancel(sb.id, { invoice_now: false });
  assert.equal(canceled.status, 'canceled');
  assert.ok(canceled.canceled_at > 0);
  assert.equal((await stripe.subscriptions.retrieve(b.id)).status, 'canceled');
  assert.equal((await stripe.subscriptionSchedules.retrieve(sb.id)).status, 'canceled');
  await expectStripeError(stripe.subscriptionSchedules.cancel(sb.id), { status: 400, code: 'resource_state_invalid' });
  await expectStripeError(stripe.subscriptionSchedules.update(sb.id, { metadata: { a: '1' } }), { status: 400, code: 'resource_state_invalid' });
  await expectStripeError(stripe.subscriptionSchedules.update(sa.id, { bogus: 1 }), { status: 400, code: 'parameter_unknown' });
});

test('subscriptions: payment_behavior is accepted where it means what Tollgate does, and status=ended lists the canceled', async () => {
  const cus = await payingCustomer();
  const subs = [];
  for (const payment_behavior of ['allow_incomplete', 'error_if_incomplete', 'pending_if_incomplete']) {
    const s = await stripe.subscriptions.create({ customer: cus.id, items: [{ price: cat.seat.id }], payment_behavior });
    assert.equal(s.status, 'active');
    subs.push(s);
  }
  await stripe.subscriptions.update(subs[0].id, { metadata: { a: '1' }, payment_behavior: 'allow_incomplete' });
  const before = (await stripe.subscriptions.list({ customer: cus.id, status: 'all' })).data.length;
  await expectStripeError(stripe.subscriptions.create({ customer: cus.id, items: [{ price: cat.seat.id }], payment_behavior: 'default_incomplete' }),
    { status: 400, param: 'payment_behavior', message: /not supported/ });
  await expectStripeError(stripe.subscriptions.create({ customer: cus.id, items: [{ price: cat.seat.id }], payment_behavior: 'sometimes' }),
    { status: 400, param: 'payment_behavior' });
  assert.equal((await stripe.subscriptions.list({ customer: cus.id, status: 'all' })).data.length, before, 'nothing created');
  await stripe.subscriptions.cancel(subs[1].id);
  assert.deepEqual((await stripe.subscriptions.list({ customer: cus.id, status: 'ended' })).data.map((s) => s.id), [subs[1].id]);
});

test('customers: phone, address and shipping, kept, replaced, removed, and copied onto invoices', async () => {
  const address = { line1: '1 Main St', city: 'Springfield', postal_code: '12345', country: 'US' };
  const cus = await stripe.customers.create({
    name: 'Addressed', phone: '+15550100', address, invoice_settings: { default_payment_method: 'pm_x' },
    shipping: { name: 'Dock 4', phone: '+15550101', address: { line1: '2 Pier Rd', country: 'US' } },
  });
  assert.deepEqual(cus.address, { city: 'Springfield', country: 'US', line1: '1 Main St', line2: null, postal_code: '12345', state: null });
  assert.equal(cus.phone, '+15550100');
  assert.deepEqual(cus.shipping, {
    address: { city: null, country: 'US', line1: '2 Pier Rd', line2: null, postal_code: null, state: null },
    name: 'Dock 4', phone: '+15550101',
  });
  assert.deepEqual((await stripe.customers.retrieve(cus.id)).address, cus.address);

  const sub = await stripe.subscriptions.create({ customer: cus.id, items: [{ price: cat.seat.id }] });
  const inv = await stripe.invoices.retrieve(sub.latest_invoice);
  assert.deepEqual(inv.customer_address, cus.address);
  assert.equal(inv.customer_phone, '+15550100');
  assert.deepEqual(inv.customer_shipping, cus.shipping);
  assert.equal(inv.customer_name, 'Addressed');

  // An address given replaces the address; "" removes it, and shipping; phone alone changes.
  const moved = await stripe.customers.update(cus.id, { address: { city: 'Shelbyville', country: 'US' }, phone: '+15550199' });
  assert.deepEqual(moved.address, { city: 'Shelbyville', country: 'US', line1: null, line2: null, postal_code: null, state: null });
  assert.equal(moved.phone, '+15550199');
  assert.equal(moved.shipping.name, 'Dock 4', 'shipping left as it was');
  const bare = await stripe.customers.update(cus.id, { address: '', shipping: '', phone: '' });
  assert.deepEqual([bare.address, bare.shipping, bare.phone], [null, null, null]);
  assert.deepEqual((await stripe.invoices.retrieve(inv.id)).customer_address, cus.address, 'a finalized invoice keeps its copy');

  for (const [params, param] of [
    [{ shipping: { address: { line1: 'x' } } }, 'shipping[name]'],
    [{ shipping: { name: 'x' } }, 'shipping[address]'],
    [{ shipping: { name: 'x', address: '' } }, 'shipping[address]'],
    [{ address: { planet: 'Mars' } }, 'address[planet]'],
    [{ address: { city: 'x'.repeat(5001) } }, 'address[city]'],
    [{ phone: '1'.repeat(21) }, 'phone'],
  ])
    await expectStripeError(stripe.customers.update(cus.id, params), { status: 400, param });
  assert.deepEqual((await stripe.customers.retrieve(cus.id)).address, null, 'refusals changed nothing');
});
