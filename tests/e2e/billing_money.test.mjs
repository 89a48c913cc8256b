// Money at the edges of a subscription's life: item price and meter changes, items removed
// and added in the same minute, the final invoice, trials, anchors and deleted customers.
// Every unit of usage is billed exactly once, and licensed time is charged for what it covers.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, createMeter, expectStripeError, expectRawError, rawRequest, stripeClient, uniq, HOUR, DAY } from './helpers.mjs';

let srv, stripe;
const utc = (y, m, d, h = 0, mi = 0, s = 0) => Date.UTC(y, m - 1, d, h, mi, s) / 1000;
const T = utc(2025, 2, 1), MAR = utc(2025, 3, 1), APR = utc(2025, 4, 1);
const cat = {};
before(async () => {
  srv = await startServer();
  stripe = srv.stripe;
  cat.m1 = await createMeter(stripe);
  cat.m2 = await createMeter(stripe);
  const prod = (name) => stripe.products.create({ name });
  cat.api1 = await prod('API1');
  cat.api2 = await prod('API2');
  cat.seatProd = await prod('Seat');
  const month = { interval: 'month' };
  const metered = (meter) => ({ interval: 'month', usage_type: 'metered', meter: meter.id });
  cat.p1 = await stripe.prices.create({ product: cat.api1.id, currency: 'usd', unit_amount: 1, recurring: metered(cat.m1) });
  cat.p1b = await stripe.prices.create({ product: cat.api1.id, currency: 'usd', unit_amount: 3, recurring: metered(cat.m1) });
  cat.p2 = await stripe.prices.create({ product: cat.api2.id, currency: 'usd', unit_amount: 2, recurring: metered(cat.m2) });
  cat.seat = await stripe.prices.create({ product: cat.seatProd.id, currency: 'usd', unit_amount: 3000, recurring: month });
  cat.seat28 = await stripe.prices.create({ product: cat.seatProd.id, currency: 'usd', unit_amount: 2800, recurring: month });
});
after(async () => { await srv?.close(); });

async function world(t0 = T, customer = { invoice_settings: { default_payment_method: 'pm_x' } }) {
  const clock = await stripe.testHelpers.testClocks.create({ frozen_time: t0, name: uniq('w') });
  const cus = await stripe.customers.create({ name: 'X', test_clock: clock.id, ...customer });
  const w = { clock, cus, now: t0,
    async advance(t) { await stripe.testHelpers.testClocks.advance(clock.id, { frozen_time: t }); w.now = t; },
    use: (v, ts = w.now, meter = cat.m1) => stripe.billing.meterEvents.create({ event_name: meter.event_name, payload: { stripe_customer_id: cus.id, value: String(v) }, timestamp: ts }),
    invoices: async (sub) => (await stripe.invoices.list({ subscription: sub, limit: 100 })).data,
  };
  return w;
}
const priceOf = (l) => l.pricing.price_details.price;
const allLines = (invs) => invs.flatMap((i) => i.lines.data.map((l) => ({ inv: i, price: priceOf(l), q: l.quantity_decimal ?? String(l.quantity), amount: l.amount, l })));
const billedFor = (invs, price) => allLines(invs).filter((l) => l.price === price.id).reduce((a, l) => a + l.amount, 0);
const itemOf = (sub, price) => sub.items.data.find((i) => i.price.id === price.id).id;
const total = (invs) => invs.reduce((a, i) => a + i.total, 0);
/** A subscription of w's customer to prices (one item each), with extra create parameters. */
const subscribe = (w, prices, extra = {}) =>
  stripe.subscriptions.create({ customer: w.cus.id, items: prices.map((p) => ({ price: p.id })), ...extra });

test('a metered item moved to a price on another meter: usage of both meters is billed once, each at its price', async () => {
  const w = await world();
  const sub = await subscribe(w, [cat.p1]);
  const si = sub.items.data[0].id;
  await w.advance(T + HOUR); await w.use(1000);
  await w.advance(MAR + 2 * HOUR);
  assert.equal(billedFor(await w.invoices(sub.id), cat.p1), 1000);
  await w.advance(MAR + DAY); await w.use(200);                  // old meter, before the change
  await w.advance(MAR + 2 * DAY);
  const upd = await stripe.subscriptions.update(sub.id, { items: [{ id: si, price: cat.p2.id }] });
  assert.equal(upd.items.data[0].id, si);
  assert.equal(upd.items.data[0].price.id, cat.p2.id);
  await w.advance(MAR + 3 * DAY);
  await w.use(500, w.now, cat.m2);
  await w.use(50);                                               // old meter, no item on it now
  await w.advance(APR + 2 * HOUR);
  const invs = await w.invoices(sub.id);
  assert.equal(billedFor(invs, cat.p1), 1000 + 200);
  assert.equal(billedFor(invs, cat.p2), 1000);
  const m2line = allLines(invs).find((l) => l.price === cat.p2.id);
  assert.equal(Number(m2line.q), 500);
});

