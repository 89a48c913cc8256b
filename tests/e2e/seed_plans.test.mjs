// The required billing scenarios, every total checked to the cent against amounts
// computed by hand below: Stripe's tier example (volume and graduated) as licensed quantities,
// transform_quantity on metered usage, the three seed plans (Starter, Pro, Scale) run over
// three months on a test clock with a plan change effective next period through a
// subscription schedule, and token billing at a fifth of a cent a token.

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, expectStripeError, createMeter, uniq, HOUR, DAY } from './helpers.mjs';

let srv;
let stripe;
before(async () => {
  srv = await startServer();
  stripe = srv.stripe;
});
after(async () => { await srv?.close(); });

const utc = (y, m, d, h = 0, mi = 0, s = 0) => Date.UTC(y, m - 1, d, h, mi, s) / 1000;
const dec = (v) => (v === null || v === undefined ? v : String(v));
const linePrice = (l) => l.pricing.price_details.price;
const isProration = (l) => l.parent.subscription_item_details.proration;

async function newClock(t0) {
  const clock = await stripe.testHelpers.testClocks.create({ frozen_time: t0, name: uniq('seed') });
  const k = {
    clock, now: t0,
    async advance(t) {
      const r = await stripe.testHelpers.testClocks.advance(clock.id, { frozen_time: t });
      assert.equal(r.frozen_time, t);
      k.now = t;
    },
    customer: (name) => stripe.customers.create({
      name, test_clock: clock.id,
      // A payment method on file: invoices are collected outside Tollgate, the subscription stays active.
      invoice_settings: { default_payment_method: 'pm_card_visa' },
    }),
  };
  return k;
}

function report(meter, customer, value, timestamp) {
  return stripe.billing.meterEvents.create({
    event_name: meter.event_name,
    payload: { stripe_customer_id: customer.id, value: String(value) },
    timestamp,
  });
}

/** The subscription's invoices, newest first. */
async function invoicesOf(sub) {
  return (await stripe.invoices.list({ subscription: sub.id, limit: 100 })).data;
}

/** {priceId: amount} of an invoice's lines (each price at most once). */
function amountsByPrice(inv) {
  const out = {};
  for (const l of inv.lines.data) {
    const p = linePrice(l);
    assert.ok(!(p in out), `price ${p} twice on ${inv.id}`);
    out[p] = l.amount;
  }
  return out;
}

function assertTotals(inv, expectedTotal) {
  const sum = inv.lines.data.reduce((a, l) => a + l.amount, 0);
  assert.equal(inv.lines.data.length, inv.lines.total_count, 'test invoices have at most 10 lines');
  assert.equal(sum, expectedTotal, `sum of lines of ${inv.id}`);
  assert.equal(inv.subtotal, expectedTotal);
  assert.equal(inv.total, expectedTotal);
  assert.equal(inv.amount_due, expectedTotal);
}

// ---------------------------------------------------------------------------------------------
// Stripe's tier example (docs.stripe.com/products-prices/pricing-models#tiered-pricing):
//   units 1-5  $5 each + $10 flat;  6-10 $4 + $20;  11-15 $3 + $30;  16-20 $2 + $40;  21+ $1 + $50.

const STRIPE_TIERS = [
  { up_to: 5, unit_amount: 500, flat_amount: 1000 },
  { up_to: 10, unit_amount: 400, flat_amount: 2000 },
  { up_to: 15, unit_amount: 300, flat_amount: 3000 },
  { up_to: 20, unit_amount: 200, flat_amount: 4000 },
  { up_to: 'inf', unit_amount: 100, flat_amount: 5000 },
];

