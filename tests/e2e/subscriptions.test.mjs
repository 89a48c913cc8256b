// Subscriptions and invoices through the official stripe client, on test clocks: creation
// rules, lists, updates with prorations, cancellation, trials and their end behaviours, the
// month-end anchor, the finalization grace period, and every invoice action.
//
// Each scenario runs on its own test clock with its own customer, so scenarios share the
// server and the catalog but not time. Usage is sent after the clock reaches the time it is
// stamped with (a clock customer's events must be within [clock - 35 days, clock + 5 min]),
// and never in the minute of a period boundary.

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, expectStripeError, createMeter, uniq, HOUR, DAY } from './helpers.mjs';

let srv;
let stripe;

const utc = (y, m, d, h = 0, mi = 0, s = 0) => Date.UTC(y, m - 1, d, h, mi, s) / 1000;
const dec = (v) => (v === null || v === undefined ? v : String(v));
const MONTH_JAN = 31 * DAY; // Jan 1 -> Feb 1

/** n/d rounded half away from zero, in BigInt (exact). */
function roundDiv(n, d) {
  const neg = n < 0n;
  const a = neg ? -n : n;
  let q = a / d;
  if ((a % d) * 2n >= d) q += 1n;
  return Number(neg ? -q : q);
}
/** amount (minor units, integer) * remaining / length, rounded once half away from zero. */
const prorated = (amount, remaining, length) => roundDiv(BigInt(amount) * BigInt(remaining), BigInt(length));

// The catalog every scenario uses.
const cat = {};
before(async () => {
  srv = await startServer();
  stripe = srv.stripe;
  cat.meter = await createMeter(stripe);
  cat.seatProduct = await stripe.products.create({ name: 'Seat' });
  cat.callsProduct = await stripe.products.create({ name: 'API calls' });
  const rec = (extra = {}) => ({ interval: 'month', ...extra });
  cat.seat = await stripe.prices.create({ product: cat.seatProduct.id, currency: 'usd', unit_amount: 1999, recurring: rec() });
  // 3 cents a call.
  cat.calls = await stripe.prices.create({
    product: cat.callsProduct.id, currency: 'usd', unit_amount: 3,
    recurring: rec({ usage_type: 'metered', meter: cat.meter.id }),
  });
  cat.seatYearly = await stripe.prices.create({ product: cat.seatProduct.id, currency: 'usd', unit_amount: 19990, recurring: { interval: 'year' } });
  cat.seatEur = await stripe.prices.create({ product: cat.seatProduct.id, currency: 'eur', unit_amount: 1799, recurring: rec() });
  cat.seatInactive = await stripe.prices.create({ product: cat.seatProduct.id, currency: 'usd', unit_amount: 1, recurring: rec(), active: false });
  cat.oneTime = await stripe.prices.create({ product: cat.seatProduct.id, currency: 'usd', unit_amount: 500 });
  cat.addon = await stripe.prices.create({ product: cat.seatProduct.id, currency: 'usd', unit_amount: 500, recurring: rec() });
});
after(async () => { await srv?.close(); });

/** A test clock frozen at t0 and a customer on it. */
async function world(t0, customer = {}) {
  const clock = await stripe.testHelpers.testClocks.create({ frozen_time: t0, name: uniq('w') });
  const cus = await stripe.customers.create({ name: 'Subscriber', test_clock: clock.id, ...customer });
  const w = {
    clock, cus, now: t0,
    async advance(t) {
      const k = await stripe.testHelpers.testClocks.advance(clock.id, { frozen_time: t });
      assert.equal(k.frozen_time, t);
      assert.equal(k.status, 'ready');
      w.now = t;
      return k;
    },
    /** Reports `value` calls for this customer at ts (default: the clock's time). */
    async use(value, ts = w.now, meter = cat.meter) {
      return stripe.billing.meterEvents.create({
        event_name: meter.event_name,
        payload: { stripe_customer_id: cus.id, value: String(value) },
        timestamp: ts,
      });
    },
    async invoices(sub) {
      const l = await stripe.invoices.list({ subscription: sub.id ?? sub, limit: 100 });
      return l.data; // newest first
    },
  };
  return w;
}

const lineItem = (l) => l.parent.subscription_item_details;
const linePrice = (l) => l.pricing.price_details.price;
const isProration = (l) => lineItem(l).proration;
const linesFor = (inv, price, { proration = false } = {}) =>
  inv.lines.data.filter((l) => linePrice(l) === price.id && isProration(l) === proration);
const sumLines = (inv) => inv.lines.data.reduce((a, l) => a + l.amount, 0);

async function eventsOf(type, objectId) {
  const all = await stripe.events.list({ type, limit: 100 }).autoPagingToArray({ limit: 10000 });
  return all.filter((e) => e.data.object.id === objectId);
}

// ---------------------------------------------------------------------------------------------

describe('create', () => {
  test('licensed items with a quantity and metered ones without', async () => {
    const T = utc(2026, 1, 1);
    const w = await world(T);
    const sub = await stripe.subscriptions.create({
      customer: w.cus.id,
      items: [{ price: cat.seat.id, quantity: 3, metadata: { team: 'a' } }, { price: cat.calls.id }],
      metadata: { plan: 'team' },
    });
    assert.match(sub.id, /^sub_/);
    assert.equal(sub.object, 'subscription');
    assert.equal(sub.customer, w.cus.id);
    assert.equal(sub.status, 'active');
    assert.equal(sub.currency, 'usd');
    assert.equal(sub.collection_method, 'charge_automatically');
    assert.equal(sub.test_clock, w.clock.id);
    assert.equal(sub.created, T);
    assert.equal(sub.start_date, T);
    assert.equal(sub.billing_cycle_anchor, T);
    assert.equal(sub.cancel_at_period_end, false);
    assert.equal(sub.canceled_at, null);
    assert.equal(sub.ended_at, null);
    assert.equal(sub.trial_start, null);
    assert.equal(sub.trial_end, null);
    assert.deepEqual(sub.metadata, { plan: 'team' });
    assert.equal(sub.items.object, 'list');
    assert.equal(sub.items.data.length, 2);
    const [seat, calls] = sub.items.data;
    assert.match(seat.id, /^si_/);
    assert.equal(seat.object, 'subscription_item');
    assert.equal(seat.subscription, sub.id);
    assert.equal(seat.price.id, cat.seat.id);
    assert.equal(seat.quantity, 3);
    assert.deepEqual(seat.metadata, { team: 'a' });
    assert.equal(calls.price.id, cat.calls.id);
    assert.equal(calls.price.recurring.usage_type, 'metered');
    for (const it of sub.items.data) {
      assert.equal(it.current_period_start, T);
      assert.equal(it.current_period_end, utc(2026, 2, 1));
    }
    // The first invoice: the licensed item for the first period, finalized at once.
    const inv = await stripe.invoices.retrieve(sub.latest_invoice);
    assert.equal(inv.billing_reason, 'subscription_create');
    assert.equal(inv.status, 'open');
    assert.equal(inv.subscription ?? inv.parent.subscription_details.subscription, sub.id);
    assert.equal(inv.customer, w.cus.id);
    assert.equal(inv.currency, 'usd');
    assert.equal(inv.created, T);
    assert.equal(inv.status_transitions.finalized_at, T);
    assert.match(inv.number, /.+/);
    assert.equal(inv.lines.data.length, 1);
    const l = inv.lines.data[0];
    assert.equal(linePrice(l), cat.seat.id);
    assert.equal(l.amount, 3 * 1999);
    assert.equal(l.quantity, 3);
    assert.equal(dec(l.quantity_decimal), '3');
    assert.deepEqual({ ...l.period }, { start: T, end: utc(2026, 2, 1) });
    assert.equal(isProration(l), false);
    assert.equal(inv.subtotal, 5997);
    assert.equal(inv.total, 5997);
    assert.equal(inv.amount_due, 5997);
    assert.equal(inv.amount_paid, 0);
    assert.equal(inv.amount_remaining, 5997);
    const again = await stripe.subscriptions.retrieve(sub.id);
    assert.deepStrictEqual(JSON.parse(JSON.stringify(again)), JSON.parse(JSON.stringify(sub)));
  });

  test('a quantity on a metered item is refused', async () => {
    const w = await world(utc(2026, 1, 1));
    await expectStripeError(stripe.subscriptions.create({
      customer: w.cus.id, items: [{ price: cat.seat.id }, { price: cat.calls.id, quantity: 2 }],
    }), { status: 400, param: 'items[1][quantity]' });
  });

  test('an inactive or one-time price is refused', async () => {
    const w = await world(utc(2026, 1, 1));
    await expectStripeError(stripe.subscriptions.create({
      customer: w.cus.id, items: [{ price: cat.seatInactive.id }],
    }), { status: 400, param: 'items[0][price]' });
    await expectStripeError(stripe.subscriptions.create({
      customer: w.cus.id, items: [{ price: cat.seat.id }, { price: cat.oneTime.id }],
    }), { status: 400, param: 'items[1][price]' });
    const none = await stripe.subscriptions.list({ customer: w.cus.id, status: 'all' });
    assert.deepEqual(none.data, [], 'a refused create left a subscription behind');
  });

  test('mixed currencies or intervals are refused', async () => {
    const w = await world(utc(2026, 1, 1));
    await expectStripeError(stripe.subscriptions.create({
      customer: w.cus.id, items: [{ price: cat.seat.id }, { price: cat.seatEur.id }],
    }), { status: 400, param: 'items[1][price]' });
    await expectStripeError(stripe.subscriptions.create({
      customer: w.cus.id, items: [{ price: cat.seat.id }, { price: cat.seatYearly.id }],
    }), { status: 400, param: 'items[1][price]' });
  });

  test('the same price twice is refused', async () => {
    const w = await world(utc(2026, 1, 1));
    await expectStripeError(stripe.subscriptions.create({
      customer: w.cus.id, items: [{ price: cat.seat.id }, { price: cat.seat.id }],
    }), { status: 400, param: 'items[1][price]' });
  });

  test('20 items are allowed, 21 refused', async () => {
    const w = await world(utc(2026, 1, 1));
    const prod = await stripe.products.create({ name: 'Many' });
    const prices = [];
    for (let i = 0; i < 21; i++) {
      prices.push(await stripe.prices.create({ product: prod.id, currency: 'usd', unit_amount: 100 + i, recurring: { interval: 'month' } }));
    }
    await expectStripeError(stripe.subscriptions.create({
      customer: w.cus.id, items: prices.map((p) => ({ price: p.id })),
    }), { status: 400, param: 'items' });
    const ok = await stripe.subscriptions.create({
      customer: w.cus.id, items: prices.slice(0, 20).map((p) => ({ price: p.id })),
    });
    assert.equal(ok.items.data.length, 20);
    assert.equal(ok.items.total_count, 20);
    const inv = await stripe.invoices.retrieve(ok.latest_invoice);
    // 100 + 101 + ... + 119
    assert.equal(inv.total, 20 * 100 + (19 * 20) / 2);
    assert.equal(inv.lines.total_count, 20);
    // Adding a 21st item by update is refused too.
    await expectStripeError(stripe.subscriptions.update(ok.id, { items: [{ price: prices[20].id }] }), {
      status: 400, param: 'items',
    });
  });

  test('unknown customer or price, missing parameters', async () => {
    await expectStripeError(stripe.subscriptions.create({
      customer: 'cus_doesnotexist', items: [{ price: cat.seat.id }],
    }), { status: 404, code: 'resource_missing', param: 'customer', message: "No such customer: 'cus_doesnotexist'" });
    const w = await world(utc(2026, 1, 1));
    await expectStripeError(stripe.subscriptions.create({
      customer: w.cus.id, items: [{ price: 'price_doesnotexist' }],
    }), { code: 'resource_missing', param: 'items[0][price]' });
    await expectStripeError(stripe.subscriptions.create({ customer: w.cus.id }), {
      status: 400, code: 'parameter_missing', param: 'items',
    });
    await expectStripeError(stripe.subscriptions.create({ items: [{ price: cat.seat.id }] }), {
      status: 400, code: 'parameter_missing', param: 'customer',
    });
    await expectStripeError(stripe.subscriptions.create({
      customer: w.cus.id, items: [{ price: cat.seat.id }], favourite: 'x',
    }), { status: 400, code: 'parameter_unknown', param: 'favourite' });
    await expectStripeError(stripe.subscriptions.retrieve('sub_doesnotexist'), {
      status: 404, code: 'resource_missing', param: 'id',
    });
  });
});

