// Billing meters through stripe.billing.meters.

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, expectStripeError, expectRawError, nowSec, uniq, createMeter } from './helpers.mjs';

let srv;
let stripe;
before(async () => {
  srv = await startServer();
  stripe = srv.stripe;
});
after(async () => { await srv?.close(); });

describe('create', () => {
  test('minimal create fills Stripe defaults', async () => {
    const t0 = nowSec();
    const event_name = uniq('api_calls');
    const m = await stripe.billing.meters.create({
      display_name: 'API calls',
      event_name,
      default_aggregation: { formula: 'sum' },
    });
    assert.match(m.id, /^mtr_[A-Za-z0-9_]+$/);
    assert.equal(m.object, 'billing.meter');
    assert.equal(m.display_name, 'API calls');
    assert.equal(m.event_name, event_name);
    assert.deepEqual(m.default_aggregation, { formula: 'sum' });
    assert.deepEqual(m.customer_mapping, { type: 'by_id', event_payload_key: 'stripe_customer_id' });
    assert.deepEqual(m.value_settings, { event_payload_key: 'value' });
    assert.equal(m.event_time_window, null);
    assert.equal(m.status, 'active');
    assert.deepEqual(m.status_transitions, { deactivated_at: null });
    assert.equal(m.livemode, false);
    assert.ok(Number.isInteger(m.created) && m.created >= t0 - 2 && m.created <= nowSec() + 2);
    assert.ok(Number.isInteger(m.updated) && m.updated >= m.created);
  });

  test('create with every optional field echoes them', async () => {
    const event_name = uniq('tokens');
    const m = await stripe.billing.meters.create({
      display_name: 'Tokens',
      event_name,
      default_aggregation: { formula: 'last' },
      customer_mapping: { type: 'by_id', event_payload_key: 'account' },
      value_settings: { event_payload_key: 'tokens' },
      event_time_window: 'hour',
    });
    assert.deepEqual(m.default_aggregation, { formula: 'last' });
    assert.deepEqual(m.customer_mapping, { type: 'by_id', event_payload_key: 'account' });
    assert.deepEqual(m.value_settings, { event_payload_key: 'tokens' });
    assert.equal(m.event_time_window, 'hour');
    const d = await createMeter(stripe, { formula: 'count', event_time_window: 'day' });
    assert.equal(d.event_time_window, 'day');
    assert.deepEqual(d.default_aggregation, { formula: 'count' });
  });

  test('formula sum, count and last are accepted; anything else is parameter_invalid', async () => {
    for (const formula of ['sum', 'count', 'last']) {
      const m = await createMeter(stripe, { formula });
      assert.equal(m.default_aggregation.formula, formula);
    }
    for (const formula of ['avg', 'max', 'SUM']) {
      await expectStripeError(createMeter(stripe, { formula }), {
        status: 400, code: 'parameter_invalid', param: 'default_aggregation[formula]',
      });
    }
    // An empty formula is either "missing" or "invalid"; both name the parameter.
    const e = await expectStripeError(createMeter(stripe, { formula: '' }), {
      status: 400, param: 'default_aggregation[formula]',
    });
    assert.ok(['parameter_missing', 'parameter_invalid'].includes(e.code), e.code);
  });

  test('missing required parameters are parameter_missing', async () => {
    await expectStripeError(stripe.billing.meters.create({
      event_name: uniq('e'), default_aggregation: { formula: 'sum' },
    }), { status: 400, code: 'parameter_missing', param: 'display_name' });
    await expectStripeError(stripe.billing.meters.create({
      display_name: 'x', default_aggregation: { formula: 'sum' },
    }), { status: 400, code: 'parameter_missing', param: 'event_name' });
    const err = await expectStripeError(stripe.billing.meters.create({
      display_name: 'x', event_name: uniq('e'),
    }), { status: 400, code: 'parameter_missing' });
    assert.ok(['default_aggregation', 'default_aggregation[formula]'].includes(err.param), `param ${err.param}`);
    await expectStripeError(stripe.billing.meters.create({
      display_name: 'x', event_name: uniq('e'), default_aggregation: { formula: 'sum' },
      customer_mapping: { type: 'by_id' },
    }), { status: 400, code: 'parameter_missing', param: 'customer_mapping[event_payload_key]' });
  });

  test('invalid enum values are parameter_invalid', async () => {
    await expectStripeError(createMeter(stripe, { event_time_window: 'week' }), {
      status: 400, code: 'parameter_invalid', param: 'event_time_window',
    });
    await expectStripeError(createMeter(stripe, {
      customer_mapping: { type: 'by_email', event_payload_key: 'x' },
    }), { status: 400, code: 'parameter_invalid', param: 'customer_mapping[type]' });
  });

  test('unknown parameter is parameter_unknown', async () => {
    await expectStripeError(createMeter(stripe, { colour: 'red' }), {
      status: 400, code: 'parameter_unknown', param: 'colour',
      message: /Received unknown parameter: colour/,
    });
  });

  test('length limits: display_name 250, event_name 100', async () => {
    const okName = 'd'.repeat(250);
    const m = await createMeter(stripe, { display_name: okName });
    assert.equal(m.display_name, okName);
    await expectStripeError(createMeter(stripe, { display_name: 'd'.repeat(251) }), {
      status: 400, code: 'parameter_invalid', param: 'display_name',
    });
    const ev100 = `e${uniq('')}`.padEnd(100, 'x');
    const m2 = await createMeter(stripe, { event_name: ev100 });
    assert.equal(m2.event_name, ev100);
    await expectStripeError(createMeter(stripe, { event_name: 'e'.repeat(101) }), {
      status: 400, code: 'parameter_invalid', param: 'event_name',
    });
  });

  test('a second active meter with the same event_name is resource_already_exists', async () => {
    const m = await createMeter(stripe);
    await expectStripeError(createMeter(stripe, { event_name: m.event_name }), {
      status: 400, code: 'resource_already_exists', param: 'event_name',
    });
    // Only active meters reserve the name.
    await stripe.billing.meters.deactivate(m.id);
    const again = await createMeter(stripe, { event_name: m.event_name });
    assert.equal(again.event_name, m.event_name);
    assert.notEqual(again.id, m.id);
    assert.equal(again.status, 'active');
  });
});

