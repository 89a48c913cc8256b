// v2 metering: meter event sessions, the meter event stream, synchronous v2 meter events and
// v2 adjustments.

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startServer, stripeClient, expectStripeError, expectRawError, nowSec, uniq, createMeter,
  createCustomer, expectUsage, eventually, floorTo, HOUR, DAY,
} from './helpers.mjs';

let srv;
let stripe;
let meter;
const BASE = floorTo(nowSec() - DAY, HOUR);
const iso = (sec) => new Date(sec * 1000).toISOString();

before(async () => {
  srv = await startServer();
  stripe = srv.stripe;
  meter = await createMeter(stripe, { formula: 'sum' });
});
after(async () => { await srv?.close(); });

async function session(s = stripe) {
  return s.v2.billing.meterEventSession.create();
}
function streamClient(token, port = srv.port) {
  return stripeClient(token, port);
}
const ev = (customer, value, extra = {}) => ({
  event_name: meter.event_name,
  identifier: uniq('s'),
  timestamp: iso(BASE + 60),
  payload: value === undefined ? { stripe_customer_id: customer } : { stripe_customer_id: customer, value },
  ...extra,
});

async function errorsFor(meterId, port = srv.port, key = srv.key) {
  const q = meterId ? `?meter=${meterId}` : '';
  const r = await srv.raw('GET', `/v1/billing/meter_event_errors${q}`, { auth: key });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.object, 'list');
  return r.json.data;
}

describe('meter event session', () => {
  test('create returns a token valid for 15 minutes', async () => {
    const t0 = Date.now();
    const s = await session();
    assert.equal(typeof s.id, 'string');
    assert.ok(s.id.length > 0);
    assert.equal(s.object, 'v2.billing.meter_event_session');
    assert.equal(typeof s.authentication_token, 'string');
    assert.ok(s.authentication_token.length >= 16, 'token looks too short to be unguessable');
    assert.equal(s.livemode, false);
    assert.match(s.created, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/);
    assert.match(s.expires_at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/);
    const created = Date.parse(s.created);
    const expires = Date.parse(s.expires_at);
    assert.equal(expires - created, 15 * 60 * 1000);
    assert.ok(Math.abs(created - t0) < 5000, `created ${s.created}`);
    const s2 = await session();
    assert.notEqual(s2.authentication_token, s.authentication_token);
    assert.notEqual(s2.id, s.id);
    const ls = await session(srv.liveStripe);
    assert.equal(ls.livemode, true);
  });
});