describe('list', () => {
  let w;
  let c2;
  let s1;
  let s2;
  let s3;
  before(async () => {
    w = await world(utc(2026, 1, 1));
    c2 = await stripe.customers.create({ name: 'Second', test_clock: w.clock.id });
    s1 = await stripe.subscriptions.create({ customer: w.cus.id, items: [{ price: cat.seat.id }] });
    s2 = await stripe.subscriptions.create({ customer: w.cus.id, items: [{ price: cat.calls.id }] });
    s3 = await stripe.subscriptions.create({ customer: c2.id, items: [{ price: cat.seat.id }] });
    await stripe.subscriptions.cancel(s3.id);
  });
  const ids = async (params) => (await stripe.subscriptions.list({ limit: 100, ...params })).data.map((s) => s.id);

  test('customer and test_clock filters; canceled ones are left out by default', async () => {
    assert.deepEqual(await ids({ customer: w.cus.id }), [s2.id, s1.id]);
    assert.deepEqual(await ids({ customer: c2.id }), []);
    assert.deepEqual(await ids({ test_clock: w.clock.id }), [s2.id, s1.id]);
  });

  test('status filter, including all', async () => {
    assert.deepEqual(await ids({ test_clock: w.clock.id, status: 'all' }), [s3.id, s2.id, s1.id]);
    assert.deepEqual(await ids({ test_clock: w.clock.id, status: 'canceled' }), [s3.id]);
    assert.deepEqual(await ids({ test_clock: w.clock.id, status: 'active' }), [s2.id, s1.id]);
    assert.deepEqual(await ids({ test_clock: w.clock.id, status: 'past_due' }), []);
    assert.deepEqual(await ids({ customer: c2.id, status: 'all' }), [s3.id]);
    await expectStripeError(stripe.subscriptions.list({ status: 'sleeping' }), { status: 400, param: 'status' });
  });

  test('price filter', async () => {
    assert.deepEqual(await ids({ test_clock: w.clock.id, price: cat.seat.id }), [s1.id]);
    assert.deepEqual(await ids({ test_clock: w.clock.id, price: cat.seat.id, status: 'all' }), [s3.id, s1.id]);
    assert.deepEqual(await ids({ test_clock: w.clock.id, price: cat.calls.id }), [s2.id]);
  });

  test('a price-filtered page is a full page', async () => {
    // s2 (newest) does not have the seat price; the page must still hold one subscription.
    const page = await stripe.subscriptions.list({ test_clock: w.clock.id, price: cat.seat.id, limit: 1 });
    assert.deepEqual(page.data.map((s) => s.id), [s1.id]);
    assert.equal(page.has_more, false);
  });

  test('pagination', async () => {
    const p1 = await stripe.subscriptions.list({ test_clock: w.clock.id, status: 'all', limit: 2 });
    assert.deepEqual(p1.data.map((s) => s.id), [s3.id, s2.id]);
    assert.equal(p1.has_more, true);
    const p2 = await stripe.subscriptions.list({ test_clock: w.clock.id, status: 'all', limit: 2, starting_after: s2.id });
    assert.deepEqual(p2.data.map((s) => s.id), [s1.id]);
    assert.equal(p2.has_more, false);
  });
});

// ---------------------------------------------------------------------------------------------

describe('updates and prorations', () => {
  test('create_prorations: pending lines land on the next invoice, exact to the second', async () => {
    const T = utc(2026, 1, 1);
    const END = utc(2026, 2, 1); // 31 days: 2,678,400 s
    const w = await world(T);
    const sub = await stripe.subscriptions.create({ customer: w.cus.id, items: [{ price: cat.seat.id, quantity: 3 }] });
    const item = sub.items.data[0];

    // Exactly half the period remains: 3 x 19.99 = 59.97 -> credit 29.985 -> -29.99 (half away
    // from zero; half-even would give -29.98); 5 x 19.99 = 99.95 -> 49.975 -> 49.98.
    const U1 = T + MONTH_JAN / 2; // Jan 16 12:00:00
    await w.advance(U1);
    const u1 = await stripe.subscriptions.update(sub.id, {
      items: [{ id: item.id, quantity: 5 }], proration_behavior: 'create_prorations',
    });
    assert.equal(u1.items.data[0].quantity, 5);
    assert.equal(u1.items.data[0].id, item.id);
    assert.equal(u1.latest_invoice, sub.latest_invoice, 'create_prorations must not invoice now');
    // The upcoming invoice shows them: 5 x 19.99 for February, -29.99 and +49.98 for January.
    const preview = await stripe.invoices.createPreview({ subscription: sub.id });
    assert.deepEqual(preview.lines.data.filter(isProration).map((l) => l.amount).sort((a, b) => a - b), [-2999, 4998]);
    assert.equal(linesFor(preview, cat.seat)[0].amount, 9995);
    assert.equal(preview.total, 9995 - 2999 + 4998);

    // An irregular moment: Jan 25 03:17:41, 592,939 s before the period ends.
    const U2 = utc(2026, 1, 25, 3, 17, 41);
    assert.equal(END - U2, 592939);
    await w.advance(U2);
    await stripe.subscriptions.update(sub.id, { items: [{ id: item.id, quantity: 4 }] }); // default: create_prorations
    // 99.95 x 592939 / 2678400 = 22.1267... -> -22.13 ; 79.96 x 592939 / 2678400 = 17.7014... -> 17.70
    const expected = [-2999, 4998, -2213, 1770];
    assert.deepEqual(
      [prorated(-5997, MONTH_JAN / 2, MONTH_JAN), prorated(9995, MONTH_JAN / 2, MONTH_JAN),
        prorated(-9995, END - U2, MONTH_JAN), prorated(7996, END - U2, MONTH_JAN)],
      expected,
    );
    assert.equal((await w.invoices(sub)).length, 1, 'prorations must wait for the next invoice');

    await w.advance(END + HOUR + 60);
    const invs = await w.invoices(sub);
    assert.equal(invs.length, 2);
    const inv = invs[0];
    assert.equal(inv.billing_reason, 'subscription_cycle');
    assert.equal(inv.status, 'open');
    const pro = inv.lines.data.filter(isProration);
    assert.deepEqual(pro.map((l) => l.amount).sort((a, b) => a - b), [...expected].sort((a, b) => a - b));
    const byAmount = Object.fromEntries(pro.map((l) => [l.amount, l]));
    assert.equal(byAmount[-2999].quantity, 3);
    assert.equal(byAmount[4998].quantity, 5);
    assert.equal(byAmount[-2213].quantity, 5);
    assert.equal(byAmount[1770].quantity, 4);
    assert.deepEqual({ ...byAmount[-2999].period }, { start: U1, end: END });
    assert.deepEqual({ ...byAmount[1770].period }, { start: U2, end: END });
    for (const l of pro) assert.equal(linePrice(l), cat.seat.id);
    const lic = linesFor(inv, cat.seat);
    assert.equal(lic.length, 1);
    assert.equal(lic[0].amount, 4 * 1999);
    assert.equal(lic[0].quantity, 4);
    assert.deepEqual({ ...lic[0].period }, { start: END, end: utc(2026, 3, 1) });
    const total = 7996 + expected.reduce((a, b) => a + b, 0);
    assert.equal(total, 9552); // 79.96 - 29.99 + 49.98 - 22.13 + 17.70
    assert.equal(inv.total, total);
    assert.equal(inv.subtotal, total);
    assert.equal(inv.amount_due, total);
    assert.equal(sumLines(inv), inv.total);
  });

  test('proration_behavior none: no proration lines, the new quantity from the next period', async () => {
    const T = utc(2026, 1, 1);
    const w = await world(T);
    const sub = await stripe.subscriptions.create({ customer: w.cus.id, items: [{ price: cat.seat.id, quantity: 2 }] });
    await w.advance(T + 10 * DAY + 12345);
    await stripe.subscriptions.update(sub.id, {
      items: [{ id: sub.items.data[0].id, quantity: 4 }], proration_behavior: 'none',
    });
    await w.advance(utc(2026, 2, 1) + 2 * HOUR);
    const [inv] = await w.invoices(sub);
    assert.equal(inv.billing_reason, 'subscription_cycle');
    assert.equal(inv.lines.data.length, 1);
    assert.equal(inv.lines.data[0].amount, 4 * 1999);
    assert.equal(inv.total, 7996);
  });

  test('always_invoice: the prorations are invoiced at once', async () => {
    const T = utc(2026, 1, 1);
    const w = await world(T);
    const sub = await stripe.subscriptions.create({ customer: w.cus.id, items: [{ price: cat.seat.id, quantity: 1 }] });
    await w.advance(T + MONTH_JAN / 2);
    const u = await stripe.subscriptions.update(sub.id, {
      items: [{ id: sub.items.data[0].id, quantity: 3 }], proration_behavior: 'always_invoice',
    });
    assert.notEqual(u.latest_invoice, sub.latest_invoice);
    const inv = await stripe.invoices.retrieve(u.latest_invoice);
    assert.equal(inv.billing_reason, 'subscription_update');
    assert.equal(inv.status, 'open');
    // 19.99 / 2 = 9.995 -> -10.00 ; 59.97 / 2 = 29.985 -> 29.99
    assert.deepEqual(inv.lines.data.map((l) => l.amount).sort((a, b) => a - b), [-1000, 2999]);
    assert.ok(inv.lines.data.every(isProration));
    assert.equal(inv.total, 1999);
    assert.equal(inv.amount_due, 1999);
    // Nothing is left pending for the renewal.
    await w.advance(utc(2026, 2, 1) + 2 * HOUR);
    const [renewal] = await w.invoices(sub);
    assert.equal(renewal.billing_reason, 'subscription_cycle');
    assert.deepEqual(renewal.lines.data.map((l) => [l.amount, isProration(l)]), [[3 * 1999, false]]);
  });

  test('changing an item\'s price credits the old price and charges the new one', async () => {
    const T = utc(2026, 1, 1);
    const w = await world(T);
    const sub = await stripe.subscriptions.create({ customer: w.cus.id, items: [{ price: cat.seat.id, quantity: 1 }] });
    const item = sub.items.data[0];
    await w.advance(T + MONTH_JAN / 2);
    const u = await stripe.subscriptions.update(sub.id, { items: [{ id: item.id, price: cat.addon.id }] });
    assert.equal(u.items.data.length, 1);
    assert.equal(u.items.data[0].id, item.id);
    assert.equal(u.items.data[0].price.id, cat.addon.id);
    await w.advance(utc(2026, 2, 1) + 2 * HOUR);
    const [inv] = await w.invoices(sub);
    // -19.99 / 2 = -9.995 -> -10.00 ; 5.00 / 2 = 2.50
    assert.deepEqual(linesFor(inv, cat.seat, { proration: true }).map((l) => l.amount), [-1000]);
    assert.deepEqual(linesFor(inv, cat.addon, { proration: true }).map((l) => l.amount), [250]);
    assert.deepEqual(linesFor(inv, cat.addon).map((l) => l.amount), [500]);
    assert.equal(linesFor(inv, cat.seat).length, 0);
    assert.equal(inv.total, 500 - 1000 + 250);
    // A credit larger than the charges: nothing is due.
    assert.equal(inv.amount_due, 0);
    // A licensed item cannot become metered.
    await expectStripeError(stripe.subscriptions.update(sub.id, { items: [{ id: item.id, price: cat.calls.id }] }), {
      status: 400, param: 'items[0][price]',
    });
  });

  test('adding and removing items prorates them', async () => {
    const T = utc(2026, 1, 1);
    const w = await world(T);
    const sub = await stripe.subscriptions.create({ customer: w.cus.id, items: [{ price: cat.seat.id, quantity: 1 }] });
    await w.advance(T + MONTH_JAN / 2);
    const u = await stripe.subscriptions.update(sub.id, { items: [{ price: cat.addon.id, quantity: 2 }] });
    assert.equal(u.items.data.length, 2);
    const addonItem = u.items.data.find((i) => i.price.id === cat.addon.id);
    assert.equal(addonItem.quantity, 2);
    await w.advance(T + MONTH_JAN / 2 + 5 * DAY);
    const rem = utc(2026, 2, 1) - w.now;
    await stripe.subscriptions.update(sub.id, { items: [{ id: addonItem.id, deleted: true }] });
    await w.advance(utc(2026, 2, 1) + 2 * HOUR);
    const [inv] = await w.invoices(sub);
    const pro = linesFor(inv, cat.addon, { proration: true }).map((l) => l.amount).sort((a, b) => a - b);
    // +10.00 x 1/2 for half a month of 2 x 5.00, then a credit for the last 10.5 days.
    assert.deepEqual(pro, [prorated(-1000, rem, MONTH_JAN), 500].sort((a, b) => a - b));
    assert.equal(rem, 907200);
    assert.equal(prorated(-1000, rem, MONTH_JAN), -339); // 1000 x 907200 / 2678400 = 338.7
    assert.equal(linesFor(inv, cat.addon).length, 0, 'a removed item is not billed for the next period');
    assert.equal(linesFor(inv, cat.seat)[0].amount, 1999);
    assert.equal(inv.total, 1999 + 500 - 339);
  });
});