describe('retrieve, update, list, deactivate, reactivate', () => {
  test('retrieve returns the created meter', async () => {
    const m = await createMeter(stripe, { formula: 'count' });
    const r = await stripe.billing.meters.retrieve(m.id);
    assert.deepStrictEqual({ ...r }, { ...m });
  });

  test('unknown meter id is 404 resource_missing', async () => {
    await expectStripeError(stripe.billing.meters.retrieve('mtr_doesnotexist'), {
      status: 404, code: 'resource_missing', param: 'id', message: /mtr_doesnotexist/,
    });
    await expectStripeError(stripe.billing.meters.update('mtr_doesnotexist', { display_name: 'x' }), {
      status: 404, code: 'resource_missing', param: 'id',
    });
    await expectStripeError(stripe.billing.meters.deactivate('mtr_doesnotexist'), {
      status: 404, code: 'resource_missing', param: 'id',
    });
    await expectStripeError(stripe.billing.meters.reactivate('mtr_doesnotexist'), {
      status: 404, code: 'resource_missing', param: 'id',
    });
  });

  test('update changes display_name only', async () => {
    const m = await createMeter(stripe);
    const u = await stripe.billing.meters.update(m.id, { display_name: 'Renamed' });
    assert.equal(u.id, m.id);
    assert.equal(u.display_name, 'Renamed');
    assert.equal(u.event_name, m.event_name);
    assert.deepEqual(u.default_aggregation, m.default_aggregation);
    assert.ok(u.updated >= m.updated);
    assert.equal((await stripe.billing.meters.retrieve(m.id)).display_name, 'Renamed');
    for (const [k, v] of [['event_name', 'other'], ['event_time_window', 'day']]) {
      await expectStripeError(stripe.billing.meters.update(m.id, { [k]: v }), {
        status: 400, code: 'parameter_unknown', param: k,
      });
    }
    await expectStripeError(stripe.billing.meters.update(m.id, { default_aggregation: { formula: 'count' } }), {
      status: 400, code: 'parameter_unknown',
    });
    await expectStripeError(stripe.billing.meters.update(m.id, { display_name: 'x'.repeat(251) }), {
      status: 400, code: 'parameter_invalid', param: 'display_name',
    });
    assert.equal((await stripe.billing.meters.retrieve(m.id)).display_name, 'Renamed');
  });

  test('deactivate sets status and deactivated_at; reactivate clears it', async () => {
    const m = await createMeter(stripe);
    const t0 = nowSec();
    const d = await stripe.billing.meters.deactivate(m.id);
    assert.equal(d.id, m.id);
    assert.equal(d.status, 'inactive');
    assert.ok(Number.isInteger(d.status_transitions.deactivated_at));
    assert.ok(Math.abs(d.status_transitions.deactivated_at - t0) <= 2);
    assert.equal((await stripe.billing.meters.retrieve(m.id)).status, 'inactive');
    const r = await stripe.billing.meters.reactivate(m.id);
    assert.equal(r.status, 'active');
    assert.deepEqual(r.status_transitions, { deactivated_at: null });
    assert.equal((await stripe.billing.meters.retrieve(m.id)).status, 'active');
  });

  test('list: newest first, status filter, pagination', async () => {
    const own = await startServer();
    try {
      const s = own.stripe;
      const made = [];
      for (let i = 0; i < 5; i++) made.push((await createMeter(s)).id);
      await s.billing.meters.deactivate(made[1]);
      await s.billing.meters.deactivate(made[3]);
      const newest = [...made].reverse();

      const all = await s.billing.meters.list();
      assert.equal(all.object, 'list');
      assert.equal(all.url, '/v1/billing/meters');
      assert.equal(all.has_more, false);
      assert.deepEqual(all.data.map((m) => m.id), newest);

      const active = await s.billing.meters.list({ status: 'active' });
      assert.deepEqual(active.data.map((m) => m.id), [made[4], made[2], made[0]]);
      assert.ok(active.data.every((m) => m.status === 'active'));
      const inactive = await s.billing.meters.list({ status: 'inactive' });
      assert.deepEqual(inactive.data.map((m) => m.id), [made[3], made[1]]);
      assert.ok(inactive.data.every((m) => m.status === 'inactive'));

      const p1 = await s.billing.meters.list({ limit: 2 });
      assert.deepEqual(p1.data.map((m) => m.id), newest.slice(0, 2));
      assert.equal(p1.has_more, true);
      const p2 = await s.billing.meters.list({ limit: 2, starting_after: newest[1] });
      assert.deepEqual(p2.data.map((m) => m.id), newest.slice(2, 4));
      const walked = [];
      for await (const m of s.billing.meters.list({ limit: 2 })) walked.push(m.id);
      assert.deepEqual(walked, newest);

      await expectStripeError(s.billing.meters.list({ status: 'archived' }), {
        status: 400, code: 'parameter_invalid', param: 'status',
      });
      await expectStripeError(s.billing.meters.list({ limit: 101 }), {
        status: 400, code: 'parameter_invalid', param: 'limit',
      });
      const r = await own.raw('GET', '/v1/billing/meters?limit=x');
      expectRawError(r, { status: 400, code: 'parameter_invalid_integer', param: 'limit' });
    } finally {
      await own.close();
    }
  });

  test('meters are separate per mode', async () => {
    const m = await createMeter(stripe);
    await expectStripeError(srv.liveStripe.billing.meters.retrieve(m.id), {
      status: 404, code: 'resource_missing', param: 'id',
    });
    // The same event_name is free in the other mode.
    const lm = await createMeter(srv.liveStripe, { event_name: m.event_name });
    assert.equal(lm.livemode, true);
    assert.notEqual(lm.id, m.id);
    const liveList = await srv.liveStripe.billing.meters.list({ limit: 100 });
    assert.deepEqual(liveList.data.map((x) => x.id), [lm.id]);
  });
});