describe('meter event stream', () => {
  test('valid events are counted', async () => {
    const c = await createCustomer(stripe);
    const s = await session();
    const client = streamClient(s.authentication_token);
    const res = await client.v2.billing.meterEventStream.create({
      events: [ev(c.id, '1'), ev(c.id, '2'), ev(c.id, '3.5'), ev(c.id, '4', { timestamp: undefined })],
    });
    assert.equal(res.lastResponse.statusCode, 200);
    await expectUsage(stripe, meter.id, c.id, BASE, BASE + HOUR, 6.5);
    await expectUsage(stripe, meter.id, c.id, floorTo(nowSec(), 60) - 120, floorTo(nowSec(), 60) + 120, 4);
  });

  test('the token also works as a per-request apiKey option', async () => {
    const c = await createCustomer(stripe);
    const s = await session();
    await stripe.v2.billing.meterEventStream.create({ events: [ev(c.id, '9')] }, { apiKey: s.authentication_token });
    await expectUsage(stripe, meter.id, c.id, BASE, BASE + HOUR, 9);
  });

  test('invalid events are not counted and are reported in meter_event_errors', async () => {
    const m = await createMeter(stripe, { formula: 'sum' });
    const c = await createCustomer(stripe);
    const s = await session();
    const client = streamClient(s.authentication_token);
    const dupId = uniq('dup');
    const mk = (payload, extra = {}) => ({
      event_name: m.event_name, identifier: uniq('e'), timestamp: iso(BASE + 120), payload, ...extra,
    });
    await client.v2.billing.meterEventStream.create({
      events: [
        mk({ stripe_customer_id: c.id, value: '5' }),
        mk({ stripe_customer_id: c.id, value: '7' }, { identifier: dupId }),
        mk({ value: '100' }),                                  // no customer
        mk({ stripe_customer_id: c.id, value: 'abc' }),        // invalid value
        mk({ stripe_customer_id: c.id, value: '1e5' }),        // invalid value
        mk({ stripe_customer_id: c.id, value: '1234567890123456' }), // 16 digits
        mk({ stripe_customer_id: c.id }),                      // no value
        mk({ stripe_customer_id: 'cus_nope', value: '100' }),  // unknown customer
        mk({ stripe_customer_id: c.id, value: '100' }, { timestamp: iso(nowSec() - 40 * DAY) }),
        mk({ stripe_customer_id: c.id, value: '100' }, { timestamp: iso(nowSec() + 3600) }),
      ],
    });
    await client.v2.billing.meterEventStream.create({
      events: [mk({ stripe_customer_id: c.id, value: '100' }, { identifier: dupId })], // duplicate
    });
    await expectUsage(stripe, m.id, c.id, BASE, BASE + HOUR, 12);

    const want = {
      meter_event_no_customer_defined: 1,
      meter_event_invalid_value: 2,
      meter_event_value_too_many_digits: 1,
      meter_event_value_not_found: 1,
      meter_event_customer_not_found: 1,
      timestamp_too_far_in_past: 1,
      timestamp_in_future: 1,
      duplicate_meter_event: 1,
    };
    const rows = await eventually(async () => {
      const data = await errorsFor(m.id);
      return Object.fromEntries(data.map((r) => [r.code, r.error_count]).sort());
    }, Object.fromEntries(Object.entries(want).sort()));
    assert.ok(rows);
    const data = await errorsFor(m.id);
    for (const r of data) {
      assert.equal(r.object, 'billing.meter_event_error');
      assert.equal(r.meter, m.id);
      assert.equal(typeof r.id, 'string');
      assert.equal(typeof r.last_error_message, 'string');
      assert.ok(r.last_error_message.length > 0);
      assert.ok(Number.isInteger(r.last_seen_at) && Math.abs(r.last_seen_at - nowSec()) < 60);
      assert.equal(r.livemode, false);
    }
  });

  test('events for an unknown event_name are reported with meter null', async () => {
    const c = await createCustomer(stripe);
    const s = await session();
    const name = uniq('nomatch');
    await streamClient(s.authentication_token).v2.billing.meterEventStream.create({
      events: [{ event_name: name, payload: { stripe_customer_id: c.id, value: '1' } }],
    });
    await eventually(async () => {
      const data = await errorsFor(null);
      const row = data.find((r) => r.code === 'no_meter');
      return row ? { meter: row.meter, atLeastOne: row.error_count >= 1 } : null;
    }, { meter: null, atLeastOne: true });
  });

  test('more than 100 events per request is 400', async () => {
    const c = await createCustomer(stripe);
    const s = await session();
    const events = Array.from({ length: 101 }, () => ev(c.id, '1'));
    await expectStripeError(streamClient(s.authentication_token).v2.billing.meterEventStream.create({ events }), {
      status: 400, code: 'parameter_invalid', param: 'events',
    });
    await expectUsage(stripe, meter.id, c.id, BASE, BASE + HOUR, 0);
    await streamClient(s.authentication_token).v2.billing.meterEventStream.create({ events: events.slice(0, 100) });
    await expectUsage(stripe, meter.id, c.id, BASE, BASE + HOUR, 100);
  });

  test('--max-stream-events raises the per-request limit', async () => {
    const big = await startServer({ args: ['--max-stream-events', '1000'] });
    try {
      const m = await createMeter(big.stripe);
      const c = await createCustomer(big.stripe);
      const s = await big.stripe.v2.billing.meterEventSession.create();
      const client = stripeClient(s.authentication_token, big.port);
      const mk = () => ({
        event_name: m.event_name, identifier: uniq('b'), timestamp: iso(BASE + 60),
        payload: { stripe_customer_id: c.id, value: '1' },
      });
      await client.v2.billing.meterEventStream.create({ events: Array.from({ length: 1000 }, mk) });
      await expectStripeError(client.v2.billing.meterEventStream.create({ events: Array.from({ length: 1001 }, mk) }), {
        status: 400, code: 'parameter_invalid', param: 'events',
      });
      await expectUsage(big.stripe, m.id, c.id, BASE, BASE + HOUR, 1000, { timeout: 8000 });
    } finally {
      await big.close();
    }
  });

  test('unknown token is 401 temporary_session_expired', async () => {
    const c = await createCustomer(stripe);
    for (const token of ['bogus_token', srv.key.replace(/.$/, (ch) => (ch === 'a' ? 'b' : 'a'))]) {
      await expectStripeError(streamClient(token).v2.billing.meterEventStream.create({ events: [ev(c.id, '1')] }), {
        status: 401, type: 'temporary_session_expired', code: 'billing_meter_event_session_expired',
        cls: 'TemporarySessionExpiredError',
      });
    }
    const r = await srv.raw('POST', '/v2/billing/meter_event_stream', { auth: null, body: { events: [ev(c.id, '1')] } });
    assert.equal(r.status, 401, r.text);
    assert.ok(r.json && r.json.error, r.text);
    await expectUsage(stripe, meter.id, c.id, BASE, BASE + HOUR, 0);
  });

  test('a session token is not an API key', async () => {
    const s = await session();
    await expectStripeError(streamClient(s.authentication_token).customers.list(), {
      status: 401, code: 'api_key_invalid',
    });
  });

  test('a live session streams into live mode only', async () => {
    const lm = await createMeter(srv.liveStripe, { event_name: meter.event_name });
    const lc = await createCustomer(srv.liveStripe);
    const s = await session(srv.liveStripe);
    await streamClient(s.authentication_token).v2.billing.meterEventStream.create({
      events: [{ ...ev(lc.id, '3'), event_name: lm.event_name }],
    });
    await expectUsage(srv.liveStripe, lm.id, lc.id, BASE, BASE + HOUR, 3);
  });

  test('missing events is 400', async () => {
    const s = await session();
    const r = await srv.raw('POST', '/v2/billing/meter_event_stream', {
      auth: s.authentication_token, body: {},
    });
    expectRawError(r, { status: 400, param: 'events' });
  });
});

