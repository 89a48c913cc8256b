// A billing step that fails (here: usage too large to price) changes nothing and stops nothing
// else: a failed test clock advance leaves the entitlement registry as it was, and on the real
// clock one broken subscription does not hold up everybody else's renewals.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, createMeter, uniq, sleep, nowSec, HOUR } from './helpers.mjs';

let srv, stripe;
const utc = (y, m, d, h = 0) => Date.UTC(y, m - 1, d, h) / 1000;
const JAN = utc(2026, 1, 1), FEB = utc(2026, 2, 1);
before(async () => { srv = await startServer(); stripe = srv.stripe; });
after(async () => { await srv?.close(); });

test('a test clock advance that fails changes nothing: the check still counts the period in progress', async () => {
  const tokens = await createMeter(stripe);
  const other = await createMeter(stripe);
  const feat = await stripe.entitlements.features.create({ name: 'Tokens', lookup_key: uniq('tok') });
  const prod = await stripe.products.create({ name: 'Plan' });
  await stripe.rawRequest('POST', `/v1/products/${prod.id}/features`, { entitlement_feature: feat.id, usage_limit: { meter: tokens.id, quantity: '10', enforcement: 'hard' } });
  const price = await stripe.prices.create({ product: prod.id, currency: 'usd', unit_amount: 1000, recurring: { interval: 'month' } });
  const mprod = await stripe.products.create({ name: 'Metered' });
  const mprice = await stripe.prices.create({ product: mprod.id, currency: 'usd', unit_amount: 99999999999, recurring: { interval: 'month', usage_type: 'metered', meter: other.id } });
  const clock = await stripe.testHelpers.testClocks.create({ frozen_time: JAN });
  const cus = await stripe.customers.create({ name: 'A', test_clock: clock.id, invoice_settings: { default_payment_method: 'pm_x' } });
  await stripe.subscriptions.create({ customer: cus.id, items: [{ price: price.id }] });
  await stripe.testHelpers.testClocks.advance(clock.id, { frozen_time: JAN + HOUR });
  await stripe.subscriptions.create({ customer: cus.id, items: [{ price: mprice.id }] }); // renews at FEB+1h
  await stripe.testHelpers.testClocks.advance(clock.id, { frozen_time: JAN + 2 * HOUR });
  await stripe.billing.meterEvents.create({ event_name: tokens.event_name, payload: { stripe_customer_id: cus.id, value: '10' } });
  await stripe.billing.meterEvents.create({ event_name: other.event_name, payload: { stripe_customer_id: cus.id, value: '999999999999999' } });
  const chk = () => stripe.rawRequest('GET', `/v1/entitlements/check?customer=${cus.id}&feature=${feat.lookup_key}`);
  const before = await chk();
  assert.equal(before.entitled, false);
  let err;
  try { await stripe.testHelpers.testClocks.advance(clock.id, { frozen_time: FEB + 2 * HOUR }); } catch (e) { err = e; }
  assert.equal(err?.statusCode, 400, 'the renewal that cannot be priced fails the advance');
  const k = await stripe.testHelpers.testClocks.retrieve(clock.id);
  assert.equal(k.frozen_time, JAN + 2 * HOUR, 'the clock did not move');
  const after = await chk();
  assert.equal(after.entitled, false, JSON.stringify(after));
  assert.equal(after.limit.used, '10');
  // Usage keeps flowing in January and is not counted.
  await stripe.billing.meterEvents.create({ event_name: tokens.event_name, payload: { stripe_customer_id: cus.id, value: '1000' } });
  const after2 = await chk();
  const s = await stripe.rawRequest('POST', '/v1/usage_sessions', { customer: cus.id, feature: feat.lookup_key, event_name: tokens.event_name }).catch((e) => e);
  assert.equal(after2.entitled, false);
  assert.equal(after2.limit.used, '1010');
  assert.equal(s.statusCode, 402);
});

test('one subscription whose renewal cannot be priced does not hold up the others', async () => {
  const p = await stripe.products.create({ name: 'P' });
  const huge = await stripe.prices.create({ product: p.id, currency: 'usd', unit_amount: 99999999999, recurring: { interval: 'day' } });
  const seat = await stripe.prices.create({ product: p.id, currency: 'usd', unit_amount: 100, recurring: { interval: 'day' } });
  const a = await stripe.customers.create({ name: 'A', invoice_settings: { default_payment_method: 'pm_x' } });
  const b = await stripe.customers.create({ name: 'B' });
  const t = nowSec();
  // A's trial is free; the renewal at its end charges more than any amount can hold.
  const sa = await stripe.subscriptions.create({ customer: a.id, items: [{ price: huge.id, quantity: 1000000000000 }], trial_end: t + 3 });
  const sb = await stripe.subscriptions.create({ customer: b.id, items: [{ price: seat.id }], billing_cycle_anchor: t + 4 });
  while (nowSec() < t + 7) await sleep(250);
  // B renewed on time although A's step, due before it, fails.
  const invs = await stripe.invoices.list({ subscription: sb.id });
  assert.equal(invs.data.length, 2, JSON.stringify(invs.data.map((i) => i.billing_reason)));
  const failures = srv.output().split('\n').filter((l) => l.includes(`due step of ${sa.id} failed`));
  assert.equal(failures.length, 1, `a failed step is retried after a while, not every second:\n${srv.output().slice(-3000)}`);
  assert.equal((await stripe.subscriptions.retrieve(sa.id)).status, 'trialing');
  // The broken subscription can still be canceled.
  const canceled = await stripe.subscriptions.cancel(sa.id);
  assert.equal(canceled.status, 'canceled');
});
