// examples/voice-gateway against a running server: concurrent calls for several customers,
// each with a hard cap in seconds. No customer's metered seconds may exceed its cap, and every
// second of every call is billed exactly once (what the sessions billed is what the meter
// counted, and a completed call is billed for exactly its length).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { startServer, createMeter, createCustomer, usage, nowSec, floorTo } from './helpers.mjs';

const GATEWAY = process.env.VOICE_GATEWAY_BIN;
const CAP = 12; // seconds a customer may talk in its period

let srv;
before(async () => { srv = await startServer(); });
after(async () => { await srv?.close(); });

function runGateway(args) {
  return new Promise((resolve, reject) => {
    execFile(GATEWAY, args, { timeout: 60000 }, (err, stdout, stderr) => {
      if (err) return reject(new Error(`voice-gateway failed: ${err.message}\n${stderr}`));
      resolve(stdout.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l)));
    });
  });
}

test('concurrent calls never exceed a hard cap, and every second is billed once', { skip: !GATEWAY && 'VOICE_GATEWAY_BIN not set' }, async () => {
  const stripe = srv.stripe;
  const meter = await createMeter(stripe, { event_name: 'voice_seconds' });
  const feature = await stripe.entitlements.features.create({ name: 'Voice', lookup_key: 'voice_minutes' });
  const product = await stripe.products.create({ name: 'Starter voice' });
  await stripe.rawRequest('POST', `/v1/products/${product.id}/features`, {
    entitlement_feature: feature.id,
    usage_limit: { meter: meter.id, quantity: String(CAP), enforcement: 'hard' },
  });
  const price = await stripe.prices.create({
    currency: 'usd', unit_amount: 14900, product: product.id, recurring: { interval: 'month' },
  });
  const subscribed = [];
  for (let i = 0; i < 3; i++) {
    const c = await createCustomer(stripe);
    await stripe.subscriptions.create({ customer: c.id, items: [{ price: price.id }] });
    subscribed.push(c.id);
  }
  const stranger = (await createCustomer(stripe)).id; // no plan: never connected
  const start = floorTo(nowSec(), 60);

  const lines = await runGateway([
    '--url', `http://127.0.0.1:${srv.port}`, '--key', srv.key,
    '--customers', [...subscribed, stranger].join(','),
    '--calls', '16', '--min-seconds', '3', '--max-seconds', '7', '--seed', '7',
  ]);
  assert.equal(lines.length, 16);
  for (const l of lines) assert.equal(l.error, '', JSON.stringify(l));

  const refused = lines.filter((l) => l.customer === stranger);
  assert.ok(refused.length > 0);
  for (const l of refused) {
    assert.equal(l.outcome, 'refused');
    assert.equal(l.status, 'entitlement_required');
  }

  let cut = 0;
  for (const customer of subscribed) {
    const calls = lines.filter((l) => l.customer === customer);
    const metered = await usage(stripe, meter.id, customer, start, floorTo(nowSec(), 60) + 120);
    assert.ok(metered <= CAP, `${customer} metered ${metered} s over its cap of ${CAP}`);
    // What the sessions billed is exactly what the meter counted: no second lost or doubled.
    const billed = calls.reduce((s, l) => s + l.billed, 0);
    assert.equal(metered, billed, JSON.stringify(calls));
    for (const l of calls) {
      if (l.outcome === 'refused') {
        assert.equal(l.status, 'usage_limit_reached');
        continue;
      }
      const session = await stripe.rawRequest('GET', `/v1/usage_sessions/${l.session}`, null);
      assert.equal(session.billed_quantity, l.billed);
      assert.equal(session.payload.agent_id, `agent_${customer}`);
      if (session.status === 'ended') {
        // A call that ran to its end within its grant is billed for every second of it.
        assert.equal(l.outcome, 'completed');
        assert.equal(session.billed_quantity, session.ended_at - session.created, JSON.stringify(session));
      } else {
        // Cut at the cap (told at a heartbeat, or ending past its last grant): billed up to
        // what was granted, never more than it talked.
        cut++;
        assert.equal(session.status, 'limit_reached');
        assert.ok(session.billed_quantity <= session.ended_at - session.created);
      }
    }
    const check = await stripe.rawRequest('GET', `/v1/entitlements/check?customer=${customer}&feature=voice_minutes`, null);
    assert.equal(check.limit.used, String(metered));
  }
  // 16 calls of 3-7 s against 12 s each: the caps must have bitten.
  assert.ok(cut + lines.filter((l) => l.status === 'usage_limit_reached').length > 0,
    'no call met its cap: the test did not exercise the limit');
});