describe('v2 meter events (synchronous validation)', () => {
  test('create returns a v2.billing.meter_event', async () => {
    const c = await createCustomer(stripe);
    const identifier = uniq('v2');
    const ts = iso(BASE + 180);
    const e = await stripe.v2.billing.meterEvents.create({
      event_name: meter.event_name, identifier, timestamp: ts,
      payload: { stripe_customer_id: c.id, value: '2.5' },
    });
    assert.equal(e.object, 'v2.billing.meter_event');
    assert.equal(e.event_name, meter.event_name);
    assert.equal(e.identifier, identifier);
    assert.deepEqual(e.payload, { stripe_customer_id: c.id, value: '2.5' });
    assert.equal(Date.parse(e.timestamp), Date.parse(ts));
    assert.match(e.created, /^\d{4}-\d\d-\d\dT/);
    assert.ok(Math.abs(Date.parse(e.created) - Date.now()) < 10000);
    assert.equal(e.livemode, false);
    await expectUsage(stripe, meter.id, c.id, BASE, BASE + HOUR, 2.5);
  });

  test('refusals use the meter event codes', async () => {
    const c = await createCustomer(stripe);
    const create = (p) => stripe.v2.billing.meterEvents.create(p);
    const dup = uniq('dup');
    await create({ event_name: meter.event_name, identifier: dup, payload: { stripe_customer_id: c.id, value: '1' } });
    const cases = [
      [{ event_name: uniq('none'), payload: { stripe_customer_id: c.id, value: '1' } }, 'no_meter', 'event_name'],
      [{ event_name: meter.event_name, payload: { value: '1' } }, 'meter_event_no_customer_defined', 'payload[stripe_customer_id]'],
      [{ event_name: meter.event_name, payload: { stripe_customer_id: 'cus_nope', value: '1' } }, 'meter_event_customer_not_found', 'payload[stripe_customer_id]'],
      [{ event_name: meter.event_name, payload: { stripe_customer_id: c.id } }, 'meter_event_value_not_found', 'payload[value]'],
      [{ event_name: meter.event_name, payload: { stripe_customer_id: c.id, value: 'abc' } }, 'meter_event_invalid_value', 'payload[value]'],
      [{ event_name: meter.event_name, payload: { stripe_customer_id: c.id, value: '1' }, timestamp: iso(nowSec() - 36 * DAY) }, 'timestamp_too_far_in_past', 'timestamp'],
      [{ event_name: meter.event_name, payload: { stripe_customer_id: c.id, value: '1' }, timestamp: iso(nowSec() + 600) }, 'timestamp_in_future', 'timestamp'],
      [{ event_name: meter.event_name, identifier: dup, payload: { stripe_customer_id: c.id, value: '1' } }, 'duplicate_meter_event', 'identifier'],
      [{ event_name: meter.event_name, identifier: 'x'.repeat(101), payload: { stripe_customer_id: c.id, value: '1' } }, 'parameter_invalid', 'identifier'],
    ];
    for (const [params, code, param] of cases) {
      await expectStripeError(create(params), { status: 400, code, param });
    }
    await expectUsage(stripe, meter.id, c.id, floorTo(nowSec(), 60) - 300, floorTo(nowSec(), 60) + 300, 1);
  });

  test('a malformed ISO timestamp is refused', async () => {
    const c = await createCustomer(stripe);
    const e = await expectStripeError(stripe.v2.billing.meterEvents.create({
      event_name: meter.event_name, timestamp: 'yesterday', payload: { stripe_customer_id: c.id, value: '1' },
    }), { status: 400, param: 'timestamp' });
    assert.ok(['parameter_invalid', 'invalid_fields'].includes(e.code), e.code);
  });
});

