// v1 meter events and adjustments through stripe.billing.meterEvents / meterEventAdjustments.

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startServer, expectStripeError, nowSec, uniq, createMeter, createCustomer,
  expectUsage, floorTo, HOUR, DAY,
} from './helpers.mjs';

let srv;
let stripe;
let meter; // sum, default keys
let cus;
const BASE = floorTo(nowSec() - 2 * DAY, HOUR); // an hour two days ago
before(async () => {
  srv = await startServer();
  stripe = srv.stripe;
  meter = await createMeter(stripe, { formula: 'sum' });
  cus = await createCustomer(stripe);
});
after(async () => { await srv?.close(); });

const send = (params) => stripe.billing.meterEvents.create(params);
const payloadFor = (customer, value) => (value === undefined
  ? { stripe_customer_id: customer }
  : { stripe_customer_id: customer, value });

describe('accepted events', () => {
  test('create echoes the event with string payload values', async () => {
    const identifier = uniq('idem');
    const ts = nowSec() - 60;
    const ev = await send({
      event_name: meter.event_name, identifier, timestamp: ts,
      payload: { stripe_customer_id: cus.id, value: '25' },
    });
    assert.equal(ev.object, 'billing.meter_event');
    assert.equal(ev.event_name, meter.event_name);
    assert.equal(ev.identifier, identifier);
    assert.deepEqual(ev.payload, { stripe_customer_id: cus.id, value: '25' });
    assert.equal(ev.timestamp, ts);
    assert.equal(ev.livemode, false);
    assert.ok(Number.isInteger(ev.created) && Math.abs(ev.created - nowSec()) <= 5);
  });

  test('numbers in the payload come back as strings; identifier and timestamp are generated', async () => {
    const before = nowSec();
    const ev = await send({ event_name: meter.event_name, payload: { stripe_customer_id: cus.id, value: 7 } });
    assert.equal(ev.payload.value, '7');
    assert.equal(typeof ev.identifier, 'string');
    assert.ok(ev.identifier.length > 0 && ev.identifier.length <= 100, ev.identifier);
    assert.ok(ev.timestamp >= before - 1 && ev.timestamp <= nowSec() + 1, `timestamp ${ev.timestamp}`);
    const ev2 = await send({ event_name: meter.event_name, payload: { stripe_customer_id: cus.id, value: '1' } });
    assert.notEqual(ev2.identifier, ev.identifier);
  });

  test('edges of the accepted ranges', async () => {
    const c = await createCustomer(stripe);
    const ok = [
      ['identifier of 100 chars', { identifier: 'i'.repeat(99) + uniq('').slice(-1) }],
      ['timestamp 34 days ago', { timestamp: nowSec() - 34 * DAY }],
      ['timestamp 2 minutes ahead', { timestamp: nowSec() + 120 }],
      ['12 fractional digits', { value: '1.000000000001' }],
      ['15 significant digits', { value: '9'.repeat(15) }],
      ['15 digits, 12 of them fractional', { value: '999.999999999999' }],
      ['negative', { value: '-3.5' }],
      ['zero', { value: '0' }],
    ];
    for (const [what, extra] of ok) {
      const { value = '1', ...rest } = extra;
      const ev = await send({
        event_name: meter.event_name, payload: payloadFor(c.id, value), identifier: uniq('edge'), ...rest,
      }).catch((e) => assert.fail(`${what}: ${e.statusCode} ${e.code} ${e.message}`));
      assert.equal(ev.payload.value, value, what);
    }
  });
});