// By hand, in cents.
//   volume: every unit at the rate of the tier the total falls in, plus that tier's flat fee.
//   graduated: each tier's units at its rate, plus the flat fee of every tier reached.
const TIER_CASES = [
  // q = 0: volume 0 x $5 + $10; graduated: no units, the first tier's flat fee only.
  { q: 0, volume: 1000, graduated: 1000 },
  // q = 5: volume 5 x $5 + $10 = $35; graduated the same (one tier).
  { q: 5, volume: 3500, graduated: 3500 },
  // q = 6: volume 6 x $4 + $20 = $44; graduated $35 + (1 x $4 + $20) = $59.
  { q: 6, volume: 4400, graduated: 5900 },
  // q = 12: volume 12 x $3 + $30 = $66; graduated $35 + $40 + (2 x $3 + $30) = $111.
  { q: 12, volume: 6600, graduated: 11100 },
  // q = 21: volume 21 x $1 + $50 = $71; graduated $35 + $40 + $45 + $50 + (1 x $1 + $50) = $221.
  { q: 21, volume: 7100, graduated: 22100 },
];

describe("Stripe's tier example as licensed quantities", () => {
  let volume;
  let graduated;
  let k;
  const subs = {};
  const T = utc(2026, 1, 1);
  before(async () => {
    const prod = await stripe.products.create({ name: 'Seats (tiered)' });
    const base = { product: prod.id, currency: 'usd', billing_scheme: 'tiered', tiers: STRIPE_TIERS, recurring: { interval: 'month' } };
    volume = await stripe.prices.create({ ...base, tiers_mode: 'volume' });
    graduated = await stripe.prices.create({ ...base, tiers_mode: 'graduated' });
    k = await newClock(T);
    for (const c of TIER_CASES) {
      const cus = await k.customer(`q${c.q}`);
      subs[c.q] = await stripe.subscriptions.create({
        customer: cus.id,
        items: [{ price: volume.id, quantity: c.q }, { price: graduated.id, quantity: c.q }],
      });
    }
  });

  test('quantity 12: 66.00 volume, 111.00 graduated', async () => {
    const inv = await stripe.invoices.retrieve(subs[12].latest_invoice);
    const lines = inv.lines.data;
    assert.equal(lines.length, 2);
    const v = lines.find((l) => linePrice(l) === volume.id);
    const g = lines.find((l) => linePrice(l) === graduated.id);
    assert.equal(v.amount, 6600);
    assert.equal(g.amount, 11100);
    assert.equal(v.quantity, 12);
    assert.equal(g.quantity, 12);
    assertTotals(inv, 17700);
  });

  test('quantity 0: the first flat fee, 10.00, for both modes', async () => {
    const inv = await stripe.invoices.retrieve(subs[0].latest_invoice);
    assert.deepEqual(amountsByPrice(inv), { [volume.id]: 1000, [graduated.id]: 1000 });
    assertTotals(inv, 2000);
  });

  test('quantities 5, 6 and 21: tier edges', async () => {
    for (const c of TIER_CASES) {
      const inv = await stripe.invoices.retrieve(subs[c.q].latest_invoice);
      assert.deepEqual(amountsByPrice(inv), { [volume.id]: c.volume, [graduated.id]: c.graduated }, `q=${c.q}`);
      assertTotals(inv, c.volume + c.graduated);
    }
  });

  test('the renewal bills the same amounts for the next period', async () => {
    await k.advance(utc(2026, 2, 1) + 2 * HOUR);
    for (const c of TIER_CASES) {
      const [inv] = await invoicesOf(subs[c.q]);
      assert.equal(inv.billing_reason, 'subscription_cycle', `q=${c.q}`);
      assert.equal(inv.status, 'open');
      assert.deepEqual(amountsByPrice(inv), { [volume.id]: c.volume, [graduated.id]: c.graduated }, `q=${c.q}`);
      for (const l of inv.lines.data) assert.deepEqual({ ...l.period }, { start: utc(2026, 2, 1), end: utc(2026, 3, 1) });
      assertTotals(inv, c.volume + c.graduated);
    }
  });
});

// ---------------------------------------------------------------------------------------------