test('a price cannot be on a subscription twice: an item changed to it, or a schedule phase listing it twice, is refused', async () => {
  const w = await world();
  const sub = await subscribe(w, [cat.p1, cat.p2]);
  const siB = itemOf(sub, cat.p2);
  await expectStripeError(stripe.subscriptions.update(sub.id, { items: [{ id: siB, price: cat.p1.id }] }),
    { status: 400, code: 'parameter_invalid', param: 'items[0][price]' });
  const sched = await stripe.subscriptionSchedules.create({ from_subscription: sub.id });
  await expectStripeError(stripe.subscriptionSchedules.update(sched.id, {
    phases: [{ items: [{ price: cat.p1.id }, { price: cat.p2.id }] }, { items: [{ price: cat.p1.id }, { price: cat.p1.id }] }],
  }), { status: 400, param: 'phases[1][items][1][price]' });
  // Nothing changed; 1000 units are billed once.
  const now = await stripe.subscriptions.retrieve(sub.id);
  assert.deepEqual(now.items.data.map((i) => i.price.id).sort(), [cat.p1.id, cat.p2.id].sort());
  await w.advance(T + HOUR); await w.use(1000);
  await w.advance(MAR + 2 * HOUR);
  assert.equal(billedFor(await w.invoices(sub.id), cat.p1), 1000);
});

test('a metered item removed and added again in the same minute: the minute is billed once', async () => {
  const w = await world();
  const sub = await subscribe(w, [cat.p1]);
  await w.advance(T + DAY + 30);
  await w.use(700, T + DAY + 10);
  await stripe.subscriptions.update(sub.id, { items: [{ id: sub.items.data[0].id, deleted: true }, { price: cat.p1.id }] });
  await w.advance(T + DAY + 45);
  await w.use(11, T + DAY + 50);                               // after the change, same minute
  await w.advance(T + DAY + 5 * 60);
  await w.use(22);                                              // a later minute: the new item's
  await w.advance(MAR + 2 * HOUR);
  assert.equal(billedFor(await w.invoices(sub.id), cat.p1), 733);
});

test('the final invoice of a cancellation bills the usage of the cancellation minute', async () => {
  const w = await world();
  const sub = await subscribe(w, [cat.p1]);
  await w.advance(T + DAY + 50);
  await w.use(300, T + DAY - 30);
  await w.use(4000, T + DAY + 10);
  const canceled = await stripe.subscriptions.cancel(sub.id, { invoice_now: true });
  assert.equal(canceled.ended_at, T + DAY + 50);
  const invs = await w.invoices(sub.id);
  const final = invs.find((i) => i.id === canceled.latest_invoice);
  assert.equal(final.total, 4300);
  assert.equal(billedFor(invs, cat.p1), 4300);
});

test('a metered item removed, then added again by a later request in the same minute: the minute is billed once', async () => {
  const w = await world();
  const sub = await subscribe(w, [cat.p1, cat.seat]);
  await w.advance(T + DAY + 20);
  await w.use(700, T + DAY + 10);
  await stripe.subscriptions.update(sub.id, { items: [{ id: itemOf(sub, cat.p1), deleted: true }] });
  await w.advance(T + DAY + 40);
  await stripe.subscriptions.update(sub.id, { items: [{ price: cat.p1b.id }] });
  await w.advance(T + DAY + 5 * 60);
  await w.use(10);
  await w.advance(MAR + 2 * HOUR);
  const invs = await w.invoices(sub.id);
  assert.equal(billedFor(invs, cat.p1), 700);
  assert.equal(billedFor(invs, cat.p1b), 30);
});

test('a metered item with no usage removed, another on its meter added in the same minute: the new item bills that minute', async () => {
  const w = await world();
  const sub = await subscribe(w, [cat.p1, cat.seat]);
  await w.advance(T + DAY + 30);
  await stripe.subscriptions.update(sub.id, { items: [{ id: itemOf(sub, cat.p1), deleted: true }], proration_behavior: 'none' });
  await w.advance(T + DAY + 40);
  await stripe.subscriptions.update(sub.id, { items: [{ price: cat.p1b.id }] });
  await w.use(700, T + DAY + 50);
  await w.advance(MAR + 2 * HOUR);
  const invs = await w.invoices(sub.id);
  assert.equal(billedFor(invs, cat.p1), 0);
  assert.equal(billedFor(invs, cat.p1b), 2100);
});

test('deleting a customer cancels its subscriptions at once; nothing is billed afterwards', async () => {
  const w = await world();
  const sub = await subscribe(w, [cat.seat28, cat.p1]);
  await w.advance(T + 3 * DAY);
  const del = await stripe.customers.del(w.cus.id);
  assert.equal(del.deleted, true);
  const gone = await stripe.subscriptions.retrieve(sub.id);
  assert.equal(gone.status, 'canceled');
  assert.equal(gone.ended_at, T + 3 * DAY);
  assert.equal(gone.canceled_at, T + 3 * DAY);
  await w.advance(MAR + 2 * HOUR);
  const invs = await w.invoices(sub.id);
  assert.deepEqual(invs.map((i) => i.billing_reason), ['subscription_create']);
  assert.equal((await stripe.subscriptions.retrieve(sub.id)).status, 'canceled');
});