describe('cancellation', () => {
  test('cancel_at_period_end: ends at the period end and bills the period\'s usage', async () => {
    const T = utc(2026, 1, 1);
    const END = utc(2026, 2, 1);
    const w = await world(T);
    const sub = await stripe.subscriptions.create({ customer: w.cus.id, items: [{ price: cat.seat.id }, { price: cat.calls.id }] });
    await w.advance(T + 5 * DAY);
    await w.use(40, T + 5 * DAY - 600);
    const u = await stripe.subscriptions.update(sub.id, { cancel_at_period_end: true });
    assert.equal(u.cancel_at_period_end, true);
    assert.equal(u.status, 'active');
    // The upcoming invoice bills the usage and no next period.
    const preview = await stripe.invoices.createPreview({ subscription: sub.id });
    assert.equal(linesFor(preview, cat.seat).length, 0);
    assert.equal(preview.total, 120);
    await w.advance(END - DAY);
    assert.equal((await stripe.subscriptions.retrieve(sub.id)).status, 'active');
    await w.advance(END + 2 * HOUR);
    const s = await stripe.subscriptions.retrieve(sub.id);
    assert.equal(s.status, 'canceled');
    assert.equal(s.ended_at, END);
    assert.ok(s.canceled_at, 'canceled_at is set');
    const invs = await w.invoices(sub);
    assert.equal(invs.length, 2);
    const last = invs[0];
    assert.equal(linesFor(last, cat.seat).length, 0, 'no licensed line for a period that never comes');
    const usage = linesFor(last, cat.calls);
    assert.equal(usage.length, 1);
    assert.equal(usage[0].quantity, 40);
    assert.equal(usage[0].amount, 120);
    assert.equal(last.total, 120);
    assert.equal((await eventsOf('customer.subscription.deleted', sub.id)).length, 1);
    // Nothing more happens to it.
    await w.advance(utc(2026, 3, 1) + 2 * HOUR);
    assert.equal((await w.invoices(sub)).length, 2);
  });

  test('cancel_at_period_end can be taken back before the period ends', async () => {
    const T = utc(2026, 1, 1);
    const END = utc(2026, 2, 1);
    const w = await world(T);
    const sub = await stripe.subscriptions.create({ customer: w.cus.id, items: [{ price: cat.seat.id }] });
    await w.advance(T + 3 * DAY);
    await stripe.subscriptions.update(sub.id, { cancel_at_period_end: true });
    await w.advance(T + 6 * DAY);
    const back = await stripe.subscriptions.update(sub.id, { cancel_at_period_end: false });
    assert.equal(back.cancel_at_period_end, false);
    assert.equal(back.canceled_at, null);
    await w.advance(END + 2 * HOUR);
    const s = await stripe.subscriptions.retrieve(sub.id);
    assert.equal(s.status, 'past_due'); // renewed; no payment method on file
    assert.equal(s.items.data[0].current_period_end, utc(2026, 3, 1));
    assert.equal((await w.invoices(sub))[0].total, 1999);
  });

  test('cancel now with invoice_now bills the usage so far; without it, no invoice', async () => {
    const T = utc(2026, 1, 1);
    const w = await world(T);
    const a = await stripe.subscriptions.create({ customer: w.cus.id, items: [{ price: cat.seat.id }, { price: cat.calls.id }] });
    const NOW = T + 9 * DAY + 7 * HOUR;
    await w.advance(NOW);
    await w.use(30, T + DAY);
    await w.use(40, NOW - HOUR);
    const c = await stripe.subscriptions.cancel(a.id, { invoice_now: true });
    assert.equal(c.status, 'canceled');
    assert.equal(c.cancellation_details.reason, 'cancellation_requested');
    assert.equal(c.canceled_at, NOW);
    assert.equal(c.ended_at, NOW);
    const invs = await w.invoices(a);
    assert.equal(invs.length, 2);
    const fin = invs[0];
    assert.notEqual(fin.status, 'draft');
    const usage = linesFor(fin, cat.calls);
    assert.equal(usage.length, 1);
    assert.equal(usage[0].quantity, 70);
    assert.equal(usage[0].amount, 210);
    assert.deepEqual({ ...usage[0].period }, { start: T, end: NOW });
    assert.equal(fin.total, 210);
    assert.equal(linesFor(fin, cat.seat).length, 0);

    // A second subscription of the same customer, canceled without invoice_now.
    const b = await stripe.subscriptions.create({ customer: w.cus.id, items: [{ price: cat.addon.id }] });
    const cb = await stripe.subscriptions.cancel(b.id);
    assert.equal(cb.status, 'canceled');
    assert.equal((await w.invoices(b)).length, 1);

    // A canceled subscription has no upcoming invoice, cannot be canceled again nor change its items.
    await expectStripeError(stripe.invoices.createPreview({ subscription: a.id }), { status: 400 });
    await expectStripeError(stripe.subscriptions.cancel(a.id), { status: 400 });
    await expectStripeError(stripe.subscriptions.update(a.id, { items: [{ id: a.items.data[0].id, quantity: 2 }] }), {
      status: 400,
    });
  });
});

// ---------------------------------------------------------------------------------------------