describe('refusals', () => {
  test('unknown event_name is no_meter', async () => {
    await expectStripeError(send({ event_name: 'no_such_event_xyz', payload: payloadFor(cus.id, '1') }), {
      status: 400, code: 'no_meter', param: 'event_name',
      message: /No active meter found for event name '?no_such_event_xyz'?/,
    });
  });

  test('event for a deactivated meter is archived_meter', async () => {
    const m = await createMeter(stripe);
    await stripe.billing.meters.deactivate(m.id);
    await expectStripeError(send({ event_name: m.event_name, payload: payloadFor(cus.id, '1') }), {
      status: 400, code: 'archived_meter', param: 'event_name',
    });
    await stripe.billing.meters.reactivate(m.id);
    const ev = await send({ event_name: m.event_name, payload: payloadFor(cus.id, '1') });
    assert.equal(ev.event_name, m.event_name);
  });

  test('customer key missing is meter_event_no_customer_defined', async () => {
    await expectStripeError(send({ event_name: meter.event_name, payload: { value: '1' } }), {
      status: 400, code: 'meter_event_no_customer_defined', param: 'payload[stripe_customer_id]',
    });
  });

  test('unknown or other-mode customer is meter_event_customer_not_found', async () => {
    await expectStripeError(send({ event_name: meter.event_name, payload: payloadFor('cus_nope', '1') }), {
      status: 400, code: 'meter_event_customer_not_found', param: 'payload[stripe_customer_id]',
    });
    const liveCus = await srv.liveStripe.customers.create({ name: 'live' });
    await expectStripeError(send({ event_name: meter.event_name, payload: payloadFor(liveCus.id, '1') }), {
      status: 400, code: 'meter_event_customer_not_found', param: 'payload[stripe_customer_id]',
    });
  });

  test('event for a deleted customer is meter_event_customer_not_found', async () => {
    const c = await createCustomer(stripe);
    await stripe.customers.del(c.id);
    await expectStripeError(send({ event_name: meter.event_name, payload: payloadFor(c.id, '1') }), {
      status: 400, code: 'meter_event_customer_not_found', param: 'payload[stripe_customer_id]',
    });
  });

  test('value key missing is meter_event_value_not_found (sum and last)', async () => {
    await expectStripeError(send({ event_name: meter.event_name, payload: payloadFor(cus.id) }), {
      status: 400, code: 'meter_event_value_not_found', param: 'payload[value]',
    });
    const last = await createMeter(stripe, { formula: 'last' });
    await expectStripeError(send({ event_name: last.event_name, payload: payloadFor(cus.id) }), {
      status: 400, code: 'meter_event_value_not_found', param: 'payload[value]',
    });
  });

  for (const value of ['abc', '1e5', '', '0x10', '1.5.2', ' 5', '5 ', 'NaN', 'Infinity', '1,5',
    '1.0000000000001', '1'.repeat(27), '--1', '.']) {
    test(`value ${JSON.stringify(value)} is meter_event_invalid_value`, async () => {
      await expectStripeError(send({ event_name: meter.event_name, payload: payloadFor(cus.id, value) }), {
        status: 400, code: 'meter_event_invalid_value', param: 'payload[value]',
      });
    });
  }

  for (const value of ['1234567890123456', '1000000000000000', '-1234.567890123456']) {
    test(`value ${value} (16 digits) is meter_event_value_too_many_digits`, async () => {
      await expectStripeError(send({ event_name: meter.event_name, payload: payloadFor(cus.id, value) }), {
        status: 400, code: 'meter_event_value_too_many_digits', param: 'payload[value]',
        message: `The value in the event payload can have at most 15 digits. Received ${value}.`,
      });
    });
  }

  test('15 significant digits are accepted (trailing fraction zeros do not count)', async () => {
    for (const value of ['999999999999999', '-123.456789012345', '12345678901234.500', '0.000000000001']) {
      const ev = await send({ event_name: meter.event_name, payload: payloadFor(cus.id, value) });
      assert.equal(ev.payload.value, value);
    }
  });

  test('timestamp older than 35 days is timestamp_too_far_in_past', async () => {
    await expectStripeError(send({
      event_name: meter.event_name, payload: payloadFor(cus.id, '1'), timestamp: nowSec() - 36 * DAY,
    }), { status: 400, code: 'timestamp_too_far_in_past', param: 'timestamp' });
  });

  test('timestamp more than 5 minutes ahead is timestamp_in_future', async () => {
    await expectStripeError(send({
      event_name: meter.event_name, payload: payloadFor(cus.id, '1'), timestamp: nowSec() + 600,
    }), { status: 400, code: 'timestamp_in_future', param: 'timestamp' });
  });

  test('repeated identifier is duplicate_meter_event', async () => {
    const identifier = uniq('dup');
    await send({ event_name: meter.event_name, identifier, payload: payloadFor(cus.id, '1') });
    await expectStripeError(send({ event_name: meter.event_name, identifier, payload: payloadFor(cus.id, '1') }), {
      status: 400, code: 'duplicate_meter_event', param: 'identifier',
      message: `An event already exists with identifier ${identifier}.`,
    });
    // Also with a different payload.
    await expectStripeError(send({ event_name: meter.event_name, identifier, payload: payloadFor(cus.id, '99') }), {
      status: 400, code: 'duplicate_meter_event', param: 'identifier',
    });
  });

  test('a refused event does not use up its identifier', async () => {
    const identifier = uniq('retry');
    await expectStripeError(send({ event_name: meter.event_name, identifier, payload: payloadFor(cus.id, 'abc') }), {
      status: 400, code: 'meter_event_invalid_value',
    });
    const ev = await send({ event_name: meter.event_name, identifier, payload: payloadFor(cus.id, '1') });
    assert.equal(ev.identifier, identifier);
  });

  test('identifier or event_name over 100 characters is parameter_invalid', async () => {
    await expectStripeError(send({
      event_name: meter.event_name, identifier: 'i'.repeat(101), payload: payloadFor(cus.id, '1'),
    }), { status: 400, code: 'parameter_invalid', param: 'identifier' });
    await expectStripeError(send({ event_name: 'e'.repeat(101), payload: payloadFor(cus.id, '1') }), {
      status: 400, code: 'parameter_invalid', param: 'event_name',
    });
  });

  test('missing event_name or payload is parameter_missing', async () => {
    await expectStripeError(send({ payload: payloadFor(cus.id, '1') }), {
      status: 400, code: 'parameter_missing', param: 'event_name',
    });
    await expectStripeError(send({ event_name: meter.event_name }), {
      status: 400, code: 'parameter_missing', param: 'payload',
    });
  });

  test('non-integer timestamp is parameter_invalid_integer; unknown parameter is parameter_unknown', async () => {
    const r = await srv.raw('POST', '/v1/billing/meter_events', {
      body: { event_name: meter.event_name, timestamp: 'soon', payload: payloadFor(cus.id, '1') },
    });
    assert.equal(r.status, 400, r.text);
    assert.equal(r.json.error.code, 'parameter_invalid_integer');
    assert.equal(r.json.error.param, 'timestamp');
    await expectStripeError(send({ event_name: meter.event_name, payload: payloadFor(cus.id, '1'), priority: 'high' }), {
      status: 400, code: 'parameter_unknown', param: 'priority',
    });
  });

  test('refused events are not counted', async () => {
    const c = await createCustomer(stripe);
    const ts = BASE + 7 * 60;
    await send({ event_name: meter.event_name, payload: payloadFor(c.id, '2'), timestamp: ts });
    await send({ event_name: meter.event_name, payload: payloadFor(c.id, 'abc'), timestamp: ts }).catch(() => {});
    await send({ event_name: meter.event_name, payload: payloadFor(c.id, '5'), timestamp: nowSec() + 3600 }).catch(() => {});
    await expectUsage(stripe, meter.id, c.id, BASE, BASE + HOUR, 2);
  });
});