test('a metered item added and removed during a trial bills none of its trial usage', async () => {
  const w = await world();
  const sub = await subscribe(w, [cat.seat], { trial_period_days: 14 });
  await w.advance(T + DAY);
  const upd = await stripe.subscriptions.update(sub.id, { items: [{ price: cat.p1.id }] });
  const si = itemOf(upd, cat.p1);
  await w.advance(T + DAY + HOUR); await w.use(5000);
  await w.advance(T + 2 * DAY);
  await stripe.subscriptions.update(sub.id, { items: [{ id: si, deleted: true }] });
  await w.advance(T + 14 * DAY + 2 * HOUR);
  const invs = await w.invoices(sub.id);
  assert.equal(billedFor(invs, cat.p1), 0);
  assert.equal(total(invs), 3000);
});

test('a trial followed by a stub up to the anchor: the stub is prorated like one without a trial (free with proration_behavior=none)', async () => {
  const JAN10 = utc(2025, 1, 10), JAN17 = utc(2025, 1, 17);
  // The same stub, Jan 17 -> Feb 1, without a trial: the reference amount.
  const ref = await world(JAN17);
  const plain = await stripe.subscriptions.create({ customer: ref.cus.id, items: [{ price: cat.seat.id }], billing_cycle_anchor: T });
  const stub = (await stripe.invoices.retrieve(plain.latest_invoice)).total;
  assert.ok(stub > 0 && stub < 3000, `stub ${stub}`);
  for (const [proration_behavior, want] of [[undefined, stub], ['none', 0]]) {
    const w = await world(JAN10);
    const sub = await stripe.subscriptions.create({
      customer: w.cus.id, items: [{ price: cat.seat.id }], trial_period_days: 7,
      billing_cycle_anchor_config: { day_of_month: 1 }, ...(proration_behavior ? { proration_behavior } : {}),
    });
    assert.equal(sub.trial_end, JAN17);
    assert.equal((await stripe.invoices.createPreview({ subscription: sub.id })).total, want);
    await w.advance(JAN17 + 10);
    const inv = (await w.invoices(sub.id)).find((i) => i.billing_reason === 'subscription_cycle');
    assert.equal(inv.period_end, JAN17);
    const line = inv.lines.data[0];
    assert.equal(line.period.start, JAN17);
    assert.equal(line.period.end, T);
    assert.equal(inv.total, want, `proration_behavior=${proration_behavior}`);
    const preview = await stripe.invoices.createPreview({ subscription: sub.id });
    assert.equal(preview.total, 3000);                        // Feb 1 -> Mar 1, a whole period
  }
});

test('paying a zero-amount draft finalizes it and leaves it paid', async () => {
  const w = await world();
  const sub = await subscribe(w, [cat.p1]);
  await w.advance(MAR + 10 * 60);
  const draft = (await w.invoices(sub.id)).find((i) => i.billing_reason === 'subscription_cycle');
  assert.equal(draft.status, 'draft');
  assert.equal(draft.amount_due, 0);
  const paid = await stripe.invoices.pay(draft.id, { paid_out_of_band: true });
  assert.equal(paid.status, 'paid');
  assert.equal((await stripe.invoices.retrieve(draft.id)).status, 'paid');
  await expectStripeError(stripe.invoices.pay(draft.id, { paid_out_of_band: true }), { status: 400, code: 'resource_state_invalid' });
});

test('the preview of a subscription with cancel_at inside the period is its final invoice', async () => {
  const w = await world();
  const sub = await subscribe(w, [cat.seat28, cat.p1], { cancel_at: T + 10 * DAY, proration_behavior: 'none' });
  await w.advance(T + HOUR); await w.use(100);
  const preview = await stripe.invoices.createPreview({ subscription: sub.id });
  assert.equal(preview.period_end, T + 10 * DAY);
  assert.deepEqual(preview.lines.data.map(priceOf), [cat.p1.id]);
  assert.equal(preview.total, 100);
  await w.advance(T + 10 * DAY + HOUR);
  const invs = await w.invoices(sub.id);
  const final = invs.find((i) => i.billing_reason === 'subscription_cycle');
  assert.equal(final.total, preview.total);
  assert.equal(final.period_end, preview.period_end);
});

test('the billing cycle anchor must not be later than the next natural billing date', async () => {
  const w = await world();
  await expectStripeError(subscribe(w, [cat.seat], { billing_cycle_anchor: T + 30 * DAY }),
    { status: 400, param: 'billing_cycle_anchor' });
  assert.equal((await stripe.subscriptions.list({ customer: w.cus.id })).data.length, 0);
  const sub = await subscribe(w, [cat.seat], { billing_cycle_anchor: MAR });
  assert.equal(sub.billing_cycle_anchor, MAR);
});

test('a first period shortened by the anchor is prorated against the period that ends at the anchor', async () => {
  const w = await world();
  // Feb 1 -> Mar 1 is a whole (28-day) period: full price.
  const whole = await subscribe(w, [cat.seat], { billing_cycle_anchor: MAR });
  assert.equal((await stripe.invoices.retrieve(whole.latest_invoice)).total, 3000);
  // Feb 15 -> Mar 1: 14 of Feb 1 -> Mar 1's 28 days.
  const w2 = await world(T + 14 * DAY);
  const half = await subscribe(w2, [cat.seat], { billing_cycle_anchor: MAR });
  assert.equal((await stripe.invoices.retrieve(half.latest_invoice)).total, 1500);
});