describe('schedules that end stay retrievable, as on Stripe', () => {
  const phasesTo = (price) => [{ items: [{ price: cat.seat.id, quantity: 1 }] }, { items: [{ price: price.id, quantity: 2 }] }];
  const phasePrices = (k) => k.phases.map((p) => p.items.map((i) => [i.price, i.quantity]));
  const listed = async (params) => (await stripe.subscriptionSchedules.list(params)).data.map((k) => [k.id, k.status]);

  test('release: retrieved as released, with its subscription as released_subscription, and still listed', async () => {
    const T = utc(2026, 1, 1);
    const w = await world(T);
    const sub = await stripe.subscriptions.create({ customer: w.cus.id, items: [{ price: cat.seat.id }] });
    const sched = await stripe.subscriptionSchedules.create({ from_subscription: sub.id, metadata: { team: 'a' } });
    assert.equal(sched.created, T);
    await stripe.subscriptionSchedules.update(sched.id, { phases: phasesTo(cat.addon) });
    const AT = T + 3 * DAY + 5 * HOUR;
    await w.advance(AT);
    const released = await stripe.subscriptionSchedules.release(sched.id);
    const got = await stripe.subscriptionSchedules.retrieve(sched.id);
    assert.deepEqual(got, released);
    assert.equal(got.id, sched.id);
    assert.equal(got.status, 'released');
    assert.equal(got.released_at, AT);
    assert.equal(got.released_subscription, sub.id);
    assert.equal(got.subscription, null);
    assert.equal(got.canceled_at, null);
    assert.equal(got.completed_at, null);
    assert.equal(got.current_phase, null);
    assert.equal(got.created, T);
    // Its final state: the phases and metadata it had when it was released.
    assert.deepEqual(phasePrices(got), [[[cat.seat.id, 1]], [[cat.addon.id, 2]]]);
    assert.deepEqual(got.metadata, { team: 'a' });
    // The subscription goes on without it.
    const s = await stripe.subscriptions.retrieve(sub.id);
    assert.equal(s.schedule, null);
    assert.equal(s.status, 'active');
    assert.deepEqual(s.items.data.map((i) => i.price.id), [cat.seat.id]);
    // Listed, and found by when it was released.
    assert.deepEqual(await listed({ customer: w.cus.id }), [[sched.id, 'released']]);
    assert.deepEqual(await listed({ customer: w.cus.id, released_at: AT }), [[sched.id, 'released']]);
    assert.deepEqual(await listed({ customer: w.cus.id, released_at: { gte: AT, lt: AT + 1 } }), [[sched.id, 'released']]);
    assert.deepEqual(await listed({ customer: w.cus.id, released_at: { gt: AT } }), []);
    assert.deepEqual(await listed({ customer: w.cus.id, canceled_at: { gte: T } }), []);
    assert.deepEqual(await listed({ customer: w.cus.id, completed_at: { gte: T } }), []);
    assert.deepEqual(await listed({ customer: w.cus.id, scheduled: true }), []);
    assert.deepEqual(await listed({ customer: w.cus.id, scheduled: false }), [[sched.id, 'released']]);
  });

  test('cancel: retrieved as canceled, with canceled_at, and still listed', async () => {
    const T = utc(2026, 1, 1);
    const w = await world(T);
    const sub = await stripe.subscriptions.create({ customer: w.cus.id, items: [{ price: cat.seat.id }] });
    const sched = await stripe.subscriptionSchedules.create({ from_subscription: sub.id });
    await stripe.subscriptionSchedules.update(sched.id, { phases: phasesTo(cat.addon), metadata: { k: 'v' } });
    const AT = T + 10 * DAY;
    await w.advance(AT);
    const canceled = await stripe.subscriptionSchedules.cancel(sched.id, { invoice_now: false });
    const got = await stripe.subscriptionSchedules.retrieve(sched.id);
    assert.deepEqual(got, canceled);
    assert.equal(got.status, 'canceled');
    assert.equal(got.canceled_at, AT);
    assert.equal(got.released_at, null);
    assert.equal(got.released_subscription, null);
    assert.equal(got.subscription, sub.id);
    assert.equal(got.current_phase, null);
    assert.deepEqual(phasePrices(got), [[[cat.seat.id, 1]], [[cat.addon.id, 2]]]);
    assert.deepEqual(got.metadata, { k: 'v' });
    const s = await stripe.subscriptions.retrieve(sub.id);
    assert.equal(s.status, 'canceled');
    assert.equal(s.schedule, sched.id);
    assert.deepEqual(await listed({ customer: w.cus.id }), [[sched.id, 'canceled']]);
    assert.deepEqual(await listed({ customer: w.cus.id, canceled_at: { lte: AT } }), [[sched.id, 'canceled']]);
    assert.deepEqual(await listed({ customer: w.cus.id, canceled_at: { lt: AT } }), []);
    assert.deepEqual(await listed({ customer: w.cus.id, released_at: { gte: T } }), []);
    // A subscription canceled directly cancels its schedule too.
    const other = await stripe.subscriptions.create({ customer: w.cus.id, items: [{ price: cat.seat.id }] });
    const os = await stripe.subscriptionSchedules.create({ from_subscription: other.id });
    await w.advance(AT + HOUR);
    await stripe.subscriptions.cancel(other.id);
    const oc = await stripe.subscriptionSchedules.retrieve(os.id);
    assert.deepEqual([oc.status, oc.canceled_at, oc.current_phase], ['canceled', AT + HOUR, null]);
  });

  test('a schedule whose last phase starts is released then, keeping the phases it had', async () => {
    const T = utc(2026, 1, 1);
    const END = utc(2026, 2, 1);
    const w = await world(T);
    const sub = await stripe.subscriptions.create({ customer: w.cus.id, items: [{ price: cat.seat.id }] });
    const sched = await stripe.subscriptionSchedules.create({ from_subscription: sub.id, metadata: { plan: 'upgrade' } });
    await stripe.subscriptionSchedules.update(sched.id, { phases: phasesTo(cat.addon) });
    await w.advance(END + 2 * HOUR);
    const got = await stripe.subscriptionSchedules.retrieve(sched.id);
    assert.equal(got.status, 'released');
    assert.equal(got.released_at, END);
    assert.equal(got.released_subscription, sub.id);
    assert.equal(got.subscription, null);
    assert.equal(got.current_phase, null);
    assert.deepEqual(phasePrices(got), [[[cat.seat.id, 1]], [[cat.addon.id, 2]]]);
    assert.deepEqual(got.phases.map((p) => [p.start_date, p.end_date]), [[T, END], [END, utc(2026, 3, 1)]]);
    assert.deepEqual(got.metadata, { plan: 'upgrade' });
    const s = await stripe.subscriptions.retrieve(sub.id);
    assert.equal(s.schedule, null);
    assert.deepEqual(s.items.data.map((i) => [i.price.id, i.quantity]), [[cat.addon.id, 2]]);
    assert.deepEqual(await listed({ customer: w.cus.id, released_at: { gte: END, lte: END } }), [[sched.id, 'released']]);
  });

  test('an ended schedule cannot be updated, released or canceled, and a refusal changes nothing', async () => {
    const T = utc(2026, 1, 1);
    const w = await world(T);
    const sub = await stripe.subscriptions.create({ customer: w.cus.id, items: [{ price: cat.seat.id }] });
    const rel = await stripe.subscriptionSchedules.create({ from_subscription: sub.id, metadata: { a: '1' } });
    await w.advance(T + DAY);
    const released = await stripe.subscriptionSchedules.release(rel.id);
    const invoicesBefore = (await w.invoices(sub)).map((i) => i.id);
    await w.advance(T + 2 * DAY);
    const refusal = (verb, status) => ({ status: 400, type: 'invalid_request_error',
      message: `You cannot ${verb} a subscription schedule that is currently in the \`${status}\` status.` });
    await expectStripeError(stripe.subscriptionSchedules.update(rel.id, { metadata: { a: '2' } }), refusal('update', 'released'));
    await expectStripeError(stripe.subscriptionSchedules.update(rel.id, { phases: phasesTo(cat.addon) }), refusal('update', 'released'));
    await expectStripeError(stripe.subscriptionSchedules.release(rel.id), refusal('release', 'released'));
    await expectStripeError(stripe.subscriptionSchedules.cancel(rel.id), refusal('cancel', 'released'));
    assert.deepEqual(await stripe.subscriptionSchedules.retrieve(rel.id), released);
    const s = await stripe.subscriptions.retrieve(sub.id);
    assert.equal(s.status, 'active', 'canceling the released schedule did not cancel its subscription');
    assert.equal(s.schedule, null);
    assert.deepEqual((await w.invoices(sub)).map((i) => i.id), invoicesBefore);

    const other = await stripe.subscriptions.create({ customer: w.cus.id, items: [{ price: cat.seat.id }] });
    const can = await stripe.subscriptionSchedules.create({ from_subscription: other.id });
    const canceled = await stripe.subscriptionSchedules.cancel(can.id);
    await expectStripeError(stripe.subscriptionSchedules.update(can.id, { metadata: { a: '2' } }), refusal('update', 'canceled'));
    await expectStripeError(stripe.subscriptionSchedules.release(can.id), refusal('release', 'canceled'));
    await expectStripeError(stripe.subscriptionSchedules.cancel(can.id), refusal('cancel', 'canceled'));
    assert.deepEqual(await stripe.subscriptionSchedules.retrieve(can.id), canceled);
  });

  test('after a release the subscription can have another schedule; both are kept', async () => {
    const T = utc(2026, 1, 1);
    const END = utc(2026, 2, 1);
    const w = await world(T);
    const sub = await stripe.subscriptions.create({ customer: w.cus.id, items: [{ price: cat.seat.id }] });
    const first = await stripe.subscriptionSchedules.create({ from_subscription: sub.id, metadata: { gen: '1' } });
    await stripe.subscriptionSchedules.update(first.id, { phases: phasesTo(cat.addon) });
    await w.advance(T + DAY);
    const released = await stripe.subscriptionSchedules.release(first.id);
    await w.advance(T + 2 * DAY);
    const second = await stripe.subscriptionSchedules.create({ from_subscription: sub.id });
    assert.notEqual(second.id, first.id);
    assert.equal(second.status, 'active');
    assert.equal(second.subscription, sub.id);
    assert.equal(second.created, T + 2 * DAY);
    assert.deepEqual(second.metadata, {}, 'nothing of the first one carries over');
    assert.equal(second.phases.length, 1);
    assert.equal((await stripe.subscriptions.retrieve(sub.id)).schedule, second.id);
    assert.deepEqual(await stripe.subscriptionSchedules.retrieve(first.id), released);
    assert.deepEqual(await listed({ customer: w.cus.id }), [[second.id, 'active'], [first.id, 'released']]);
    assert.deepEqual((await stripe.subscriptionSchedules.list({ customer: w.cus.id, starting_after: second.id })).data.map((k) => k.id), [first.id]);

    // The second one's last phase starts: released in turn; a third starts afresh.
    await stripe.subscriptionSchedules.update(second.id, { phases: phasesTo(cat.addon), metadata: { gen: '2' } });
    await w.advance(END + 2 * HOUR);
    assert.equal((await stripe.subscriptionSchedules.retrieve(second.id)).status, 'released');
    const third = await stripe.subscriptionSchedules.create({ from_subscription: sub.id });
    assert.deepEqual(third.metadata, {});
    assert.deepEqual(third.phases.map((p) => p.items.map((i) => i.price)), [[cat.addon.id]]);
    const withSchedule = await stripe.subscriptions.retrieve(sub.id, { expand: ['schedule'] });
    assert.equal(withSchedule.schedule.id, third.id);
    assert.deepEqual(await listed({ customer: w.cus.id }),
      [[third.id, 'active'], [second.id, 'released'], [first.id, 'released']]);
  });
});