describe('decimal tier amounts and fractional usage', () => {
  test('tiers with decimal unit and flat amounts are priced exactly and rounded once', async () => {
    const T = utc(2026, 1, 1);
    const END = utc(2026, 2, 1);
    const m1 = await createMeter(stripe);
    const m2 = await createMeter(stripe);
    const prod = await stripe.products.create({ name: 'Decimal tiers' });
    const tiers = [
      { up_to: 1000, unit_amount_decimal: '0.25' },
      { up_to: 'inf', unit_amount_decimal: '0.125', flat_amount_decimal: '99.5' },
    ];
    const mk = (meter, mode) => stripe.prices.create({
      product: prod.id, currency: 'usd', billing_scheme: 'tiered', tiers_mode: mode, tiers,
      recurring: { interval: 'month', usage_type: 'metered', meter: meter.id },
    });
    const vol = await mk(m1, 'volume');
    const grad = await mk(m2, 'graduated');
    const k = await newClock(T);
    const cus = await k.customer('decimal tiers');
    const sub = await stripe.subscriptions.create({ customer: cus.id, items: [{ price: vol.id }, { price: grad.id }] });
    await k.advance(T + 10 * DAY);
    await report(m1, cus, 1001, T + 5 * DAY);
    await report(m2, cus, 1001, T + 5 * DAY);
    await k.advance(END + 2 * HOUR);
    const [inv] = await invoicesOf(sub);
    // volume: 1,001 x 0.125 + 99.5 = 224.625 cents -> 225
    // graduated: 1,000 x 0.25 + 1 x 0.125 + 99.5 = 349.625 cents -> 350
    assert.deepEqual(amountsByPrice(inv), { [vol.id]: 225, [grad.id]: 350 });
    assertTotals(inv, 575);
  });

  test('fractional usage: 4.583333 GPU-hours at $2.50 = 11.4583325 dollars -> 1,146 cents', async () => {
    const T = utc(2026, 1, 1);
    const END = utc(2026, 2, 1);
    const gpu = await createMeter(stripe);
    const prod = await stripe.products.create({ name: 'GPU hours' });
    const price = await stripe.prices.create({
      product: prod.id, currency: 'usd', unit_amount: 250,
      recurring: { interval: 'month', usage_type: 'metered', meter: gpu.id },
    });
    const k = await newClock(T);
    const cus = await k.customer('gpu');
    const sub = await stripe.subscriptions.create({ customer: cus.id, items: [{ price: price.id }] });
    await k.advance(T + 10 * DAY);
    // 0.75 + 1.333333 + 2.5 = 4.583333 hours
    await report(gpu, cus, '0.75', T + DAY);
    await report(gpu, cus, '1.333333', T + 2 * DAY);
    await report(gpu, cus, '2.5', T + 3 * DAY);
    await k.advance(END + 2 * HOUR);
    const [inv] = await invoicesOf(sub);
    const l = inv.lines.data[0];
    assert.equal(dec(l.quantity_decimal), '4.583333');
    assert.equal(l.quantity, 4);
    // 4.583333 x 250 = 1,145.83325 cents -> 1,146
    assert.equal(l.amount, 1146);
    assertTotals(inv, 1146);
  });
});