test('days_until_due=0 is kept: invoices are due when finalized', async () => {
  const w = await world();
  const sub = await subscribe(w, [cat.seat], { collection_method: 'send_invoice', days_until_due: 0 });
  assert.equal(sub.days_until_due, 0);
  const first = await stripe.invoices.retrieve(sub.latest_invoice);
  assert.equal(first.due_date, first.status_transitions.finalized_at);
  const upd = await stripe.subscriptions.update(sub.id, { days_until_due: 7 });
  assert.equal(upd.days_until_due, 7);
  assert.equal((await stripe.subscriptions.update(sub.id, { days_until_due: 0 })).days_until_due, 0);
  assert.equal((await stripe.subscriptions.update(sub.id, { description: 'x' })).days_until_due, 0);
});

test('proration_behavior=always_invoice is refused on create, as on Stripe', async () => {
  const w = await world();
  await expectStripeError(subscribe(w, [cat.seat], { proration_behavior: 'always_invoice' }),
    { status: 400, param: 'proration_behavior' });
  assert.equal((await stripe.subscriptions.list({ customer: w.cus.id })).data.length, 0);
});

test('finalizing with auto_advance=false keeps the invoice from advancing by itself', async () => {
  const w = await world();
  const sub = await subscribe(w, [cat.p1]);
  await w.advance(T + HOUR); await w.use(100);
  await w.advance(MAR + 10 * 60);
  const draft = (await w.invoices(sub.id)).find((i) => i.billing_reason === 'subscription_cycle');
  const fin = await stripe.invoices.finalizeInvoice(draft.id, { auto_advance: false });
  assert.equal(fin.status, 'open');
  assert.equal(fin.auto_advance, false);
  assert.equal((await stripe.invoices.retrieve(draft.id)).auto_advance, false);
});

test('cancellation_details[comment|feedback] on cancel are kept; an unknown feedback is refused', async () => {
  const w = await world();
  const sub = await subscribe(w, [cat.seat]);
  await expectStripeError(stripe.subscriptions.cancel(sub.id, { cancellation_details: { feedback: 'bored' } }),
    { status: 400, param: 'cancellation_details[feedback]' });
  assert.equal((await stripe.subscriptions.retrieve(sub.id)).status, 'active');
  const c = await stripe.subscriptions.cancel(sub.id, { cancellation_details: { comment: 'Too pricey for us', feedback: 'too_expensive' } });
  assert.deepEqual({ ...c.cancellation_details }, { comment: 'Too pricey for us', feedback: 'too_expensive', reason: 'cancellation_requested' });
  assert.deepEqual({ ...(await stripe.subscriptions.retrieve(sub.id)).cancellation_details }, { ...c.cancellation_details });
});

test('schedule phases: dates and current items that Tollgate cannot follow are refused, not ignored', async () => {
  const w = await world();
  const sub = await stripe.subscriptions.create({ customer: w.cus.id, items: [{ price: cat.seat.id, quantity: 2 }, { price: cat.p1.id }] });
  const sched = await stripe.subscriptionSchedules.create({ from_subscription: sub.id });
  const cur = [{ price: cat.seat.id, quantity: 2 }, { price: cat.p1.id }];
  const next = [{ price: cat.seat.id, quantity: 1 }, { price: cat.p1b.id }];
  const refused = [
    [[{ items: cur, end_date: T + 40 * DAY }, { items: next, start_date: T + 40 * DAY }], 'phases[0][end_date]'],
    [[{ items: cur }, { items: next, start_date: T + 40 * DAY }], 'phases[1][start_date]'],
    [[{ items: cur, start_date: T + DAY }, { items: next }], 'phases[0][start_date]'],
    [[{ items: cur }, { items: next, end_date: APR }], 'phases[1][end_date]'],
    [[{ items: [{ price: cat.seat.id, quantity: 1 }, { price: cat.p1.id }] }, { items: next }], 'phases[0][items]'],
    [[{ items: [{ price: cat.seat.id, quantity: 2 }] }, { items: next }], 'phases[0][items]'],
  ];
  for (const [phases, param] of refused)
    await expectStripeError(stripe.subscriptionSchedules.update(sched.id, { phases }), { status: 400, param });
  // A phase with no items (only a JSON body can say it): a subscription keeps at least one.
  for (const [phases, param] of [[[{ items: cur }, { items: [] }], 'phases[1][items]'],
    [[{ items: [] }, { items: next }], 'phases[0][items]'], [[{ items: cur }, { items: {} }], 'phases[1][items]']]) {
    const r = await rawRequest(srv.port, 'POST', `/v1/subscription_schedules/${sched.id}`, { auth: srv.key, json: true, body: { phases } });
    expectRawError(r, { status: 400, param });
  }
  assert.equal((await stripe.subscriptionSchedules.retrieve(sched.id)).phases.length, 1);
  const ok = await stripe.subscriptionSchedules.update(sched.id, { phases: [
    { items: cur, start_date: T, end_date: MAR, proration_behavior: 'none' },
    { items: next, start_date: MAR, iterations: 1, proration_behavior: 'create_prorations' },
  ] });
  assert.equal(ok.phases.length, 2);
  assert.equal(ok.phases[1].start_date, MAR);
});

