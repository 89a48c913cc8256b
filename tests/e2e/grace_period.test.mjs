// Metered usage around a renewal's grace period and item removals: every unit of usage is
// billed exactly once, at the price of the period it belongs to.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, createMeter, uniq, HOUR, DAY } from './helpers.mjs';

let srv, stripe;
const utc = (y, m, d, h = 0, mi = 0, s = 0) => Date.UTC(y, m - 1, d, h, mi, s) / 1000;
const T = utc(2026, 1, 1), FEB = utc(2026, 2, 1);
const cat = {};
before(async () => {
  srv = await startServer();
  stripe = srv.stripe;
  cat.meter = await createMeter(stripe);
  cat.seatProduct = await stripe.products.create({ name: 'Seat' });
  cat.callsProduct = await stripe.products.create({ name: 'Calls' });
  cat.seat = await stripe.prices.create({ product: cat.seatProduct.id, currency: 'usd', unit_amount: 1000, recurring: { interval: 'month' } });
  cat.calls = await stripe.prices.create({ product: cat.callsProduct.id, currency: 'usd', unit_amount: 3, recurring: { interval: 'month', usage_type: 'metered', meter: cat.meter.id } });
  cat.calls6 = await stripe.prices.create({ product: cat.callsProduct.id, currency: 'usd', unit_amount: 6, recurring: { interval: 'month', usage_type: 'metered', meter: cat.meter.id } });
});
after(async () => { await srv?.close(); });

async function world() {
  const clock = await stripe.testHelpers.testClocks.create({ frozen_time: T, name: uniq('w') });
  const cus = await stripe.customers.create({ name: 'X', test_clock: clock.id, invoice_settings: { default_payment_method: 'pm_x' } });
  const w = { clock, cus, now: T,
    async advance(t) { await stripe.testHelpers.testClocks.advance(clock.id, { frozen_time: t }); w.now = t; },
    use: (v, ts = w.now) => stripe.billing.meterEvents.create({ event_name: cat.meter.event_name, payload: { stripe_customer_id: cus.id, value: String(v) }, timestamp: ts }),
    invoices: async (sub) => (await stripe.invoices.list({ subscription: sub, limit: 100 })).data,
  };
  return w;
}
const meteredLines = (invs) => invs.flatMap((i) => i.lines.data.filter((l) => l.pricing.price_details.price !== cat.seat.id && !l.parent.subscription_item_details.proration).map((l) => ({ inv: i.id, reason: i.billing_reason, status: i.status, price: l.pricing.price_details.price, q: l.quantity_decimal ?? l.quantity, amount: l.amount })));

test('an invoice made during the grace period, then a final invoice: usage of the ended period is billed once', async () => {
  const w = await world();
  const sub = await stripe.subscriptions.create({ customer: w.cus.id, items: [{ price: cat.seat.id }, { price: cat.calls.id }] });
  await w.advance(T + HOUR); await w.use(100);
  await w.advance(FEB + 10 * 60);              // renewal: draft D1 with 100 calls, in grace
  const seatItem = sub.items.data.find((i) => i.price.id === cat.seat.id);
  await stripe.subscriptions.update(sub.id, { items: [{ id: seatItem.id, quantity: 2 }], proration_behavior: 'always_invoice' });
  await stripe.subscriptions.cancel(sub.id, { invoice_now: true });
  await w.advance(FEB + 2 * HOUR);             // D1 finalizes
  const lines = meteredLines(await w.invoices(sub.id));
  const billed = lines.reduce((a, l) => a + l.amount, 0);
  assert.equal(billed, 300, 'January 100 calls x 3c should be billed once');
});

test('a metered price changed during the grace period does not reprice the period that ended', async () => {
  const w = await world();
  const sub = await stripe.subscriptions.create({ customer: w.cus.id, items: [{ price: cat.seat.id }, { price: cat.calls.id }] });
  await w.advance(T + HOUR); await w.use(100);
  await w.advance(FEB + 10 * 60);
  const callsItem = sub.items.data.find((i) => i.price.id === cat.calls.id);
  await stripe.subscriptions.update(sub.id, { items: [{ id: callsItem.id, price: cat.calls6.id }] });
  await w.advance(FEB + 2 * HOUR);
  const lines = meteredLines(await w.invoices(sub.id));
  const jan = lines.find((l) => l.reason === 'subscription_cycle');
  assert.equal(jan.amount, 300, `line says price ${jan.price} (3c) but amount is ${jan.amount}`);
});

test('a metered item removed during the grace period: late usage for the ended period is still billed', async () => {
  const w = await world();
  const sub = await stripe.subscriptions.create({ customer: w.cus.id, items: [{ price: cat.seat.id }, { price: cat.calls.id }] });
  await w.advance(T + HOUR); await w.use(100);
  await w.advance(FEB + 10 * 60);
  await w.use(50, FEB - 5 * 60);              // late January usage, within grace
  const callsItem = sub.items.data.find((i) => i.price.id === cat.calls.id);
  await stripe.subscriptions.update(sub.id, { items: [{ id: callsItem.id, deleted: true }] });
  await w.advance(FEB + 2 * HOUR);
  const lines = meteredLines(await w.invoices(sub.id));
  assert.equal(lines.reduce((a, l) => a + l.amount, 0), 450);
});

test('a metered item removed mid-period: its usage so far is billed on the next invoice', async () => {
  const w = await world();
  const sub = await stripe.subscriptions.create({ customer: w.cus.id, items: [{ price: cat.seat.id }, { price: cat.calls.id }] });
  await w.advance(T + HOUR); await w.use(100);
  await w.advance(T + 2 * DAY);
  const callsItem = sub.items.data.find((i) => i.price.id === cat.calls.id);
  await stripe.subscriptions.update(sub.id, { items: [{ id: callsItem.id, deleted: true }] });
  await w.advance(FEB + 2 * HOUR);
  const lines = meteredLines(await w.invoices(sub.id));
  assert.equal(lines.reduce((a, l) => a + l.amount, 0), 300);
});