// ---------------------------------------------------------------------------------------------

describe('invoices', () => {
  test('list filters and retrieve', async () => {
    const T = utc(2026, 1, 1);
    const w = await world(T);
    const other = await stripe.customers.create({ name: 'Other', test_clock: w.clock.id });
    const s1 = await stripe.subscriptions.create({ customer: w.cus.id, items: [{ price: cat.seat.id }] });
    const s2 = await stripe.subscriptions.create({ customer: w.cus.id, items: [{ price: cat.addon.id }] });
    const s3 = await stripe.subscriptions.create({ customer: other.id, items: [{ price: cat.seat.id }] });
    await stripe.invoices.pay(s2.latest_invoice, { paid_out_of_band: true });
    const ids = async (params) => (await stripe.invoices.list({ limit: 100, ...params })).data.map((i) => i.id);
    assert.deepEqual(await ids({ customer: w.cus.id }), [s2.latest_invoice, s1.latest_invoice]);
    assert.deepEqual(await ids({ customer: other.id }), [s3.latest_invoice]);
    assert.deepEqual(await ids({ subscription: s1.id }), [s1.latest_invoice]);
    assert.deepEqual(await ids({ customer: w.cus.id, status: 'paid' }), [s2.latest_invoice]);
    assert.deepEqual(await ids({ customer: w.cus.id, status: 'open' }), [s1.latest_invoice]);
    assert.deepEqual(await ids({ customer: w.cus.id, status: 'draft' }), []);
    await expectStripeError(stripe.invoices.list({ status: 'lost' }), { status: 400, param: 'status' });
    const listed = (await stripe.invoices.list({ subscription: s3.id })).data[0];
    const got = await stripe.invoices.retrieve(s3.latest_invoice);
    assert.deepStrictEqual(JSON.parse(JSON.stringify(got)), JSON.parse(JSON.stringify(listed)));
    assert.equal(got.object, 'invoice');
    await expectStripeError(stripe.invoices.retrieve('in_doesnotexist'), {
      status: 404, code: 'resource_missing', param: 'id',
    });
  });

  test('listLineItems paginates; the embedded list holds the first 10', async () => {
    const w = await world(utc(2026, 1, 1));
    const prod = await stripe.products.create({ name: 'Twelve' });
    const prices = [];
    for (let i = 0; i < 12; i++) {
      prices.push(await stripe.prices.create({ product: prod.id, currency: 'usd', unit_amount: 1000 + i, recurring: { interval: 'month' } }));
    }
    const sub = await stripe.subscriptions.create({ customer: w.cus.id, items: prices.map((p) => ({ price: p.id })) });
    const inv = await stripe.invoices.retrieve(sub.latest_invoice);
    assert.equal(inv.lines.data.length, 10);
    assert.equal(inv.lines.has_more, true);
    assert.equal(inv.lines.total_count, 12);
    assert.equal(inv.lines.url, `/v1/invoices/${inv.id}/lines`);
    assert.equal(inv.total, 12 * 1000 + 66);
    const all = await stripe.invoices.listLineItems(inv.id, { limit: 100 });
    assert.equal(all.data.length, 12);
    assert.equal(all.has_more, false);
    assert.deepEqual(all.data.slice(0, 10).map((l) => l.id), inv.lines.data.map((l) => l.id));
    assert.deepEqual(new Set(all.data.map(linePrice)), new Set(prices.map((p) => p.id)));
    assert.equal(all.data.reduce((a, l) => a + l.amount, 0), inv.total);
    const p1 = await stripe.invoices.listLineItems(inv.id, { limit: 5 });
    assert.deepEqual(p1.data.map((l) => l.id), all.data.slice(0, 5).map((l) => l.id));
    assert.equal(p1.has_more, true);
    const p2 = await stripe.invoices.listLineItems(inv.id, { limit: 5, starting_after: p1.data[4].id });
    assert.deepEqual(p2.data.map((l) => l.id), all.data.slice(5, 10).map((l) => l.id));
    assert.equal(p2.has_more, true);
    const p3 = await stripe.invoices.listLineItems(inv.id, { limit: 5, starting_after: p2.data[4].id });
    assert.deepEqual(p3.data.map((l) => l.id), all.data.slice(10).map((l) => l.id));
    assert.equal(p3.has_more, false);
    const walked = await stripe.invoices.listLineItems(inv.id, { limit: 4 }).autoPagingToArray({ limit: 100 });
    assert.deepEqual(walked.map((l) => l.id), all.data.map((l) => l.id));
    for (const l of walked) {
      assert.equal(l.object, 'line_item');
      assert.equal(l.invoice, inv.id);
    }
  });

  test('finalize a draft; finalizing an open invoice is 400 resource_state_invalid', async () => {
    const T = utc(2026, 1, 1);
    const END = utc(2026, 2, 1);
    const w = await world(T);
    const sub = await stripe.subscriptions.create({ customer: w.cus.id, items: [{ price: cat.seat.id, quantity: 2 }] });
    await w.advance(END + 60);
    const [draft] = await w.invoices(sub);
    assert.equal(draft.status, 'draft');
    assert.equal(draft.number, null);
    assert.equal(draft.created, END);
    assert.equal(draft.automatically_finalizes_at, END + HOUR);
    assert.equal(draft.auto_advance, true);
    assert.equal(draft.total, 3998);
    const fin = await stripe.invoices.finalizeInvoice(draft.id);
    assert.equal(fin.status, 'open');
    assert.match(fin.number, /.+/);
    assert.notEqual(fin.number, (await stripe.invoices.retrieve(sub.latest_invoice)).number);
    assert.equal(fin.status_transitions.finalized_at, END + 60);
    assert.equal(fin.automatically_finalizes_at, null);
    assert.equal(fin.total, 3998);
    await expectStripeError(stripe.invoices.finalizeInvoice(draft.id), {
      status: 400, code: 'resource_state_invalid',
    });
    // Its automatic finalization does not run again.
    await w.advance(END + 2 * HOUR);
    const again = await stripe.invoices.retrieve(draft.id);
    assert.equal(again.status, 'open');
    assert.equal(again.number, fin.number);
  });

  test('pay needs paid_out_of_band; paid, void and uncollectible transitions', async () => {
    const T = utc(2026, 1, 1);
    const w = await world(T);
    const mk = async () => (await stripe.subscriptions.create({ customer: w.cus.id, items: [{ price: cat.seat.id }] })).latest_invoice;

    const a = await mk();
    await expectStripeError(stripe.invoices.pay(a), { status: 400 });
    await expectStripeError(stripe.invoices.pay(a, { paid_out_of_band: false }), { status: 400 });
    const paid = await stripe.invoices.pay(a, { paid_out_of_band: true });
    assert.equal(paid.status, 'paid');
    assert.equal(paid.amount_paid, 1999);
    assert.equal(paid.amount_remaining, 0);
    assert.equal(paid.amount_due, 1999);
    assert.equal(paid.status_transitions.paid_at, T);
    await expectStripeError(stripe.invoices.pay(a, { paid_out_of_band: true }), { status: 400, code: 'resource_state_invalid' });
    await expectStripeError(stripe.invoices.voidInvoice(a), { status: 400, code: 'resource_state_invalid' });
    await expectStripeError(stripe.invoices.markUncollectible(a), { status: 400, code: 'resource_state_invalid' });

    const b = await mk();
    const voided = await stripe.invoices.voidInvoice(b);
    assert.equal(voided.status, 'void');
    assert.equal(voided.status_transitions.voided_at, T);
    await expectStripeError(stripe.invoices.pay(b, { paid_out_of_band: true }), { status: 400, code: 'resource_state_invalid' });
    await expectStripeError(stripe.invoices.voidInvoice(b), { status: 400, code: 'resource_state_invalid' });

    const c = await mk();
    const unc = await stripe.invoices.markUncollectible(c);
    assert.equal(unc.status, 'uncollectible');
    assert.equal(unc.status_transitions.marked_uncollectible_at, T);
    const late = await stripe.invoices.pay(c, { paid_out_of_band: true });
    assert.equal(late.status, 'paid');
    assert.equal(late.amount_paid, 1999);

    const d = await mk();
    await stripe.invoices.markUncollectible(d);
    assert.equal((await stripe.invoices.voidInvoice(d)).status, 'void');

    const types = async (id) => new Set((await stripe.events.list({ type: 'invoice.*', limit: 100 }).autoPagingToArray({ limit: 10000 }))
      .filter((e) => e.data.object.id === id).map((e) => e.type));
    assert.ok((await types(a)).has('invoice.paid'));
    assert.ok((await types(b)).has('invoice.voided'));
    assert.ok((await types(c)).has('invoice.marked_uncollectible'));
    await expectStripeError(stripe.invoices.pay('in_doesnotexist', { paid_out_of_band: true }), {
      status: 404, code: 'resource_missing',
    });
  });

  test('createPreview reflects the usage so far and changes nothing', async () => {
    const T = utc(2026, 1, 1);
    const END = utc(2026, 2, 1);
    const w = await world(T);
    const sub = await stripe.subscriptions.create({ customer: w.cus.id, items: [{ price: cat.seat.id, quantity: 2 }, { price: cat.calls.id }] });
    await w.advance(T + 12 * DAY);
    await w.use(100, T + 3 * DAY);
    await w.use(23, T + 11 * DAY);
    const p = await stripe.invoices.createPreview({ subscription: sub.id });
    assert.equal(p.object, 'invoice');
    assert.equal(p.customer, w.cus.id);
    assert.equal(p.period_start, T);
    assert.equal(p.period_end, END);
    const usage = linesFor(p, cat.calls);
    assert.equal(usage.length, 1);
    assert.equal(usage[0].quantity, 123);
    assert.equal(usage[0].amount, 369);
    const seat = linesFor(p, cat.seat);
    assert.equal(seat.length, 1);
    assert.equal(seat[0].amount, 3998);
    assert.deepEqual({ ...seat[0].period }, { start: END, end: utc(2026, 3, 1) });
    assert.equal(p.total, 4367);
    assert.equal(p.amount_due, 4367);
    assert.equal((await w.invoices(sub)).length, 1, 'a preview is not saved');
    // More usage, a larger preview.
    await w.use(7, T + 12 * DAY - 60);
    const p2 = await stripe.invoices.createPreview({ subscription: sub.id });
    assert.equal(linesFor(p2, cat.calls)[0].quantity, 130);
    assert.equal(p2.total, 3998 + 390);
    await expectStripeError(stripe.invoices.createPreview({ subscription: 'sub_doesnotexist' }), {
      code: 'resource_missing', param: 'subscription',
    });
    // The real invoice matches the last preview.
    await w.advance(END + 2 * HOUR);
    const [inv] = await w.invoices(sub);
    assert.equal(inv.total, p2.total);
  });

  test('past_due when a charge_automatically invoice finalizes without a payment method; active after pay', async () => {
    const T = utc(2026, 1, 1);
    const END = utc(2026, 2, 1);
    const w = await world(T);
    const sub = await stripe.subscriptions.create({ customer: w.cus.id, items: [{ price: cat.seat.id }] });
    assert.equal(sub.status, 'active');
    await w.advance(END + 60);
    assert.equal((await stripe.subscriptions.retrieve(sub.id)).status, 'active', 'a draft does not make it past due');
    await w.advance(END + HOUR + 60);
    const s = await stripe.subscriptions.retrieve(sub.id);
    assert.equal(s.status, 'past_due');
    const [inv] = await w.invoices(sub);
    assert.equal(inv.status, 'open');
    assert.equal(s.latest_invoice, inv.id);
    const listed = await stripe.subscriptions.list({ customer: w.cus.id, status: 'past_due' });
    assert.deepEqual(listed.data.map((x) => x.id), [sub.id]);
    await stripe.invoices.pay(inv.id, { paid_out_of_band: true });
    assert.equal((await stripe.subscriptions.retrieve(sub.id)).status, 'active');

    // A customer with a default payment method stays active.
    const w2 = await world(T, { invoice_settings: { default_payment_method: 'pm_card_visa' } });
    const sub2 = await stripe.subscriptions.create({ customer: w2.cus.id, items: [{ price: cat.seat.id }] });
    await w2.advance(END + HOUR + 60);
    assert.equal((await stripe.subscriptions.retrieve(sub2.id)).status, 'active');
    assert.equal((await w2.invoices(sub2))[0].status, 'open');
  });

  test('a renewal records invoice.created then invoice.finalized; nothing due means paid', async () => {
    const T = utc(2026, 1, 1);
    const END = utc(2026, 2, 1);
    const w = await world(T);
    const sub = await stripe.subscriptions.create({ customer: w.cus.id, items: [{ price: cat.calls.id }] });
    const first = await stripe.invoices.retrieve(sub.latest_invoice);
    assert.equal(first.total, 0);
    assert.equal(first.status, 'paid');
    await w.advance(END + 2 * HOUR);
    const [inv] = await w.invoices(sub);
    assert.notEqual(inv.id, first.id);
    assert.equal(inv.total, 0);
    assert.equal(inv.status, 'paid');
    assert.equal(inv.status_transitions.paid_at, END + HOUR);
    const types = (await stripe.events.list({ type: 'invoice.*', limit: 100 }).autoPagingToArray({ limit: 10000 }))
      .filter((e) => e.data.object.id === inv.id)
      .map((e) => [e.type, e.created])
      .reverse(); // oldest first
    assert.deepEqual(types, [['invoice.created', END], ['invoice.finalized', END + HOUR], ['invoice.paid', END + HOUR]]);
    const created = (await eventsOf('invoice.created', inv.id))[0];
    assert.equal(created.data.object.status, 'draft');
    assert.equal((await stripe.subscriptions.retrieve(sub.id)).status, 'active');
  });

  test('collection_method send_invoice: a due date, and no past_due on finalization', async () => {
    const T = utc(2026, 1, 1);
    const END = utc(2026, 2, 1);
    const w = await world(T);
    const sub = await stripe.subscriptions.create({
      customer: w.cus.id, items: [{ price: cat.seat.id }], collection_method: 'send_invoice', days_until_due: 14,
    });
    assert.equal(sub.collection_method, 'send_invoice');
    assert.equal(sub.days_until_due, 14);
    const first = await stripe.invoices.retrieve(sub.latest_invoice);
    assert.equal(first.collection_method, 'send_invoice');
    assert.equal(first.due_date, T + 14 * DAY);
    await w.advance(END + 2 * HOUR);
    const [inv] = await w.invoices(sub);
    assert.equal(inv.status, 'open');
    assert.equal(inv.due_date, END + HOUR + 14 * DAY);
    assert.equal((await stripe.subscriptions.retrieve(sub.id)).status, 'active');
  });

  test('zero-decimal currency: yen amounts, rounded half away from zero', async () => {
    const T = utc(2026, 1, 1);
    const END = utc(2026, 2, 1);
    const prod = await stripe.products.create({ name: 'Yen plan' });
    const meter = await createMeter(stripe);
    const base = await stripe.prices.create({ product: prod.id, currency: 'jpy', unit_amount: 1500, recurring: { interval: 'month' } });
    const half = await stripe.prices.create({
      product: prod.id, currency: 'jpy', unit_amount_decimal: '0.5',
      recurring: { interval: 'month', usage_type: 'metered', meter: meter.id },
    });
    const w = await world(T);
    const sub = await stripe.subscriptions.create({ customer: w.cus.id, items: [{ price: base.id, quantity: 3 }, { price: half.id }] });
    assert.equal(sub.currency, 'jpy');
    const first = await stripe.invoices.retrieve(sub.latest_invoice);
    assert.equal(first.currency, 'jpy');
    assert.equal(first.total, 4500);
    await w.advance(T + 10 * DAY);
    await w.use(5, T + 10 * DAY - 600, meter); // 5 x 0.5 = 2.5 yen -> 3
    await w.advance(END + 2 * HOUR);
    const [inv] = await w.invoices(sub);
    assert.equal(inv.currency, 'jpy');
    const usage = linesFor(inv, half);
    assert.equal(usage[0].quantity, 5);
    assert.equal(usage[0].amount, 3);
    assert.equal(inv.total, 4503);
  });
});

