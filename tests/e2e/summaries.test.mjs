// Meter event summaries: GET /v1/billing/meters/{id}/event_summaries via
// stripe.billing.meters.listEventSummaries.

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startServer, expectStripeError, expectRawError, nowSec, createMeter, createCustomer,
  eventually, floorTo, HOUR, DAY,
} from './helpers.mjs';

let srv;
let stripe;
let meter;
let c1;
let c2;
// Hour-aligned, 30 hours ago: three hours of events for c1, one for c2.
const H = floorTo(nowSec(), HOUR) - 30 * HOUR;
// Start of yesterday (UTC), for day grouping: events only for c3.
const D = floorTo(nowSec(), DAY) - DAY;
let c3;

const list = (params, meterId = meter.id) => stripe.billing.meters.listEventSummaries(meterId, params);
const send = (customer, value, timestamp) => stripe.billing.meterEvents.create({
  event_name: meter.event_name, payload: { stripe_customer_id: customer, value }, timestamp,
});

before(async () => {
  srv = await startServer();
  stripe = srv.stripe;
  meter = await createMeter(stripe, { formula: 'sum' });
  c1 = await createCustomer(stripe);
  c2 = await createCustomer(stripe);
  c3 = await createCustomer(stripe);
  await send(c1.id, '1', H);                   // first second of hour 0
  await send(c1.id, '2', H + HOUR - 1);        // last second of hour 0
  await send(c1.id, '4', H + HOUR);            // first second of hour 1
  await send(c1.id, '8', H + 2 * HOUR + 1800); // middle of hour 2
  await send(c2.id, '100', H + 60);
  await send(c3.id, '3', D + 10);
  await send(c3.id, '5', D + DAY - 1);
  // Wait until the rollups show everything (summaries may be eventually consistent).
  await eventually(async () => {
    const l = await list({ customer: c1.id, start_time: H, end_time: H + 3 * HOUR });
    return l.data.map((s) => s.aggregated_value);
  }, [15]);
});
after(async () => { await srv?.close(); });

function checkSummary(s, { start, end, value }) {
  assert.match(s.id, /^mtrusg_[A-Za-z0-9_]+$/);
  assert.equal(s.object, 'billing.meter_event_summary');
  assert.equal(s.meter, meter.id);
  assert.equal(s.livemode, false);
  assert.equal(s.start_time, start);
  assert.equal(s.end_time, end);
  assert.equal(s.aggregated_value, value);
}

describe('ungrouped', () => {
  test('one summary for the whole range', async () => {
    const l = await list({ customer: c1.id, start_time: H, end_time: H + 3 * HOUR });
    assert.equal(l.object, 'list');
    assert.equal(l.url, `/v1/billing/meters/${meter.id}/event_summaries`);
    assert.equal(l.has_more, false);
    assert.equal(l.data.length, 1);
    checkSummary(l.data[0], { start: H, end: H + 3 * HOUR, value: 15 });
  });

  test('start is inclusive, end is exclusive', async () => {
    const cases = [
      [H, H + HOUR, 3],               // both hour-0 events, not the one at H+HOUR
      [H + 60, H + HOUR + 60, 6],     // drops the event at H, includes H+HOUR-1 and H+HOUR
      [H + HOUR, H + 2 * HOUR, 4],
      [H + 2 * HOUR, H + 2 * HOUR + 1800, 0 /* end exclusive: event at +1800 not included */],
      [H + 2 * HOUR + 1800, H + 2 * HOUR + 1860, 8],
      [H - HOUR, H, 0],
    ];
    for (const [start, end, value] of cases) {
      const l = await list({ customer: c1.id, start_time: start, end_time: end });
      const got = l.data.length ? l.data[0].aggregated_value : 0;
      assert.equal(got, value, `[${start - H}, ${end - H}) relative to H`);
      assert.ok(l.data.length <= 1);
      if (l.data.length) checkSummary(l.data[0], { start, end, value });
    }
  });

  test('summaries are per customer', async () => {
    const l = await list({ customer: c2.id, start_time: H, end_time: H + 3 * HOUR });
    assert.equal(l.data.length, 1);
    checkSummary(l.data[0], { start: H, end: H + 3 * HOUR, value: 100 });
  });
});