describe('meter events', () => {
  /** The events about one meter, newest first. */
  async function eventsOf(id) {
    const all = await stripe.events.list({ type: 'billing.meter.*', limit: 100 }).autoPagingToArray({ limit: 10000 });
    return all.filter((e) => e.data.object.id === id);
  }
  const strip = ({ lastResponse, ...o }) => o;

  test('created, updated, deactivated and reactivated, each only when something changed', async () => {
    const m = await stripe.billing.meters.create({
      display_name: 'Tokens', event_name: uniq('tokens'), default_aggregation: { formula: 'sum' },
    });
    let evs = await eventsOf(m.id);
    assert.deepEqual(evs.map((e) => e.type), ['billing.meter.created']);
    assert.deepEqual(evs[0].data.object, strip(m));
    assert.equal(evs[0].created, m.created);
    assert.equal(evs[0].request.id, m.lastResponse.requestId);

    const u = await stripe.billing.meters.update(m.id, { display_name: 'LLM tokens' });
    await new Promise((r) => setTimeout(r, 1100));
    const same = await stripe.billing.meters.update(m.id, { display_name: 'LLM tokens' }); // no change: no event
    assert.equal(same.updated, u.updated, 'an update that changes nothing writes nothing');
    evs = await eventsOf(m.id);
    assert.deepEqual(evs.map((e) => e.type), ['billing.meter.updated', 'billing.meter.created']);
    assert.deepEqual(evs[0].data.object, strip(u));
    assert.deepEqual(evs[0].data.previous_attributes, { display_name: 'Tokens', ...(u.updated !== m.updated ? { updated: m.updated } : {}) });

    const off = await stripe.billing.meters.deactivate(m.id);
    await new Promise((r) => setTimeout(r, 1100));
    assert.equal((await stripe.billing.meters.deactivate(m.id)).updated, off.updated, 'already inactive: nothing written, no event');
    const on = await stripe.billing.meters.reactivate(m.id);
    await stripe.billing.meters.reactivate(m.id); // already active: no event
    evs = await eventsOf(m.id);
    assert.deepEqual(evs.map((e) => e.type),
      ['billing.meter.reactivated', 'billing.meter.deactivated', 'billing.meter.updated', 'billing.meter.created']);
    assert.deepEqual(evs[1].data.object, strip(off));
    assert.equal(evs[1].data.object.status, 'inactive');
    assert.deepEqual(evs[0].data.object, strip(on));
    assert.equal(evs[0].data.object.status, 'active');

    // Refused requests record nothing.
    await expectStripeError(stripe.billing.meters.update(m.id, { display_name: '' }), { status: 400, param: 'display_name' });
    await expectStripeError(stripe.billing.meters.create({
      display_name: 'dup', event_name: m.event_name, default_aggregation: { formula: 'sum' },
    }), { status: 400 });
    assert.equal((await eventsOf(m.id)).length, 4);
    const dup = await stripe.events.list({ type: 'billing.meter.created', limit: 100 }).autoPagingToArray({ limit: 10000 });
    assert.equal(dup.filter((e) => e.data.object.display_name === 'dup').length, 0);
  });
});