describe('transform_quantity on metered usage', () => {
  test('150 minutes at $1.00 per started hour (divide_by 60, round up) is 3.00; round down 2.00', async () => {
    const T = utc(2026, 1, 1);
    const END = utc(2026, 2, 1);
    const upMeter = await createMeter(stripe);
    const downMeter = await createMeter(stripe);
    const prod = await stripe.products.create({ name: 'Call hours' });
    const mk = (meter, round) => stripe.prices.create({
      product: prod.id, currency: 'usd', unit_amount: 100,
      transform_quantity: { divide_by: 60, round },
      recurring: { interval: 'month', usage_type: 'metered', meter: meter.id },
    });
    const up = await mk(upMeter, 'up');
    const down = await mk(downMeter, 'down');
    const k = await newClock(T);
    const cus = await k.customer('hours');
    const sub = await stripe.subscriptions.create({ customer: cus.id, items: [{ price: up.id }, { price: down.id }] });
    await k.advance(T + 20 * DAY);
    // 50 + 70 + 30 = 150 minutes on each meter.
    for (const [v, at] of [[50, T + 2 * DAY], [70, T + 9 * DAY], [30, T + 19 * DAY]]) {
      await report(upMeter, cus, v, at);
      await report(downMeter, cus, v, at);
    }
    const preview = await stripe.invoices.createPreview({ subscription: sub.id });
    assert.deepEqual(amountsByPrice(preview), { [up.id]: 300, [down.id]: 200 });
    await k.advance(END + 2 * HOUR);
    const [inv] = await invoicesOf(sub);
    assert.equal(inv.status, 'open');
    // ceil(150 / 60) = 3 hours -> 3.00 ; floor(150 / 60) = 2 hours -> 2.00
    assert.deepEqual(amountsByPrice(inv), { [up.id]: 300, [down.id]: 200 });
    assertTotals(inv, 500);
  });

  test('on a licensed quantity: 25 seats sold in packs of 10 at $10.00 a pack (round up) is 30.00', async () => {
    const prod = await stripe.products.create({ name: 'Seat packs' });
    const packs = await stripe.prices.create({
      product: prod.id, currency: 'usd', unit_amount: 1000,
      transform_quantity: { divide_by: 10, round: 'up' }, recurring: { interval: 'month' },
    });
    const k = await newClock(utc(2026, 1, 1));
    const cus = await k.customer('packs');
    const sub = await stripe.subscriptions.create({ customer: cus.id, items: [{ price: packs.id, quantity: 25 }] });
    const inv = await stripe.invoices.retrieve(sub.latest_invoice);
    // ceil(25 / 10) = 3 packs -> 30.00
    assert.deepEqual(amountsByPrice(inv), { [packs.id]: 3000 });
    assertTotals(inv, 3000);
  });
});

// ---------------------------------------------------------------------------------------------
// The seed plans. Each is a licensed base price plus a metered graduated price on the same
// "minutes" meter: the included minutes at zero, then the overage rate.
//   Starter $149.00/month, 500 minutes included, then $0.25/minute
//   Pro     $499.00/month, 2,500 included, then $0.20
//   Scale $1,499.00/month, 10,000 included, then $0.15