describe('grouped', () => {
  test("value_grouping_window 'hour': one window per hour, newest first", async () => {
    const l = await list({ customer: c1.id, start_time: H, end_time: H + 3 * HOUR, value_grouping_window: 'hour' });
    assert.equal(l.has_more, false);
    assert.deepEqual(l.data.map((s) => [s.start_time - H, s.end_time - H, s.aggregated_value]), [
      [2 * HOUR, 3 * HOUR, 8],
      [HOUR, 2 * HOUR, 4],
      [0, HOUR, 3],
    ]);
    for (const s of l.data) checkSummary(s, { start: s.start_time, end: s.start_time + HOUR, value: s.aggregated_value });
    assert.equal(new Set(l.data.map((s) => s.id)).size, 3, 'ids are distinct');
  });

  test("value_grouping_window 'day' uses UTC days", async () => {
    const l = await list({ customer: c3.id, start_time: D - DAY, end_time: D + DAY, value_grouping_window: 'day' });
    const nonEmpty = l.data.filter((s) => s.aggregated_value !== 0);
    assert.deepEqual(nonEmpty.map((s) => [s.start_time, s.end_time, s.aggregated_value]), [[D, D + DAY, 8]]);
    for (const s of l.data) {
      assert.equal(s.start_time % DAY, 0);
      assert.equal(s.end_time - s.start_time, DAY);
      assert.ok(s.start_time >= D - DAY && s.end_time <= D + DAY);
    }
    const starts = l.data.map((s) => s.start_time);
    assert.deepEqual(starts, [...starts].sort((a, b) => b - a), 'newest first');
  });

  test('pagination over hourly windows: manual and auto, more than 10 windows', async () => {
    const c = await createCustomer(stripe);
    const B = H - 14 * HOUR; // 12 consecutive hours, values 1..12
    for (let i = 0; i < 12; i++) await send(c.id, String(i + 1), B + i * HOUR + 5);
    const params = { customer: c.id, start_time: B, end_time: B + 12 * HOUR, value_grouping_window: 'hour' };
    const expected = Array.from({ length: 12 }, (_, i) => [B + (11 - i) * HOUR, 12 - i]);
    await eventually(async () => {
      const all = await stripe.billing.meters.listEventSummaries(meter.id, { ...params, limit: 100 });
      return all.data.map((s) => [s.start_time, s.aggregated_value]);
    }, expected);

    const first = await stripe.billing.meters.listEventSummaries(meter.id, params);
    assert.equal(first.data.length, 10, 'default limit is 10');
    assert.equal(first.has_more, true);
    const p1 = await stripe.billing.meters.listEventSummaries(meter.id, { ...params, limit: 5 });
    assert.deepEqual(p1.data.map((s) => [s.start_time, s.aggregated_value]), expected.slice(0, 5));
    assert.equal(p1.has_more, true);
    const p2 = await stripe.billing.meters.listEventSummaries(meter.id, {
      ...params, limit: 5, starting_after: p1.data[4].id,
    });
    assert.deepEqual(p2.data.map((s) => [s.start_time, s.aggregated_value]), expected.slice(5, 10));
    const p3 = await stripe.billing.meters.listEventSummaries(meter.id, {
      ...params, limit: 5, starting_after: p2.data[4].id,
    });
    assert.deepEqual(p3.data.map((s) => [s.start_time, s.aggregated_value]), expected.slice(10));
    assert.equal(p3.has_more, false);

    const walked = [];
    for await (const s of stripe.billing.meters.listEventSummaries(meter.id, { ...params, limit: 4 })) {
      walked.push([s.start_time, s.aggregated_value]);
    }
    assert.deepEqual(walked, expected);
    // A forged cursor past any time is unknown (its window start would overflow the window
    // arithmetic), whichever side it is on.
    for (const side of ['starting_after', 'ending_before'])
      await expectStripeError(stripe.billing.meters.listEventSummaries(meter.id, {
        ...params, [side]: 'mtrusg_7fffffffffffffff00000000',
      }), { status: 404, code: 'resource_missing', param: side });
  });
});