// ---------------------------------------------------------------------------------------------

describe('without a test clock', () => {
  test('the server renews on its own at the period end', async () => {
    // A daily price with the anchor three seconds ahead: the first period is three seconds
    // long, and the scheduler renews the subscription when it ends, with nobody calling.
    const prod = await stripe.products.create({ name: 'Daily' });
    const daily = await stripe.prices.create({ product: prod.id, currency: 'usd', unit_amount: 86400, recurring: { interval: 'day' } });
    const cus = await stripe.customers.create({ name: 'Real time' });
    const anchor = Math.floor(Date.now() / 1000) + 3;
    const sub = await stripe.subscriptions.create({ customer: cus.id, items: [{ price: daily.id }], billing_cycle_anchor: anchor });
    assert.equal(sub.test_clock, null);
    assert.equal(sub.items.data[0].current_period_end, anchor);
    const first = await stripe.invoices.retrieve(sub.latest_invoice);
    // 864.00 a day, one cent a second: the first period is prorated to its seconds.
    assert.equal(first.total, anchor - sub.created);
    const deadline = Date.now() + 15000;
    let invs = [];
    while (Date.now() < deadline) {
      invs = (await stripe.invoices.list({ subscription: sub.id })).data;
      if (invs.length > 1) break;
      await new Promise((r) => setTimeout(r, 250));
    }
    assert.equal(invs.length, 2, 'no renewal invoice 12 s after the period end');
    const [renewal] = invs;
    assert.equal(renewal.billing_reason, 'subscription_cycle');
    assert.equal(renewal.created, anchor);
    assert.equal(renewal.status, 'draft');
    assert.equal(renewal.automatically_finalizes_at, anchor + HOUR);
    assert.equal(renewal.total, 86400);
    const s = await stripe.subscriptions.retrieve(sub.id);
    assert.equal(s.items.data[0].current_period_start, anchor);
    assert.equal(s.items.data[0].current_period_end, anchor + DAY);
  });
});