describe('seed plans over three months with a plan change effective next period', () => {
  const T = utc(2026, 3, 1);
  const APR = utc(2026, 4, 1);
  const MAY = utc(2026, 5, 1);
  const JUN = utc(2026, 6, 1);
  let minutes;
  const plan = {};
  let k;
  const cus = {};
  const sub = {};

  async function makePlan(name, base, included, rate) {
    const prod = await stripe.products.create({ name });
    return {
      base: await stripe.prices.create({ product: prod.id, currency: 'usd', unit_amount: base, recurring: { interval: 'month' }, nickname: `${name} base` }),
      usage: await stripe.prices.create({
        product: prod.id, currency: 'usd', billing_scheme: 'tiered', tiers_mode: 'graduated',
        tiers: [{ up_to: included, unit_amount: 0 }, { up_to: 'inf', unit_amount: rate }],
        recurring: { interval: 'month', usage_type: 'metered', meter: minutes.id },
        nickname: `${name} minutes`,
      }),
    };
  }
  const items = (p) => [{ price: p.base.id, quantity: 1 }, { price: p.usage.id }];

  /** Reports `total` minutes for a customer as three events inside the month that starts at m. */
  async function monthUsage(who, m, total) {
    const a = Math.floor(total / 2);
    const b = Math.floor(total / 3);
    await report(minutes, cus[who], a, m + DAY + 10 * HOUR);
    await report(minutes, cus[who], b, m + 6 * DAY + 13 * HOUR + 17 * 60);
    await report(minutes, cus[who], total - a - b, m + 13 * DAY + 23 * HOUR);
  }

  /** Checks a renewal invoice: a base line for [P, next) and a usage line for [prev, P). */
  function checkRenewal(inv, { base, baseAmount, usage, usageQty, usageAmount, prev, P, next }) {
    assert.equal(inv.billing_reason, 'subscription_cycle');
    assert.equal(inv.status, 'open');
    assert.equal(inv.period_start, prev);
    assert.equal(inv.period_end, P);
    assert.equal(inv.created, P);
    assert.equal(inv.status_transitions.finalized_at, P + HOUR);
    assert.equal(inv.lines.data.length, 2, JSON.stringify(inv.lines.data.map((l) => [linePrice(l), l.amount])));
    assert.ok(!inv.lines.data.some(isProration), 'a change effective next period must not prorate');
    const b = inv.lines.data.find((l) => linePrice(l) === base.id);
    const u = inv.lines.data.find((l) => linePrice(l) === usage.id);
    assert.ok(b, `no line for base price ${base.nickname}`);
    assert.ok(u, `no line for usage price ${usage.nickname}`);
    assert.equal(b.amount, baseAmount);
    assert.equal(b.quantity, 1);
    assert.deepEqual({ ...b.period }, { start: P, end: next });
    assert.equal(u.quantity, usageQty);
    assert.equal(dec(u.quantity_decimal), String(usageQty));
    assert.equal(u.amount, usageAmount);
    assert.deepEqual({ ...u.period }, { start: prev, end: P });
    assertTotals(inv, baseAmount + usageAmount);
  }

  before(async () => {
    minutes = await createMeter(stripe, { display_name: 'Minutes' });
    plan.starter = await makePlan('Starter', 14900, 500, 25);
    plan.pro = await makePlan('Pro', 49900, 2500, 20);
    plan.scale = await makePlan('Scale', 149900, 10000, 15);
    k = await newClock(T);
    // A: Starter, moves to Pro from May. B: Pro, moves to Scale from April. C: Scale throughout.
    for (const [who, p] of [['A', plan.starter], ['B', plan.pro], ['C', plan.scale]]) {
      cus[who] = await k.customer(`Customer ${who}`);
      sub[who] = await stripe.subscriptions.create({ customer: cus[who].id, items: items(p) });
    }
  });

  test('March 1: the first invoices bill the base prices', async () => {
    const expected = { A: [plan.starter, 14900], B: [plan.pro, 49900], C: [plan.scale, 149900] };
    for (const [who, [p, amount]] of Object.entries(expected)) {
      const inv = await stripe.invoices.retrieve(sub[who].latest_invoice);
      assert.equal(inv.billing_reason, 'subscription_create');
      assert.deepEqual(amountsByPrice(inv), { [p.base.id]: amount }, who);
      assertTotals(inv, amount);
      assert.equal(sub[who].items.data[0].current_period_end, APR);
    }
  });

  test('March usage; B schedules Scale from April without touching March', async () => {
    await k.advance(utc(2026, 3, 15));
    await monthUsage('A', T, 620);
    await monthUsage('B', T, 2400);
    await monthUsage('C', T, 12345);
    await k.advance(utc(2026, 3, 20, 9, 30));

    const before = await stripe.subscriptions.retrieve(sub.B.id);
    const sched = await stripe.subscriptionSchedules.create({ from_subscription: sub.B.id });
    assert.equal(sched.object, 'subscription_schedule');
    assert.equal(sched.subscription, sub.B.id);
    assert.equal(sched.phases.length, 1);
    assert.equal(sched.phases[0].start_date, T);
    assert.equal(sched.phases[0].end_date, APR);
    const upd = await stripe.subscriptionSchedules.update(sched.id, {
      phases: [
        { items: items(plan.pro), start_date: before.items.data[0].current_period_start, end_date: before.items.data[0].current_period_end },
        { items: items(plan.scale) },
      ],
    });
    assert.equal(upd.id, sched.id);
    assert.equal(upd.phases.length, 2);
    assert.equal(upd.phases[1].start_date, APR);
    assert.deepEqual(upd.phases[1].items.map((i) => i.price), [plan.scale.base.id, plan.scale.usage.id]);
    const got = await stripe.subscriptionSchedules.retrieve(sched.id);
    assert.equal(got.phases.length, 2);

    // The current period is untouched: same items, same period, no invoice, no proration.
    const after = await stripe.subscriptions.retrieve(sub.B.id);
    assert.equal(after.schedule, sched.id);
    assert.deepEqual(after.items.data.map((i) => i.price.id), [plan.pro.base.id, plan.pro.usage.id]);
    assert.deepEqual(after.items.data.map((i) => i.id), before.items.data.map((i) => i.id));
    assert.equal(after.items.data[0].current_period_start, T);
    assert.equal(after.items.data[0].current_period_end, APR);
    assert.equal(after.status, 'active');
    assert.equal((await invoicesOf(sub.B)).length, 1);
    // The upcoming invoice: March usage on Pro (2,400 <= 2,500 included: 0.00), April on Scale.
    const preview = await stripe.invoices.createPreview({ subscription: sub.B.id });
    assert.deepEqual(amountsByPrice(preview), { [plan.pro.usage.id]: 0, [plan.scale.base.id]: 149900 });
    assert.ok(!preview.lines.data.some(isProration));
    assertTotals(preview, 149900);
  });

  test('April 1 invoices: March usage at March prices, April base at the new plan for B', async () => {
    await k.advance(APR + 2 * HOUR);
    // A: 14,900 + (620 - 500) x 25 = 14,900 + 3,000 = 17,900
    checkRenewal((await invoicesOf(sub.A))[0], {
      base: plan.starter.base, baseAmount: 14900, usage: plan.starter.usage, usageQty: 620, usageAmount: 3000,
      prev: T, P: APR, next: MAY,
    });
    // B: Scale 149,900 + March on Pro: 2,400 minutes, all included: 0
    checkRenewal((await invoicesOf(sub.B))[0], {
      base: plan.scale.base, baseAmount: 149900, usage: plan.pro.usage, usageQty: 2400, usageAmount: 0,
      prev: T, P: APR, next: MAY,
    });
    // C: 149,900 + (12,345 - 10,000) x 15 = 149,900 + 35,175 = 185,075
    checkRenewal((await invoicesOf(sub.C))[0], {
      base: plan.scale.base, baseAmount: 149900, usage: plan.scale.usage, usageQty: 12345, usageAmount: 35175,
      prev: T, P: APR, next: MAY,
    });
    const b = await stripe.subscriptions.retrieve(sub.B.id);
    assert.deepEqual(b.items.data.map((i) => i.price.id), [plan.scale.base.id, plan.scale.usage.id]);
    assert.equal(b.items.data[0].current_period_start, APR);
    assert.equal(b.items.data[0].current_period_end, MAY);
  });

  test('April usage; A schedules Pro from May', async () => {
    await k.advance(utc(2026, 4, 15));
    await monthUsage('A', APR, 2400);
    await monthUsage('B', APR, 9000);
    await monthUsage('C', APR, 9000);
    await k.advance(utc(2026, 4, 18, 16, 45));
    const before = await stripe.subscriptions.retrieve(sub.A.id);
    const sched = await stripe.subscriptionSchedules.create({ from_subscription: sub.A.id });
    await stripe.subscriptionSchedules.update(sched.id, {
      phases: [
        { items: items(plan.starter), start_date: APR, end_date: MAY },
        { items: items(plan.pro) },
      ],
    });
    const after = await stripe.subscriptions.retrieve(sub.A.id);
    assert.deepEqual(after.items.data.map((i) => i.price.id), [plan.starter.base.id, plan.starter.usage.id]);
    assert.deepEqual(after.items.data.map((i) => i.id), before.items.data.map((i) => i.id));
    assert.equal(after.items.data[0].current_period_start, APR);
    assert.equal(after.items.data[0].current_period_end, MAY);
    assert.equal((await invoicesOf(sub.A)).length, 2);
  });

  test('May 1 invoices: A pays April on Starter and May on Pro', async () => {
    await k.advance(MAY + 2 * HOUR);
    // A: Pro 49,900 + April on Starter: (2,400 - 500) x 25 = 47,500 -> 97,400
    checkRenewal((await invoicesOf(sub.A))[0], {
      base: plan.pro.base, baseAmount: 49900, usage: plan.starter.usage, usageQty: 2400, usageAmount: 47500,
      prev: APR, P: MAY, next: JUN,
    });
    // B: 149,900 + April on Scale: 9,000 minutes, all included (March's 2,400 are not counted again)
    checkRenewal((await invoicesOf(sub.B))[0], {
      base: plan.scale.base, baseAmount: 149900, usage: plan.scale.usage, usageQty: 9000, usageAmount: 0,
      prev: APR, P: MAY, next: JUN,
    });
    // C: 149,900 + 9,000 minutes, all included
    checkRenewal((await invoicesOf(sub.C))[0], {
      base: plan.scale.base, baseAmount: 149900, usage: plan.scale.usage, usageQty: 9000, usageAmount: 0,
      prev: APR, P: MAY, next: JUN,
    });
  });

  test('May usage; June 1 invoices', async () => {
    await k.advance(utc(2026, 5, 15));
    await monthUsage('A', MAY, 3000);
    await monthUsage('B', MAY, 10050);
    await monthUsage('C', MAY, 10001);
    await k.advance(JUN + 2 * HOUR);
    // A: 49,900 + (3,000 - 2,500) x 20 = 49,900 + 10,000 = 59,900 (April's minutes are not counted again)
    checkRenewal((await invoicesOf(sub.A))[0], {
      base: plan.pro.base, baseAmount: 49900, usage: plan.pro.usage, usageQty: 3000, usageAmount: 10000,
      prev: MAY, P: JUN, next: utc(2026, 7, 1),
    });
    // B: 149,900 + (10,050 - 10,000) x 15 = 149,900 + 750 = 150,650
    checkRenewal((await invoicesOf(sub.B))[0], {
      base: plan.scale.base, baseAmount: 149900, usage: plan.scale.usage, usageQty: 10050, usageAmount: 750,
      prev: MAY, P: JUN, next: utc(2026, 7, 1),
    });
    // C: 149,900 + (10,001 - 10,000) x 15 = 149,915
    checkRenewal((await invoicesOf(sub.C))[0], {
      base: plan.scale.base, baseAmount: 149900, usage: plan.scale.usage, usageQty: 10001, usageAmount: 15,
      prev: MAY, P: JUN, next: utc(2026, 7, 1),
    });
  });

  test('the whole history, per customer', async () => {
    const totals = async (who) => (await invoicesOf(sub[who])).map((i) => i.total).reverse();
    assert.deepEqual(await totals('A'), [14900, 17900, 97400, 59900]);
    assert.deepEqual(await totals('B'), [49900, 149900, 149900, 150650]);
    assert.deepEqual(await totals('C'), [149900, 185075, 149900, 149915]);
  });
});