describe('aggregation', () => {
  test('decimals are exact: 0.1 + 0.2 === 0.3', async () => {
    const c = await createCustomer(stripe);
    await send({ event_name: meter.event_name, payload: payloadFor(c.id, '0.1'), timestamp: BASE + 60 });
    await send({ event_name: meter.event_name, payload: payloadFor(c.id, '0.2'), timestamp: BASE + 120 });
    await expectUsage(stripe, meter.id, c.id, BASE, BASE + HOUR, 0.3);
    for (let i = 0; i < 7; i++) {
      await send({ event_name: meter.event_name, payload: payloadFor(c.id, '0.1'), timestamp: BASE + 180 });
    }
    await expectUsage(stripe, meter.id, c.id, BASE, BASE + HOUR, 1);
  });

  test('negative values subtract', async () => {
    const c = await createCustomer(stripe);
    for (const v of ['10', '-2.5', '0.5', '-20']) {
      await send({ event_name: meter.event_name, payload: payloadFor(c.id, v), timestamp: BASE + 300 });
    }
    await expectUsage(stripe, meter.id, c.id, BASE, BASE + HOUR, -12);
  });

  test('sum is per customer', async () => {
    const a = await createCustomer(stripe);
    const b = await createCustomer(stripe);
    await send({ event_name: meter.event_name, payload: payloadFor(a.id, '3'), timestamp: BASE + 60 });
    await send({ event_name: meter.event_name, payload: payloadFor(b.id, '4'), timestamp: BASE + 60 });
    await send({ event_name: meter.event_name, payload: payloadFor(a.id, '5'), timestamp: BASE + 60 });
    await expectUsage(stripe, meter.id, a.id, BASE, BASE + HOUR, 8);
    await expectUsage(stripe, meter.id, b.id, BASE, BASE + HOUR, 4);
  });

  test('count ignores the value and needs none', async () => {
    const m = await createMeter(stripe, { formula: 'count' });
    const c = await createCustomer(stripe);
    await send({ event_name: m.event_name, payload: payloadFor(c.id, '5'), timestamp: BASE + 60 });
    await send({ event_name: m.event_name, payload: payloadFor(c.id, '7.25'), timestamp: BASE + 70 });
    await send({ event_name: m.event_name, payload: payloadFor(c.id), timestamp: BASE + 80 });
    await expectUsage(stripe, m.id, c.id, BASE, BASE + HOUR, 3);
  });

  test('last takes the value of the latest event by timestamp', async () => {
    const m = await createMeter(stripe, { formula: 'last' });
    const c = await createCustomer(stripe);
    await send({ event_name: m.event_name, payload: payloadFor(c.id, '5'), timestamp: BASE + 600 });
    await send({ event_name: m.event_name, payload: payloadFor(c.id, '9'), timestamp: BASE + 300 });
    await send({ event_name: m.event_name, payload: payloadFor(c.id, '2'), timestamp: BASE + HOUR + 60 });
    await expectUsage(stripe, m.id, c.id, BASE, BASE + HOUR, 5);
    await expectUsage(stripe, m.id, c.id, BASE, BASE + 2 * HOUR, 2);
    await expectUsage(stripe, m.id, c.id, BASE, BASE + 360, 9);
  });

  test('custom payload keys from customer_mapping and value_settings', async () => {
    const m = await createMeter(stripe, {
      customer_mapping: { type: 'by_id', event_payload_key: 'account' },
      value_settings: { event_payload_key: 'tokens' },
    });
    const c = await createCustomer(stripe);
    const ev = await send({ event_name: m.event_name, payload: { account: c.id, tokens: '4', note: 'x' }, timestamp: BASE + 60 });
    assert.deepEqual(ev.payload, { account: c.id, tokens: '4', note: 'x' });
    await expectStripeError(send({ event_name: m.event_name, payload: { stripe_customer_id: c.id, tokens: '4' } }), {
      status: 400, code: 'meter_event_no_customer_defined', param: 'payload[account]',
    });
    await expectStripeError(send({ event_name: m.event_name, payload: { account: c.id, value: '4' } }), {
      status: 400, code: 'meter_event_value_not_found', param: 'payload[tokens]',
    });
    await expectStripeError(send({ event_name: m.event_name, payload: { account: c.id, tokens: 'x' } }), {
      status: 400, code: 'meter_event_invalid_value', param: 'payload[tokens]',
    });
    await expectStripeError(send({ event_name: m.event_name, payload: { account: 'cus_missing', tokens: '1' } }), {
      status: 400, code: 'meter_event_customer_not_found', param: 'payload[account]',
    });
    await expectUsage(stripe, m.id, c.id, BASE, BASE + HOUR, 4);
  });

  test("event_time_window 'hour' keeps only the most recently received event per customer and hour", async () => {
    const m = await createMeter(stripe, { formula: 'sum', event_time_window: 'hour' });
    const a = await createCustomer(stripe);
    const b = await createCustomer(stripe);
    // Received order decides, not timestamp order.
    await send({ event_name: m.event_name, payload: payloadFor(a.id, '3'), timestamp: BASE + 120 });
    await send({ event_name: m.event_name, payload: payloadFor(a.id, '5'), timestamp: BASE + 60 });
    await send({ event_name: m.event_name, payload: payloadFor(b.id, '11'), timestamp: BASE + 90 });
    await send({ event_name: m.event_name, payload: payloadFor(a.id, '2'), timestamp: BASE + HOUR + 10 });
    await expectUsage(stripe, m.id, a.id, BASE, BASE + HOUR, 5);
    await expectUsage(stripe, m.id, a.id, BASE, BASE + 2 * HOUR, 7);
    await expectUsage(stripe, m.id, b.id, BASE, BASE + 2 * HOUR, 11);
    const grouped = await stripe.billing.meters.listEventSummaries(m.id, {
      customer: a.id, start_time: BASE, end_time: BASE + 2 * HOUR, value_grouping_window: 'hour',
    });
    assert.deepEqual(grouped.data.map((s) => [s.start_time, s.aggregated_value]), [[BASE + HOUR, 2], [BASE, 5]]);
  });
});