describe('billing cycle anchor', () => {
  test('day_of_month 31 from Jan 31: periods end Feb 28, Mar 31, Apr 30, May 31', async () => {
    const T = utc(2026, 1, 31);
    const w = await world(T);
    const sub = await stripe.subscriptions.create({
      customer: w.cus.id, items: [{ price: cat.seat.id }], billing_cycle_anchor_config: { day_of_month: 31 },
    });
    assert.equal(sub.billing_cycle_anchor_config.day_of_month, 31);
    const periodOf = async () => {
      const s = await stripe.subscriptions.retrieve(sub.id);
      return [s.items.data[0].current_period_start, s.items.data[0].current_period_end];
    };
    assert.deepEqual(await periodOf(), [T, utc(2026, 2, 28)]);
    const first = await stripe.invoices.retrieve(sub.latest_invoice);
    assert.equal(first.total, 1999, 'a first period that starts on the anchor is a whole period');
    await w.advance(utc(2026, 2, 28) + HOUR);
    assert.deepEqual(await periodOf(), [utc(2026, 2, 28), utc(2026, 3, 31)]);
    await w.advance(utc(2026, 3, 31) + HOUR);
    assert.deepEqual(await periodOf(), [utc(2026, 3, 31), utc(2026, 4, 30)]);
    await w.advance(utc(2026, 4, 30) + HOUR);
    assert.deepEqual(await periodOf(), [utc(2026, 4, 30), utc(2026, 5, 31)]);
    const invs = await w.invoices(sub);
    assert.deepEqual(invs.map((i) => i.lines.data[0].period.start), [utc(2026, 4, 30), utc(2026, 3, 31), utc(2026, 2, 28), T]);
    assert.ok(invs.every((i) => i.total === 1999));
  });

  test('weekly and quarterly periods; a month-end start keeps its day', async () => {
    const T = utc(2025, 11, 30, 8);
    const w = await world(T);
    const prod = await stripe.products.create({ name: 'Periods' });
    const weekly = await stripe.prices.create({ product: prod.id, currency: 'usd', unit_amount: 700, recurring: { interval: 'week' } });
    const quarterly = await stripe.prices.create({ product: prod.id, currency: 'usd', unit_amount: 9000, recurring: { interval: 'month', interval_count: 3 } });
    const wk = await stripe.subscriptions.create({ customer: w.cus.id, items: [{ price: weekly.id }] });
    const q = await stripe.subscriptions.create({ customer: w.cus.id, items: [{ price: quarterly.id }] });
    const end = async (s) => (await stripe.subscriptions.retrieve(s.id)).items.data[0].current_period_end;
    assert.equal(await end(wk), T + 7 * DAY);
    // Nov 30 + 3 months: Feb 28 (clamped); + 6 months: May 30 (from the anchor, not from Feb 28).
    assert.equal(await end(q), utc(2026, 2, 28, 8));
    for (let i = 1; i <= 13; i++) await w.advance(T + i * 7 * DAY + 60);
    assert.equal(await end(wk), T + 14 * 7 * DAY);
    assert.equal((await w.invoices(wk)).length, 14);
    const w2 = await world(T);
    const q2 = await stripe.subscriptions.create({ customer: w2.cus.id, items: [{ price: quarterly.id }] });
    await w2.advance(utc(2026, 2, 28, 9));
    assert.equal(await end(q2), utc(2026, 5, 30, 8));
    await w2.advance(utc(2026, 5, 30, 9));
    assert.equal(await end(q2), utc(2026, 8, 30, 8));
    const invs = await w2.invoices(q2);
    assert.deepEqual(invs.map((i) => i.total), [9000, 9000, 9000]);
  });

  test('a future billing_cycle_anchor prorates the first period; with proration none it is free', async () => {
    // From Jan 1 00:00 to the anchor, Jan 16 12:00: 15.5 days, half of the 31-day period
    // (Dec 16 - Jan 16 and Jan 16 - Feb 16 both last 31 days).
    const T = utc(2026, 1, 1);
    const A = utc(2026, 1, 16, 12);
    const w = await world(T);
    const sub = await stripe.subscriptions.create({
      customer: w.cus.id, items: [{ price: cat.seat.id, quantity: 3 }], billing_cycle_anchor: A,
    });
    assert.equal(sub.billing_cycle_anchor, A);
    assert.equal(sub.items.data[0].current_period_start, T);
    assert.equal(sub.items.data[0].current_period_end, A);
    const first = await stripe.invoices.retrieve(sub.latest_invoice);
    // 59.97 / 2 = 29.985 -> 29.99
    assert.equal(first.lines.data.length, 1);
    assert.equal(first.lines.data[0].amount, 2999);
    assert.deepEqual({ ...first.lines.data[0].period }, { start: T, end: A });
    assert.equal(first.total, 2999);

    const free = await stripe.subscriptions.create({
      customer: w.cus.id, items: [{ price: cat.addon.id }], billing_cycle_anchor: A, proration_behavior: 'none',
    });
    assert.equal((await stripe.invoices.retrieve(free.latest_invoice)).total, 0);

    await w.advance(A + 2 * HOUR);
    const s = await stripe.subscriptions.retrieve(sub.id);
    assert.deepEqual([s.items.data[0].current_period_start, s.items.data[0].current_period_end], [A, utc(2026, 2, 16, 12)]);
    const [renewal] = await w.invoices(sub);
    assert.equal(renewal.total, 5997);
    await expectStripeError(stripe.subscriptions.create({
      customer: w.cus.id, items: [{ price: cat.seat.id }], billing_cycle_anchor: w.now + 40 * DAY,
    }), { status: 400, param: 'billing_cycle_anchor' });
  });
});

// ---------------------------------------------------------------------------------------------