describe('errors', () => {
  test('misaligned times are parameter_invalid', async () => {
    await expectStripeError(list({ customer: c1.id, start_time: H + 30, end_time: H + HOUR }), {
      status: 400, code: 'parameter_invalid', param: 'start_time',
    });
    await expectStripeError(list({ customer: c1.id, start_time: H, end_time: H + HOUR + 1 }), {
      status: 400, code: 'parameter_invalid', param: 'end_time',
    });
    await expectStripeError(list({
      customer: c1.id, start_time: H + 60, end_time: H + HOUR, value_grouping_window: 'hour',
    }), { status: 400, code: 'parameter_invalid', param: 'start_time' });
    await expectStripeError(list({
      customer: c1.id, start_time: H, end_time: H + HOUR + 60, value_grouping_window: 'hour',
    }), { status: 400, code: 'parameter_invalid', param: 'end_time' });
    await expectStripeError(list({
      customer: c3.id, start_time: D + HOUR, end_time: D + DAY, value_grouping_window: 'day',
    }), { status: 400, code: 'parameter_invalid', param: 'start_time' });
    await expectStripeError(list({
      customer: c3.id, start_time: D, end_time: D + DAY + HOUR, value_grouping_window: 'day',
    }), { status: 400, code: 'parameter_invalid', param: 'end_time' });
  });

  test('end before start is refused', async () => {
    const e = await expectStripeError(list({ customer: c1.id, start_time: H + HOUR, end_time: H }), {
      status: 400, code: 'parameter_invalid',
    });
    assert.ok(['start_time', 'end_time'].includes(e.param), `param ${e.param}`);
  });

  test('bad value_grouping_window is parameter_invalid', async () => {
    await expectStripeError(list({
      customer: c1.id, start_time: H, end_time: H + HOUR, value_grouping_window: 'week',
    }), { status: 400, code: 'parameter_invalid', param: 'value_grouping_window' });
  });

  test('missing required parameters are parameter_missing', async () => {
    await expectStripeError(list({ start_time: H, end_time: H + HOUR }), {
      status: 400, code: 'parameter_missing', param: 'customer',
    });
    await expectStripeError(list({ customer: c1.id, end_time: H + HOUR }), {
      status: 400, code: 'parameter_missing', param: 'start_time',
    });
    await expectStripeError(list({ customer: c1.id, start_time: H }), {
      status: 400, code: 'parameter_missing', param: 'end_time',
    });
  });

  test('non-integer time is parameter_invalid_integer', async () => {
    const r = await srv.raw('GET', `/v1/billing/meters/${meter.id}/event_summaries?customer=${c1.id}&start_time=abc&end_time=${H}`);
    expectRawError(r, { status: 400, code: 'parameter_invalid_integer', param: 'start_time' });
  });

  test('unknown meter is 404; the other mode cannot see the meter', async () => {
    await expectStripeError(list({ customer: c1.id, start_time: H, end_time: H + HOUR }, 'mtr_doesnotexist'), {
      status: 404, code: 'resource_missing', param: 'id',
    });
    await expectStripeError(srv.liveStripe.billing.meters.listEventSummaries(meter.id, {
      customer: c1.id, start_time: H, end_time: H + HOUR,
    }), { status: 404, code: 'resource_missing', param: 'id' });
  });

  test('unknown parameter is parameter_unknown', async () => {
    await expectStripeError(list({ customer: c1.id, start_time: H, end_time: H + HOUR, granularity: 'hour' }), {
      status: 400, code: 'parameter_unknown', param: 'granularity',
    });
  });
});