test('cancel_at inside the period prorates the licensed items (create_prorations by default, none on request)', async () => {
  const prorations = (inv) => inv.lines.data.filter((l) => l.parent.subscription_item_details.proration).reduce((a, l) => a + l.amount, 0);
  // On create: the first invoice charges up to cancel_at only (14 of February's 28 days).
  const w = await world();
  const sub = await subscribe(w, [cat.seat28, cat.p1], { cancel_at: T + 14 * DAY });
  const first = await stripe.invoices.retrieve(sub.latest_invoice);
  assert.equal(first.total, 1400);
  assert.deepEqual({ ...first.lines.data[0].period }, { start: T, end: T + 14 * DAY });
  await w.advance(T + HOUR); await w.use(100);
  await w.advance(T + 15 * DAY);
  const invs = await w.invoices(sub.id);
  assert.equal((await stripe.subscriptions.retrieve(sub.id)).status, 'canceled');
  assert.equal(total(invs), 1400 + 100);

  // On update: a credit for the time after cancel_at; moving or clearing cancel_at reverses it.
  const w2 = await world();
  const sub2 = await subscribe(w2, [cat.seat28]);
  await w2.advance(T + 7 * DAY);
  await stripe.subscriptions.update(sub2.id, { cancel_at: T + 14 * DAY });
  assert.equal(prorations(await stripe.invoices.createPreview({ subscription: sub2.id })), -1400);
  await stripe.subscriptions.update(sub2.id, { cancel_at: T + 21 * DAY });
  assert.equal(prorations(await stripe.invoices.createPreview({ subscription: sub2.id })), -700);
  await stripe.subscriptions.update(sub2.id, { cancel_at: '' });
  assert.equal(prorations(await stripe.invoices.createPreview({ subscription: sub2.id })), 0);
  await stripe.subscriptions.update(sub2.id, { cancel_at: T + 21 * DAY });
  await w2.advance(T + 22 * DAY);
  const fin = (await w2.invoices(sub2.id)).find((i) => i.billing_reason === 'subscription_cycle');
  assert.equal(prorations(fin), -700);
  assert.equal(fin.amount_due, 0);

  // proration_behavior=none: nothing is prorated.
  const w3 = await world();
  const sub3 = await subscribe(w3, [cat.seat28], { cancel_at: T + 14 * DAY, proration_behavior: 'none' });
  assert.equal((await stripe.invoices.retrieve(sub3.latest_invoice)).total, 2800);
  const sub4 = await subscribe(w3, [cat.seat28]);
  await stripe.subscriptions.update(sub4.id, { cancel_at: T + 14 * DAY, proration_behavior: 'none' });
  assert.equal(prorations(await stripe.invoices.createPreview({ subscription: sub4.id })), 0);
});

test('deleting a test clock ends its subscriptions at the clock time', async () => {
  const w = await world();
  const sub = await subscribe(w, [cat.seat]);
  await w.advance(T + 3 * DAY);
  await stripe.testHelpers.testClocks.del(w.clock.id);
  const gone = await stripe.subscriptions.retrieve(sub.id);
  assert.equal(gone.status, 'canceled');
  assert.equal(gone.ended_at, T + 3 * DAY);
  assert.equal(gone.canceled_at, T + 3 * DAY);
});

test('a schedule phase changing the price on a meter at a boundary inside a minute: the boundary minute is billed once', async () => {
  const w = await world(T + 30);
  const sub = await subscribe(w, [cat.p1]);
  const sched = await stripe.subscriptionSchedules.create({ from_subscription: sub.id });
  await stripe.subscriptionSchedules.update(sched.id, { phases: [{ items: [{ price: cat.p1.id }] }, { items: [{ price: cat.p1b.id }] }] });
  await w.advance(MAR + 45);
  await w.use(1000, MAR + 40);                                   // the minute starts before the boundary (MAR+30)
  await w.use(10, MAR + 70);
  await w.advance(MAR + 2 * HOUR);
  await w.advance(APR + 2 * HOUR);
  const invs = await w.invoices(sub.id);
  assert.equal(billedFor(invs, cat.p1), 1000);
  assert.equal(billedFor(invs, cat.p1b), 30);
});

test('net usage: negative usage, and an event of an invoiced period cancelled afterwards, offset later usage', async () => {
  const cycle = async (w, sub) => (await w.invoices(sub.id)).filter((i) => i.billing_reason === 'subscription_cycle').map((i) => i.total).reverse();
  const w = await world();
  const sub = await subscribe(w, [cat.p1]);
  await w.advance(T + DAY); await w.use(1000);
  await w.advance(MAR + DAY); await w.use(-300);
  await w.advance(APR + DAY); await w.use(500);
  await w.advance(utc(2025, 5, 1) + 2 * HOUR);
  assert.deepEqual(await cycle(w, sub), [1000, 0, 200]);

  const w2 = await world();
  const sub2 = await subscribe(w2, [cat.p1]);
  await w2.advance(MAR - 10 * 60);
  const id = uniq('late');
  await stripe.billing.meterEvents.create({ event_name: cat.m1.event_name, identifier: id, timestamp: w2.now, payload: { stripe_customer_id: w2.cus.id, value: '300' } });
  await w2.advance(MAR + 2 * HOUR);                              // February's invoice: 300, finalized
  await stripe.billing.meterEventAdjustments.create({ event_name: cat.m1.event_name, type: 'cancel', cancel: { identifier: id } });
  await w2.advance(MAR + DAY); await w2.use(500);
  await w2.advance(APR + 2 * HOUR);
  assert.deepEqual(await cycle(w2, sub2), [300, 200]);             // the cancelled 300 is credited
});