describe('trials', () => {
  const T = utc(2026, 3, 1);
  const TRIAL_END = T + 14 * DAY;

  async function trialSub(w, behavior, items = [{ price: cat.seat.id }]) {
    const params = { customer: w.cus.id, items, trial_period_days: 14 };
    if (behavior) params.trial_settings = { end_behavior: { missing_payment_method: behavior } };
    return stripe.subscriptions.create(params);
  }

  test('a 14-day trial: trialing, a zero first invoice', async () => {
    const w = await world(T);
    const sub = await trialSub(w, 'create_invoice');
    assert.equal(sub.status, 'trialing');
    assert.equal(sub.trial_start, T);
    assert.equal(sub.trial_end, TRIAL_END);
    assert.equal(sub.items.data[0].current_period_end, TRIAL_END);
    assert.equal(sub.trial_settings.end_behavior.missing_payment_method, 'create_invoice');
    const inv = await stripe.invoices.retrieve(sub.latest_invoice);
    assert.equal(inv.total, 0);
    assert.equal(inv.amount_due, 0);
    assert.equal(inv.status, 'paid');
    assert.equal(inv.lines.data.length, 1);
    assert.equal(inv.lines.data[0].amount, 0);
    assert.deepEqual({ ...inv.lines.data[0].period }, { start: T, end: TRIAL_END });
  });

  test('end behaviour cancel: canceled at the trial end, customer.subscription.deleted', async () => {
    const w = await world(T);
    const sub = await trialSub(w, 'cancel');
    await w.advance(TRIAL_END + 2 * HOUR);
    const s = await stripe.subscriptions.retrieve(sub.id);
    assert.equal(s.status, 'canceled');
    assert.equal(s.ended_at, TRIAL_END);
    assert.equal((await w.invoices(sub)).length, 1, 'no invoice after a canceled trial');
    const ev = await eventsOf('customer.subscription.deleted', sub.id);
    assert.equal(ev.length, 1);
    assert.equal(ev[0].created, TRIAL_END);
    assert.equal(ev[0].data.object.status, 'canceled');
  });

  test('end behaviour pause: paused, no invoice, customer.subscription.paused; resume starts a period', async () => {
    const w = await world(T);
    const sub = await trialSub(w, 'pause');
    await w.advance(TRIAL_END + 2 * HOUR);
    const s = await stripe.subscriptions.retrieve(sub.id);
    assert.equal(s.status, 'paused');
    assert.equal((await w.invoices(sub)).length, 1, 'no invoice for a paused subscription');
    const ev = await eventsOf('customer.subscription.paused', sub.id);
    assert.equal(ev.length, 1);
    assert.equal(ev[0].created, TRIAL_END);
    assert.deepEqual((await stripe.subscriptions.list({ customer: w.cus.id, status: 'paused' })).data.map((x) => x.id), [sub.id]);
    // Nothing happens while paused.
    await w.advance(TRIAL_END + 40 * DAY);
    assert.equal((await w.invoices(sub)).length, 1);
    // Resume: a new period from now, billed.
    const R = w.now;
    const r = await stripe.subscriptions.resume(sub.id, { billing_cycle_anchor: 'now' });
    assert.equal(r.status, 'active');
    assert.equal(r.items.data[0].current_period_start, R);
    assert.equal(r.items.data[0].current_period_end, utc(2026, 5, 24));
    const invs = await w.invoices(sub);
    assert.equal(invs.length, 2);
    assert.equal(invs[0].id, r.latest_invoice);
    const lic = linesFor(invs[0], cat.seat);
    assert.equal(lic.length, 1);
    assert.equal(lic[0].amount, 1999);
    assert.deepEqual({ ...lic[0].period }, { start: R, end: utc(2026, 5, 24) });
    assert.equal((await eventsOf('customer.subscription.resumed', sub.id)).length, 1);
    await expectStripeError(stripe.subscriptions.resume(sub.id), { status: 400 });
  });

  test('usage sent while paused is not billed after a resume', async () => {
    const w = await world(T);
    const sub = await trialSub(w, 'pause', [{ price: cat.seat.id }, { price: cat.calls.id }]);
    await w.advance(TRIAL_END + 5 * DAY);
    await w.use(1000, TRIAL_END + 2 * DAY); // while paused
    const R = w.now;
    await stripe.subscriptions.resume(sub.id, { billing_cycle_anchor: 'now' });
    await w.advance(R + 3 * DAY);
    await w.use(11, R + DAY);
    const NEXT = utc(2026, 4, 20);
    await w.advance(NEXT + 2 * HOUR);
    const [inv] = await w.invoices(sub);
    const usage = linesFor(inv, cat.calls);
    assert.equal(usage.length, 1);
    assert.equal(usage[0].quantity, 11);
    assert.equal(usage[0].amount, 33);
    assert.equal(inv.total, 1999 + 33);
  });

  test('a quantity change during a trial makes no prorations', async () => {
    const w = await world(T, { invoice_settings: { default_payment_method: 'pm_card_visa' } });
    const sub = await trialSub(w, 'create_invoice', [{ price: cat.seat.id, quantity: 1 }]);
    await w.advance(T + 5 * DAY);
    await stripe.subscriptions.update(sub.id, { items: [{ id: sub.items.data[0].id, quantity: 4 }] });
    await w.advance(TRIAL_END + 2 * HOUR);
    const [inv] = await w.invoices(sub);
    assert.ok(!inv.lines.data.some(isProration), 'prorations for a trial period');
    assert.deepEqual(inv.lines.data.map((l) => l.amount), [4 * 1999]);
  });

  test('end behaviour create_invoice without a payment method: invoiced, then past_due', async () => {
    const w = await world(T);
    const sub = await trialSub(w, 'create_invoice', [{ price: cat.seat.id, quantity: 2 }]);
    await w.advance(TRIAL_END + 60);
    const s = await stripe.subscriptions.retrieve(sub.id);
    assert.equal(s.status, 'active');
    assert.equal(s.items.data[0].current_period_start, TRIAL_END);
    assert.equal(s.items.data[0].current_period_end, utc(2026, 4, 15));
    const [inv] = await w.invoices(sub);
    assert.equal(inv.status, 'draft');
    assert.equal(inv.billing_reason, 'subscription_cycle');
    const lic = linesFor(inv, cat.seat);
    assert.equal(lic.length, 1);
    assert.equal(lic[0].amount, 3998);
    assert.deepEqual({ ...lic[0].period }, { start: TRIAL_END, end: utc(2026, 4, 15) });
    assert.equal(inv.total, 3998);
    await w.advance(TRIAL_END + HOUR + 60);
    assert.equal((await stripe.invoices.retrieve(inv.id)).status, 'open');
    assert.equal((await stripe.subscriptions.retrieve(sub.id)).status, 'past_due');
  });

  test('end behaviour create_invoice with a default payment method: stays active', async () => {
    const w = await world(T, { invoice_settings: { default_payment_method: 'pm_card_visa' } });
    const sub = await trialSub(w, 'create_invoice');
    await w.advance(TRIAL_END + HOUR + 60);
    const s = await stripe.subscriptions.retrieve(sub.id);
    assert.equal(s.status, 'active');
    const [inv] = await w.invoices(sub);
    assert.equal(inv.status, 'open');
    assert.equal(inv.total, 1999);
  });

  test('pause and cancel behaviours do not apply when there is a payment method', async () => {
    const w = await world(T, { invoice_settings: { default_payment_method: 'pm_card_visa' } });
    const a = await trialSub(w, 'pause');
    const b = await trialSub(w, 'cancel');
    await w.advance(TRIAL_END + 2 * HOUR);
    assert.equal((await stripe.subscriptions.retrieve(a.id)).status, 'active');
    assert.equal((await stripe.subscriptions.retrieve(b.id)).status, 'active');
  });

  test('usage during the trial is never billed', async () => {
    const w = await world(T, { invoice_settings: { default_payment_method: 'pm_card_visa' } });
    const sub = await trialSub(w, 'create_invoice', [{ price: cat.seat.id }, { price: cat.calls.id }]);
    await w.advance(T + 10 * DAY);
    await w.use(500, T + 2 * DAY);
    await w.use(250, T + 10 * DAY - 60);
    const preview = await stripe.invoices.createPreview({ subscription: sub.id });
    assert.equal(linesFor(preview, cat.calls).reduce((a, l) => a + l.amount, 0), 0);
    await w.advance(TRIAL_END + 2 * HOUR);
    const [atTrialEnd] = await w.invoices(sub);
    assert.equal(linesFor(atTrialEnd, cat.calls).reduce((a, l) => a + l.amount, 0), 0, 'trial usage billed');
    assert.equal(atTrialEnd.total, 1999);
    // Usage after the trial is billed at the next renewal; trial usage still is not.
    await w.use(25, TRIAL_END + HOUR);
    const NEXT = utc(2026, 4, 15);
    await w.advance(NEXT - 10 * DAY);
    await w.use(15, w.now - 60);
    await w.advance(NEXT + 2 * HOUR);
    const [renewal] = await w.invoices(sub);
    const usage = linesFor(renewal, cat.calls);
    assert.equal(usage.length, 1);
    assert.equal(usage[0].quantity, 40);
    assert.equal(usage[0].amount, 120);
    assert.deepEqual({ ...usage[0].period }, { start: TRIAL_END, end: NEXT });
    assert.equal(renewal.total, 1999 + 120);
  });

  test('trial_end as a timestamp; ending a trial now with trial_end=now', async () => {
    const w = await world(T, { invoice_settings: { default_payment_method: 'pm_card_visa' } });
    const END = T + 10 * DAY + 3600;
    const sub = await stripe.subscriptions.create({ customer: w.cus.id, items: [{ price: cat.seat.id }], trial_end: END });
    assert.equal(sub.status, 'trialing');
    assert.equal(sub.trial_end, END);
    assert.equal(sub.items.data[0].current_period_end, END);
    const NOW = T + 2 * DAY;
    await w.advance(NOW);
    const u = await stripe.subscriptions.update(sub.id, { trial_end: 'now' });
    assert.equal(u.status, 'active');
    assert.equal(u.trial_end, NOW);
    assert.equal(u.items.data[0].current_period_start, NOW);
    assert.equal(u.items.data[0].current_period_end, utc(2026, 4, 3));
    const [inv] = await w.invoices(sub);
    assert.notEqual(inv.id, sub.latest_invoice);
    assert.equal(linesFor(inv, cat.seat)[0].amount, 1999);
    assert.deepEqual({ ...linesFor(inv, cat.seat)[0].period }, { start: NOW, end: utc(2026, 4, 3) });
    await expectStripeError(stripe.subscriptions.create({
      customer: w.cus.id, items: [{ price: cat.seat.id }], trial_end: NOW - 60,
    }), { status: 400, param: 'trial_end' });
  });

  test('ending a trial with trial_end=now records customer.subscription.trial_will_end at once', async () => {
    // Stripe: "Occurs three days before a subscription's trial period is scheduled to end, or
    // when a trial is ended immediately (using trial_end=now)."
    const w = await world(T, { invoice_settings: { default_payment_method: 'pm_card_visa' } });
    const sub = await trialSub(w, 'create_invoice');
    const NOW = T + 2 * DAY;
    await w.advance(NOW);
    await stripe.subscriptions.update(sub.id, { trial_end: 'now' });
    const ev = await eventsOf('customer.subscription.trial_will_end', sub.id);
    assert.equal(ev.length, 1);
    assert.equal(ev[0].created, NOW, `trial_will_end dated ${ev[0].created - NOW} s from the update`);
  });

  test('shortening a trial to less than three days records customer.subscription.trial_will_end at once', async () => {
    const w = await world(T, { invoice_settings: { default_payment_method: 'pm_card_visa' } });
    const sub = await trialSub(w, 'create_invoice');
    const NOW = T + 2 * DAY;
    await w.advance(NOW);
    await stripe.subscriptions.update(sub.id, { trial_end: NOW + 2 * DAY });
    const ev = await eventsOf('customer.subscription.trial_will_end', sub.id);
    assert.equal(ev.length, 1, 'no trial_will_end for a trial that now ends in two days');
    assert.equal(ev[0].created, NOW);
    await w.advance(NOW + 2 * DAY + HOUR);
    assert.equal((await eventsOf('customer.subscription.trial_will_end', sub.id)).length, 1);
  });

  test('customer.subscription.trial_will_end is sent 3 days before the trial ends', async () => {
    const w = await world(T);
    const sub = await trialSub(w, 'cancel');
    await w.advance(TRIAL_END - 3 * DAY - 60);
    assert.equal((await eventsOf('customer.subscription.trial_will_end', sub.id)).length, 0);
    await w.advance(TRIAL_END - 3 * DAY + 60);
    const ev = await eventsOf('customer.subscription.trial_will_end', sub.id);
    assert.equal(ev.length, 1);
    assert.equal(ev[0].created, TRIAL_END - 3 * DAY);
    assert.equal(ev[0].data.object.status, 'trialing');
    await w.advance(TRIAL_END + HOUR);
    assert.equal((await eventsOf('customer.subscription.trial_will_end', sub.id)).length, 1, 'sent once');
    // A trial shorter than three days: at once.
    const short = await stripe.subscriptions.create({ customer: w.cus.id, items: [{ price: cat.seat.id }], trial_period_days: 2 });
    const evShort = await eventsOf('customer.subscription.trial_will_end', short.id);
    assert.equal(evShort.length, 1);
    assert.equal(evShort[0].created, w.now);
  });
});

// ---------------------------------------------------------------------------------------------

describe('finalization grace period', () => {
  test('a draft finalizes an hour after the period end, taking usage reported meanwhile; later usage goes to the next invoice', async () => {
    const T = utc(2026, 4, 1);
    const END = utc(2026, 5, 1);
    const NEXT = utc(2026, 6, 1);
    const w = await world(T, { invoice_settings: { default_payment_method: 'pm_card_visa' } });
    const sub = await stripe.subscriptions.create({ customer: w.cus.id, items: [{ price: cat.seat.id }, { price: cat.calls.id }] });
    await w.advance(utc(2026, 4, 10));
    await w.use(100, utc(2026, 4, 9, 12));

    await w.advance(END + 10 * 60);
    const [draft] = await w.invoices(sub);
    assert.equal(draft.status, 'draft');
    assert.equal(draft.created, END);
    assert.equal(draft.period_start, T);
    assert.equal(draft.period_end, END);
    assert.equal(draft.automatically_finalizes_at, END + HOUR);
    assert.equal(linesFor(draft, cat.calls)[0].quantity, 100);
    // Usage for the old period arrives during the grace period.
    await w.use(20, END - 10 * 60);
    await w.advance(END + HOUR - 60);
    assert.equal((await stripe.invoices.retrieve(draft.id)).status, 'draft', 'finalized before the hour');
    await w.advance(END + HOUR + 60);
    const fin = await stripe.invoices.retrieve(draft.id);
    assert.equal(fin.status, 'open');
    assert.equal(fin.status_transitions.finalized_at, END + HOUR);
    const usage = linesFor(fin, cat.calls);
    assert.equal(usage.length, 1);
    assert.equal(usage[0].quantity, 120);
    assert.equal(dec(usage[0].quantity_decimal), '120');
    assert.equal(usage[0].amount, 360);
    assert.deepEqual({ ...usage[0].period }, { start: T, end: END });
    assert.equal(linesFor(fin, cat.seat)[0].amount, 1999);
    assert.equal(fin.total, 2359);
    assert.equal(sumLines(fin), fin.total);

    // Usage for the old period after finalization, and usage in the new one.
    await w.use(7, END - 5 * 60);
    await w.advance(utc(2026, 5, 10));
    await w.use(30, utc(2026, 5, 9));
    await w.advance(NEXT + 2 * HOUR);
    const [next] = await w.invoices(sub);
    assert.notEqual(next.id, fin.id);
    assert.equal(next.status, 'open');
    assert.equal(next.period_start, END);
    assert.equal(next.period_end, NEXT);
    const u2 = linesFor(next, cat.calls);
    assert.equal(u2.length, 1);
    assert.equal(u2[0].quantity, 37);
    assert.equal(u2[0].amount, 111);
    assert.equal(next.total, 1999 + 111);
    // The finalized invoice did not change.
    const still = await stripe.invoices.retrieve(fin.id);
    assert.equal(still.total, 2359);
    assert.equal(linesFor(still, cat.calls)[0].quantity, 120);
  });
});