describe('adjustments', () => {
  test('cancel removes the event from the totals', async () => {
    const c = await createCustomer(stripe);
    const big = uniq('big');
    await send({ event_name: meter.event_name, identifier: big, payload: payloadFor(c.id, '10'), timestamp: BASE + 60 });
    await send({ event_name: meter.event_name, identifier: uniq('small'), payload: payloadFor(c.id, '1'), timestamp: BASE + 60 });
    await expectUsage(stripe, meter.id, c.id, BASE, BASE + HOUR, 11);
    const adj = await stripe.billing.meterEventAdjustments.create({
      event_name: meter.event_name, type: 'cancel', cancel: { identifier: big },
    });
    assert.equal(adj.object, 'billing.meter_event_adjustment');
    assert.equal(adj.event_name, meter.event_name);
    assert.equal(adj.type, 'cancel');
    assert.deepEqual(adj.cancel, { identifier: big });
    assert.ok(['pending', 'complete'].includes(adj.status), adj.status);
    assert.equal(adj.livemode, false);
    await expectUsage(stripe, meter.id, c.id, BASE, BASE + HOUR, 1);
    // A cancelled identifier still cannot be reused for a new event.
    await expectStripeError(send({ event_name: meter.event_name, identifier: big, payload: payloadFor(c.id, '10') }), {
      status: 400, code: 'duplicate_meter_event', param: 'identifier',
    });
  });

  test('cancel of an unknown identifier is refused', async () => {
    const e = await expectStripeError(stripe.billing.meterEventAdjustments.create({
      event_name: meter.event_name, type: 'cancel', cancel: { identifier: uniq('never_sent') },
    }), {});
    assert.ok([400, 404].includes(e.statusCode), `status ${e.statusCode}`);
    assert.ok(['resource_missing', 'parameter_invalid'].includes(e.code), `code ${e.code}`);
    assert.equal(e.param, 'cancel[identifier]');
  });

  test('cancel without cancel[identifier] is parameter_missing', async () => {
    const e = await expectStripeError(stripe.billing.meterEventAdjustments.create({
      event_name: meter.event_name, type: 'cancel',
    }), { status: 400, code: 'parameter_missing' });
    assert.ok(['cancel', 'cancel[identifier]'].includes(e.param), `param ${e.param}`);
  });

  test('bad type or missing event_name are refused', async () => {
    await expectStripeError(stripe.billing.meterEventAdjustments.create({
      event_name: meter.event_name, type: 'refund', cancel: { identifier: 'x' },
    }), { status: 400, code: 'parameter_invalid', param: 'type' });
    await expectStripeError(stripe.billing.meterEventAdjustments.create({
      type: 'cancel', cancel: { identifier: 'x' },
    }), { status: 400, code: 'parameter_missing', param: 'event_name' });
  });

  test('an event of another meter cannot be cancelled through this event_name', async () => {
    const other = await createMeter(stripe);
    const c = await createCustomer(stripe);
    const id = uniq('other');
    await send({ event_name: other.event_name, identifier: id, payload: payloadFor(c.id, '6'), timestamp: BASE + 60 });
    await stripe.billing.meterEventAdjustments.create({
      event_name: meter.event_name, type: 'cancel', cancel: { identifier: id },
    }).catch(() => {});
    await expectUsage(stripe, other.id, c.id, BASE, BASE + HOUR, 6);
  });
});