test('a metered item moved to another meter during a trial bills none of its trial usage', async () => {
  const w = await world();
  const sub = await subscribe(w, [cat.seat28, cat.p1], { trial_period_days: 14 });
  const si = itemOf(sub, cat.p1);
  await w.advance(T + DAY);
  await stripe.subscriptions.update(sub.id, { items: [{ id: si, price: cat.p2.id }] });
  await w.use(5000, w.now, cat.m2);
  await w.advance(T + 2 * DAY);
  await stripe.subscriptions.update(sub.id, { items: [{ id: si, deleted: true }] });
  await w.advance(T + 14 * DAY + 2 * HOUR);
  const invs = await w.invoices(sub.id);
  assert.equal(billedFor(invs, cat.p2), 0);
  assert.equal(total(invs), 2800);
});

test('an update that leaves cancel_at and cancel_at_period_end as they are changes no cancel_at proration', async () => {
  const w = await world();
  const sub = await subscribe(w, [cat.seat28], { cancel_at: T + 14 * DAY, proration_behavior: 'none' });
  await w.advance(T + DAY);
  await stripe.subscriptions.update(sub.id, { cancel_at_period_end: false });
  await stripe.subscriptions.update(sub.id, { cancel_at: T + 14 * DAY });
  await w.advance(T + 15 * DAY);
  const invs = await w.invoices(sub.id);
  assert.equal((await stripe.subscriptions.retrieve(sub.id)).status, 'canceled');
  assert.deepEqual(allLines(invs).filter((l) => l.l.parent.subscription_item_details.proration).map((l) => l.amount), []);
  assert.equal(total(invs), 2800);
});

test('an item moved to another meter and back while the previous period is a draft: the draft keeps its usage', async () => {
  const w = await world();
  const sub = await subscribe(w, [cat.p1, cat.seat]);
  const si = itemOf(sub, cat.p1);
  await w.advance(T + DAY); await w.use(1000);
  await w.advance(MAR + 600);                                    // February's draft is in its grace period
  await stripe.subscriptions.update(sub.id, { items: [{ id: si, price: cat.p2.id }], proration_behavior: 'none' });
  await w.advance(MAR + 1200);
  await stripe.subscriptions.update(sub.id, { items: [{ id: si, price: cat.p1b.id }], proration_behavior: 'none' });
  await w.use(100);
  await w.advance(APR + 3 * HOUR);
  const invs = await w.invoices(sub.id);
  assert.equal(billedFor(invs, cat.p1), 1000);
  assert.equal(billedFor(invs, cat.p1b), 300);
});

test('a subscription cancelled and another created in the same minute: the minute is billed once', async () => {
  const w = await world();
  const a = await subscribe(w, [cat.p1]);
  await w.advance(T + DAY + 30);
  await w.use(700, T + DAY + 10);
  await stripe.subscriptions.cancel(a.id, { invoice_now: true });
  await w.advance(T + DAY + 40);
  const b = await subscribe(w, [cat.p1]);
  await w.advance(T + DAY + 5 * 60); await w.use(20);
  await w.advance(MAR + DAY + 2 * HOUR);                         // B's first period ends at MAR+DAY+40
  assert.equal(billedFor(await w.invoices(a.id), cat.p1), 700);
  assert.equal(billedFor(await w.invoices(b.id), cat.p1), 20);
});

test('a metered item removed, its removal invoiced or renewed, then added again in the same minute: the minute is billed once', async () => {
  const w = await world();
  const sub = await subscribe(w, [cat.p1, cat.seat]);
  await w.advance(T + DAY + 20);
  await w.use(700, T + DAY + 10);
  const si = itemOf(sub, cat.p1);
  await stripe.subscriptions.update(sub.id, { items: [{ id: si, deleted: true }], proration_behavior: 'always_invoice' });
  await w.advance(T + DAY + 40);
  await stripe.subscriptions.update(sub.id, { items: [{ price: cat.p1.id }] });
  await w.advance(MAR + 2 * HOUR);
  assert.equal(billedFor(await w.invoices(sub.id), cat.p1), 700);

  const w2 = await world(T + 30);                                // boundaries at :30
  const sub2 = await subscribe(w2, [cat.p1, cat.seat]);
  await w2.advance(MAR + 10);
  await w2.use(900, MAR + 5);
  const si2 = itemOf(sub2, cat.p1);
  await stripe.subscriptions.update(sub2.id, { items: [{ id: si2, deleted: true }] });
  await w2.advance(MAR + 40);                                    // the renewal at MAR+30 invoices the removal
  await stripe.subscriptions.update(sub2.id, { items: [{ price: cat.p1.id }] });
  await w2.advance(APR + 2 * HOUR);
  assert.equal(billedFor(await w2.invoices(sub2.id), cat.p1), 900);
});