describe('subscription schedules', () => {
  test('a schedule made from a subscription is attached to it', async () => {
    const k = await newClock(utc(2026, 1, 1));
    const prod = await stripe.products.create({ name: 'Sched' });
    const price = await stripe.prices.create({ product: prod.id, currency: 'usd', unit_amount: 1000, recurring: { interval: 'month' } });
    const c = await k.customer('sched');
    const s = await stripe.subscriptions.create({ customer: c.id, items: [{ price: price.id }] });
    assert.equal(s.schedule, null);
    const sched = await stripe.subscriptionSchedules.create({ from_subscription: s.id });
    assert.equal(sched.status, 'active');
    assert.equal((await stripe.subscriptions.retrieve(s.id)).schedule, sched.id);
  });

  test('phase prices must fit the subscription', async () => {
    const k = await newClock(utc(2026, 1, 1));
    const prod = await stripe.products.create({ name: 'Sched2' });
    const usd = await stripe.prices.create({ product: prod.id, currency: 'usd', unit_amount: 1000, recurring: { interval: 'month' } });
    const eur = await stripe.prices.create({ product: prod.id, currency: 'eur', unit_amount: 1000, recurring: { interval: 'month' } });
    const c = await k.customer('sched2');
    const s = await stripe.subscriptions.create({ customer: c.id, items: [{ price: usd.id }] });
    const sched = await stripe.subscriptionSchedules.create({ from_subscription: s.id });
    await expectStripeError(stripe.subscriptionSchedules.update(sched.id, {
      phases: [
        { items: [{ price: usd.id }], start_date: utc(2026, 1, 1), end_date: utc(2026, 2, 1) },
        { items: [{ price: eur.id }] },
      ],
    }), { status: 400, param: 'phases[1][items][0][price]' });
    await expectStripeError(stripe.subscriptionSchedules.create({ from_subscription: 'sub_doesnotexist' }), {
      code: 'resource_missing',
    });
  });
});