describe('v2 meter event adjustments', () => {
  test('cancel an event', async () => {
    const c = await createCustomer(stripe);
    const id = uniq('cancelme');
    await stripe.v2.billing.meterEvents.create({
      event_name: meter.event_name, identifier: id, timestamp: iso(BASE + 240),
      payload: { stripe_customer_id: c.id, value: '40' },
    });
    await stripe.v2.billing.meterEvents.create({
      event_name: meter.event_name, timestamp: iso(BASE + 240),
      payload: { stripe_customer_id: c.id, value: '2' },
    });
    await expectUsage(stripe, meter.id, c.id, BASE, BASE + HOUR, 42);
    const adj = await stripe.v2.billing.meterEventAdjustments.create({
      event_name: meter.event_name, type: 'cancel', cancel: { identifier: id },
    });
    assert.equal(typeof adj.id, 'string');
    assert.ok(adj.id.length > 0);
    assert.equal(adj.object, 'v2.billing.meter_event_adjustment');
    assert.equal(adj.event_name, meter.event_name);
    assert.equal(adj.type, 'cancel');
    assert.deepEqual(adj.cancel, { identifier: id });
    assert.ok(['pending', 'complete'].includes(adj.status), adj.status);
    assert.equal(adj.livemode, false);
    assert.match(adj.created, /^\d{4}-\d\d-\d\dT/);
    await expectUsage(stripe, meter.id, c.id, BASE, BASE + HOUR, 2);
  });

  test('cancel of a stream event', async () => {
    const c = await createCustomer(stripe);
    const s = await session();
    const id = uniq('streamed');
    await streamClient(s.authentication_token).v2.billing.meterEventStream.create({
      events: [ev(c.id, '8', { identifier: id }), ev(c.id, '1')],
    });
    await expectUsage(stripe, meter.id, c.id, BASE, BASE + HOUR, 9);
    await stripe.v2.billing.meterEventAdjustments.create({
      event_name: meter.event_name, type: 'cancel', cancel: { identifier: id },
    });
    await expectUsage(stripe, meter.id, c.id, BASE, BASE + HOUR, 1);
  });
});