test('a metered item added, then one on the same meter removed later in the same minute: the minute is billed once', async () => {
  const w = await world();
  const sub = await subscribe(w, [cat.p1, cat.seat]);
  await w.advance(T + DAY + 20);
  await w.use(700, T + DAY + 5);
  await stripe.subscriptions.update(sub.id, { items: [{ price: cat.p1b.id }] });
  await w.advance(T + DAY + 40);
  await stripe.subscriptions.update(sub.id, { items: [{ id: itemOf(sub, cat.p1), deleted: true }] });
  await w.advance(MAR + 2 * HOUR);
  const invs = await w.invoices(sub.id);
  assert.equal(billedFor(invs, cat.p1) / 1 + billedFor(invs, cat.p1b) / 3, 700);
});

test('a last meter at a boundary inside a minute: the last value of that minute is the earlier period\'s, and the later one\'s until another is sent', async () => {
  const meter = await createMeter(stripe, { formula: 'last' });
  const gauge = await stripe.prices.create({ product: cat.api1.id, currency: 'usd', unit_amount: 100, recurring: { interval: 'month', usage_type: 'metered', meter: meter.id } });
  const w = await world(T + 30);
  const sub = await subscribe(w, [gauge]);
  await w.advance(MAR - 100); await w.use(50, w.now, meter);
  await w.advance(MAR + 40); await w.use(10, w.now, meter);     // same minute as the boundary (MAR+30)
  await w.advance(APR + 2 * HOUR);
  const lines = allLines(await w.invoices(sub.id)).filter((l) => l.price === gauge.id).map((l) => [l.l.period.start, Number(l.q), l.amount]);
  assert.deepEqual(lines.sort((a, b) => a[0] - b[0]), [[T + 30, 10, 1000], [MAR + 30, 10, 1000]]);
});

test('a usage quantity beyond 64 bits is shown exactly in quantity_decimal and as quantity null, never wrapped', async () => {
  const meter = await createMeter(stripe);
  const tiny = await stripe.prices.create({ product: cat.api1.id, currency: 'usd', unit_amount_decimal: '0.000000000001', recurring: { interval: 'month', usage_type: 'metered', meter: meter.id } });
  const w = await world();
  const sub = await subscribe(w, [tiny]);
  await w.advance(T + HOUR);
  const session = await stripe.v2.billing.meterEventSession.create();
  const streaming = stripeClient(session.authentication_token, srv.port);
  const ts = new Date((T + HOUR) * 1000).toISOString();
  for (let b = 0; b < 100; b++) {
    const events = Array.from({ length: 100 }, () => ({ event_name: meter.event_name, identifier: uniq('big'), timestamp: ts, payload: { stripe_customer_id: w.cus.id, value: '999999999999999' } }));
    await streaming.v2.billing.meterEventStream.create({ events });
  }
  await w.advance(MAR + 2 * HOUR);
  const inv = (await w.invoices(sub.id)).find((i) => i.billing_reason === 'subscription_cycle');
  const line = inv.lines.data[0];
  assert.equal(line.quantity_decimal.toString(), '9999999999999990000');
  assert.equal(line.quantity, null, `quantity ${line.quantity}`);
  assert.equal(line.amount, 10000000);                       // 9,999,999.99999999 cents, rounded once
});

test('a trial that ends past the anchor: the period after it is a stub prorated against its natural period, and so are changes in it', async () => {
  // Price 3000 a month, T = Feb 1. The anchor (Feb 1, from day_of_month=1 after a trial to
  // Jan 17) stays when the trial is extended past it to Feb 15: Feb 15 -> Mar 1 is 14 of
  // Feb 1 -> Mar 1's 28 days.
  const w = await world(utc(2025, 1, 10));
  const sub = await stripe.subscriptions.create({
    customer: w.cus.id, items: [{ price: cat.seat.id }], trial_period_days: 7,
    billing_cycle_anchor_config: { day_of_month: 1 },
  });
  await w.advance(utc(2025, 1, 15));
  await stripe.subscriptions.update(sub.id, { trial_end: T + 14 * DAY });
  await w.advance(T + 14 * DAY + HOUR);
  const first = (await w.invoices(sub.id)).find((i) => i.billing_reason === 'subscription_cycle');
  assert.equal(first.total, 1500, 'half of Feb 1 -> Mar 1');
  // Seven days later, two seats: credit 3000 x 7/28 and charge 6000 x 7/28 for the rest.
  await w.advance(T + 21 * DAY);
  await stripe.subscriptions.update(sub.id, { items: [{ id: sub.items.data[0].id, quantity: 2 }] });
  const preview = await stripe.invoices.createPreview({ subscription: sub.id });
  const prorations = preview.lines.data.filter((l) => l.parent.subscription_item_details.proration).map((l) => l.amount);
  assert.deepEqual(prorations.sort((a, b) => a - b), [-750, 1500]);
  // An anchor before the trial's end on create: Jan 20 -> (trial to Jan 22) -> Feb 20 is 29
  // of Jan 20 -> Feb 20's 31 days: 3000 x 29/31 = 2806.45 -> 2806.
  const w2 = await world(utc(2025, 1, 10));
  const early = await stripe.subscriptions.create({
    customer: w2.cus.id, items: [{ price: cat.seat.id }], trial_end: utc(2025, 1, 22),
    billing_cycle_anchor: utc(2025, 1, 20),
  });
  await w2.advance(utc(2025, 1, 22, 1));
  const stub = (await w2.invoices(early.id)).find((i) => i.billing_reason === 'subscription_cycle');
  assert.equal(stub.total, 2806);
  // A trial lasts at most two years from its subscription's start, on update as on create.
  const w3 = await world(T);
  const trialing = await subscribe(w3, [cat.seat], { trial_period_days: 7 });
  await expectStripeError(stripe.subscriptions.update(trialing.id, { trial_end: T + 731 * DAY }),
    { status: 400, param: 'trial_end', message: /two years/ });
  assert.equal((await stripe.subscriptions.retrieve(trialing.id)).trial_end, T + 7 * DAY);
});