// ---------------------------------------------------------------------------------------------

describe('token billing at a fifth of a cent', () => {
  test('3,456,789 tokens at 0.2 cents = 6,913.578 dollars -> 691,358 cents; 3,456,786 -> 691,357', async () => {
    const T = utc(2026, 2, 1);
    const END = utc(2026, 3, 1);
    const tokens = await createMeter(stripe, { display_name: 'Tokens' });
    const prod = await stripe.products.create({ name: 'LLM tokens' });
    const price = await stripe.prices.create({
      product: prod.id, currency: 'usd', unit_amount_decimal: '0.2',
      recurring: { interval: 'month', usage_type: 'metered', meter: tokens.id },
    });
    assert.equal(price.unit_amount, null);
    assert.equal(dec(price.unit_amount_decimal), '0.2');
    const k = await newClock(T);
    const up = await k.customer('tokens up');
    const down = await k.customer('tokens down');
    const subUp = await stripe.subscriptions.create({ customer: up.id, items: [{ price: price.id }] });
    const subDown = await stripe.subscriptions.create({ customer: down.id, items: [{ price: price.id }] });
    await k.advance(T + 20 * DAY);
    // 1,000,000 + 2,000,000 + 456,789 = 3,456,789 tokens x 0.2 = 691,357.8 cents -> 691,358
    await report(tokens, up, 1000000, T + 3 * DAY);
    await report(tokens, up, 2000000, T + 11 * DAY + 5 * HOUR);
    await report(tokens, up, 456789, T + 19 * DAY + 22 * HOUR);
    // 1,234,567 + 2,222,219 = 3,456,786 tokens x 0.2 = 691,357.2 cents -> 691,357
    await report(tokens, down, 1234567, T + 4 * DAY);
    await report(tokens, down, 2222219, T + 15 * DAY);

    const preview = await stripe.invoices.createPreview({ subscription: subUp.id });
    assert.deepEqual(amountsByPrice(preview), { [price.id]: 691358 });

    await k.advance(END + 2 * HOUR);
    const [inv] = await invoicesOf(subUp);
    assert.equal(inv.status, 'open');
    assert.equal(inv.lines.data.length, 1);
    const l = inv.lines.data[0];
    assert.equal(linePrice(l), price.id);
    assert.equal(l.quantity, 3456789);
    assert.equal(dec(l.quantity_decimal), '3456789');
    assert.equal(dec(l.pricing.unit_amount_decimal), '0.2');
    assert.equal(l.amount, 691358);
    assert.deepEqual({ ...l.period }, { start: T, end: END });
    assertTotals(inv, 691358);

    const [invDown] = await invoicesOf(subDown);
    assert.equal(invDown.lines.data[0].quantity, 3456786);
    assertTotals(invDown, 691357);
  });
});