describe('identifier retention (--identifier-days)', () => {
  // Moving past the window needs a clock the server does not have here: the unit tests in
  // test_recovery.c move one. These check that the option reaches the server and that a retry
  // within the window is refused, before and after a restart.
  for (const days of ['36', '400', 'forever']) {
    test(`--identifier-days ${days}: a retry is refused, also after a restart`, async () => {
      const s = await startServer({ args: ['--identifier-days', days] });
      try {
        const m = await createMeter(s.stripe, { formula: 'sum' });
        const c = await createCustomer(s.stripe);
        const identifier = uniq('ret');
        const ev = { event_name: m.event_name, identifier, payload: payloadFor(c.id, '1') };
        await s.stripe.billing.meterEvents.create(ev);
        const dup = { status: 400, code: 'duplicate_meter_event', param: 'identifier' };
        await expectStripeError(s.stripe.billing.meterEvents.create(ev), dup);
        await s.restart();
        const kept = days === 'forever' ? 'forever' : `${days} days`;
        assert.match(s.log, new RegExp(`, 1 identifiers indexed, kept ${kept}\\)`), 'the restart indexed the one event');
        await expectStripeError(s.stripe.billing.meterEvents.create(ev), dup);
      } finally {
        await s.close();
      }
    });
  }
});