test('usage sent while a subscription is paused is billed by nothing: not a final invoice, not a metered item changed while paused', async () => {
  const TRIAL_END = T + 7 * DAY;
  const paused = async () => {
    const w = await world(T, {});
    const sub = await subscribe(w, [cat.p1, cat.seat], {
      trial_period_days: 7, trial_settings: { end_behavior: { missing_payment_method: 'pause' } },
    });
    await w.advance(TRIAL_END + 3 * DAY);
    assert.equal((await stripe.subscriptions.retrieve(sub.id)).status, 'paused');
    await w.use(100, TRIAL_END + 2 * DAY);
    return { w, sub };
  };
  // Canceled with invoice_now while paused: no usage line, so no final invoice at all.
  const a = await paused();
  const before = (await a.w.invoices(a.sub.id)).length;
  const canceled = await stripe.subscriptions.cancel(a.sub.id, { invoice_now: true });
  assert.equal(canceled.status, 'canceled');
  const after = await a.w.invoices(a.sub.id);
  assert.equal(billedFor(after, cat.p1), 0);
  assert.equal(after.length, before);
  // The metered item moved to another meter while paused, then resumed: the resume bills the
  // seat only.
  const b = await paused();
  await stripe.subscriptions.update(b.sub.id, { items: [{ id: itemOf(b.sub, cat.p1), price: cat.p2.id }] });
  await b.w.advance(TRIAL_END + 4 * DAY);
  await stripe.subscriptions.update(b.sub.id, { default_payment_method: 'pm_x' });
  const resumed = await stripe.subscriptions.resume(b.sub.id, { billing_cycle_anchor: 'now' });
  assert.equal(resumed.status, 'active');
  const invs = await b.w.invoices(b.sub.id);
  assert.equal(billedFor(invs, cat.p1), 0);
  assert.equal(billedFor(invs, cat.p2), 0);
  assert.equal(billedFor(invs, cat.seat), 3000);
});

test('cancel_at set on a paused subscription ends it then; a resume after that is refused', async () => {
  const w = await world(T, {});
  const sub = await subscribe(w, [cat.seat], {
    trial_period_days: 7, trial_settings: { end_behavior: { missing_payment_method: 'pause' } },
  });
  await w.advance(T + 8 * DAY);
  const u = await stripe.subscriptions.update(sub.id, { cancel_at: T + 12 * DAY });
  assert.equal(u.status, 'paused');
  await w.advance(T + 20 * DAY);
  const s = await stripe.subscriptions.retrieve(sub.id);
  assert.equal(s.status, 'canceled');
  assert.equal(s.ended_at, T + 12 * DAY);
  await expectStripeError(stripe.subscriptions.resume(sub.id, { billing_cycle_anchor: 'now' }),
    { status: 400, code: 'resource_state_invalid' });
  assert.equal(total(await w.invoices(sub.id)), 0, 'nothing charged: the trial, then the pause');
});

test('a trial or a pause that ends inside a minute keeps that minute: usage sent in it is not billed', async () => {
  // Created at 09:15:42: the trial ends at 09:15:42 fourteen days later, inside minute 09:15.
  const t0 = T + 9 * HOUR + 15 * 60 + 42;
  const trialEnd = t0 + 14 * DAY;
  const w = await world(t0);
  const sub = await subscribe(w, [cat.p1], { trial_period_days: 14 });
  assert.equal(sub.trial_end, trialEnd);
  await w.advance(trialEnd - 40);
  await w.use(500, trialEnd - 40); // 09:15:02, in the trial's last minute
  await w.advance(trialEnd + HOUR);
  await w.use(10);
  const preview = await stripe.invoices.createPreview({ subscription: sub.id });
  assert.equal(billedFor([preview], cat.p1), 10);
  await w.advance(trialEnd + 29 * DAY); // past the first paid period and its grace
  assert.equal(billedFor(await w.invoices(sub.id), cat.p1), 10);

  // Paused at its trial's end (no payment method), resumed at :30; usage at :05 is the pause's.
  const w2 = await world(T, {});
  const paused = await subscribe(w2, [cat.p1], {
    trial_period_days: 7, trial_settings: { end_behavior: { missing_payment_method: 'pause' } },
  });
  const resumeAt = T + 10 * DAY + 30;
  await w2.advance(resumeAt);
  await w2.use(1000, resumeAt - 25);
  await stripe.subscriptions.update(paused.id, { default_payment_method: 'pm_x' });
  await stripe.subscriptions.resume(paused.id, { billing_cycle_anchor: 'now' });
  await w2.use(1, resumeAt + 60);
  await w2.advance(resumeAt + 32 * DAY);
  assert.equal(billedFor(await w2.invoices(paused.id), cat.p1), 1);
});
