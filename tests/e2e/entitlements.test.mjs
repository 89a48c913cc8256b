// Entitlements through the official stripe client: features, product features (with
// Tollgate's usage limits), active entitlements derived from subscriptions and their summary
// events; and Tollgate's extensions through stripe.rawRequest: GET /v1/entitlements/check
// (answered from memory, never stale) and usage sessions (metered calls that hold a share of
// a hard cap, billed as meter events while they run).
//
// Every subscriber lives on its own test clock: the clock drives subscription periods and the
// time of usage sessions (created, elapsed, heartbeat timeouts), so time passes by advancing
// the clock, never by sleeping. Usage is stamped with the clock's time.

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startServer, stripeClient, expectStripeError, createMeter, uniq, usage, eventually, sleep, HOUR, DAY,
} from './helpers.mjs';

let srv;
let stripe;

const utc = (y, m, d, h = 0, mi = 0, s = 0) => Date.UTC(y, m - 1, d, h, mi, s) / 1000;
const JAN = utc(2026, 1, 1);
const FEB = utc(2026, 2, 1);
const MAR = utc(2026, 3, 1);
const SUMMARY_UPDATED = 'entitlements.active_entitlement_summary.updated';

// ---------------------------------------------------------------------------------------------
// Helpers

/** GET /v1/entitlements/check with the given query (undefined values left out). */
function check(customer, feature, quantity, client = stripe) {
  const q = new URLSearchParams();
  if (customer !== undefined) q.set('customer', customer);
  if (feature !== undefined) q.set('feature', feature);
  if (quantity !== undefined) q.set('quantity', String(quantity));
  const qs = q.toString();
  return client.rawRequest('GET', `/v1/entitlements/check${qs ? `?${qs}` : ''}`);
}

const sessions = {
  start: (params) => stripe.rawRequest('POST', '/v1/usage_sessions', params),
  get: (id) => stripe.rawRequest('GET', `/v1/usage_sessions/${id}`),
  beat: (id) => stripe.rawRequest('POST', `/v1/usage_sessions/${id}/heartbeat`, {}),
  end: (id) => stripe.rawRequest('POST', `/v1/usage_sessions/${id}/end`, {}),
};

/** Attaches a feature to a product; with a usage limit through rawRequest (an extension). */
function attach(productId, featureId, limit) {
  if (!limit) return stripe.products.createFeature(productId, { entitlement_feature: featureId });
  return stripe.rawRequest('POST', `/v1/products/${productId}/features`, {
    entitlement_feature: featureId, usage_limit: limit,
  });
}

/** A product with a monthly price and the given features ([{feature, limit?}]). */
async function plan(name, amount, features = []) {
  const product = await stripe.products.create({ name });
  const price = await stripe.prices.create({
    product: product.id, currency: 'usd', unit_amount: amount, recurring: { interval: 'month' },
  });
  const attached = [];
  for (const f of features) attached.push(await attach(product.id, f.feature.id, f.limit));
  return { product, price, attached };
}

/** A test clock frozen at t0 and a customer on it (a payment method on file unless pm: false). */
async function world(t0 = JAN, { pm = true } = {}) {
  const clock = await stripe.testHelpers.testClocks.create({ frozen_time: t0, name: uniq('ent') });
  const cus = await stripe.customers.create({
    name: 'Entitled', test_clock: clock.id,
    ...(pm ? { invoice_settings: { default_payment_method: 'pm_card_visa' } } : {}),
  });
  const w = {
    clock, cus, now: t0,
    async advance(t) {
      const k = await stripe.testHelpers.testClocks.advance(clock.id, { frozen_time: t });
      assert.equal(k.frozen_time, t);
      w.now = t;
      return k;
    },
    tick: (seconds) => w.advance(w.now + seconds),
    subscribe: (plans, extra = {}) => stripe.subscriptions.create({
      customer: cus.id, items: plans.map((p) => ({ price: p.price.id })), ...extra,
    }),
    check: (feature, quantity) => check(cus.id, feature, quantity),
    use: (meter, value, extra = {}) => stripe.billing.meterEvents.create({
      event_name: meter.event_name,
      payload: { stripe_customer_id: cus.id, value: String(value) },
      timestamp: w.now,
      ...extra,
    }),
    start: (params) => sessions.start({ customer: cus.id, ...params }),
    lookupKeys: async () => (await stripe.entitlements.activeEntitlements.list({ customer: cus.id, limit: 100 }))
      .data.map((e) => e.lookup_key).sort(),
  };
  return w;
}

async function summaryEvents(customer) {
  const all = await stripe.events.list({ type: SUMMARY_UPDATED, limit: 100 }).autoPagingToArray({ limit: 10000 });
  return all.filter((e) => e.data.object.customer === customer).reverse(); // oldest first
}

const eventKeys = (e) => e.data.object.entitlements.data.map((x) => x.lookup_key).sort();

/** The limit object of a check, as a plain object. */
const limitOf = (r) => (r.limit === null ? null : { ...r.limit });

/** What a 402 from Tollgate carries. */
async function expectPaymentRequired(promise, code) {
  const err = await expectStripeError(promise, { status: 402, code, param: 'feature' });
  assert.equal(err.raw.upgrade, true, `error.upgrade: ${JSON.stringify(err.raw)}`);
  return err;
}

// ---------------------------------------------------------------------------------------------
// The catalog most scenarios use.

const cat = {};
before(async () => {
  srv = await startServer();
  stripe = srv.stripe;
  cat.seconds = await createMeter(stripe, { display_name: 'Call seconds' });
  cat.minutes = await createMeter(stripe, { display_name: 'Call minutes' });
  cat.tokens = await createMeter(stripe, { display_name: 'Tokens' });
  cat.calls = await createMeter(stripe, { display_name: 'API calls', formula: 'count' });
  cat.last = await createMeter(stripe, { display_name: 'Seats (last)', formula: 'last' });

  const feat = (name, lookup_key) => stripe.entitlements.features.create({ name, lookup_key });
  cat.fSso = await feat('SSO', 'sso');
  cat.fAudit = await feat('Audit log', 'audit_log');
  cat.fTokens = await feat('Tokens', 'tokens');
  cat.fSoft = await feat('Tokens (soft)', 'tokens_soft');
  cat.fCallSec = await feat('Calls by the second', 'call_seconds');
  cat.fCallMin = await feat('Calls by the minute', 'call_minutes');
  cat.fCallFree = await feat('Unmetered calls', 'call_free');
  cat.fSoftCall = await feat('Calls (soft cap)', 'call_soft');

  cat.basic = await plan('Basic', 1000, [{ feature: cat.fSso }]);
  cat.tokenPlan = await plan('Tokens 1000', 2000, [
    { feature: cat.fTokens, limit: { meter: cat.tokens.id, quantity: '1000' } },
  ]);
  cat.softPlan = await plan('Tokens soft 10', 2000, [
    { feature: cat.fSoft, limit: { meter: cat.tokens.id, quantity: '10', enforcement: 'soft' } },
  ]);
  cat.callSecPlan = await plan('Calls 100 s', 3000, [
    { feature: cat.fCallSec, limit: { meter: cat.seconds.id, quantity: '100' } },
  ]);
  cat.callMinPlan = await plan('Calls 5 min', 3000, [
    { feature: cat.fCallMin, limit: { meter: cat.minutes.id, quantity: '5' } },
  ]);
  cat.callFreePlan = await plan('Calls unmetered', 3000, [{ feature: cat.fCallFree }]);
  cat.callSoftPlan = await plan('Calls soft 10 s', 3000, [
    { feature: cat.fSoftCall, limit: { meter: cat.seconds.id, quantity: '10', enforcement: 'soft' } },
  ]);
});
after(async () => { await srv?.close(); });

// =============================================================================================
// 1. Features

describe('features', () => {
  test('create returns the feature; name and lookup_key are required', async () => {
    const key = uniq('voice');
    const f = await stripe.entitlements.features.create({ name: 'Voice minutes', lookup_key: key, metadata: { tier: 'a' } });
    assert.match(f.id, /^feat_[A-Za-z0-9]+$/);
    assert.deepEqual({ ...f }, {
      id: f.id, object: 'entitlements.feature', active: true, livemode: false,
      lookup_key: key, metadata: { tier: 'a' }, name: 'Voice minutes',
    });
    await expectStripeError(stripe.entitlements.features.create({ lookup_key: uniq('k') }), {
      status: 400, code: 'parameter_missing', param: 'name',
    });
    await expectStripeError(stripe.entitlements.features.create({ name: 'No key' }), {
      status: 400, code: 'parameter_missing', param: 'lookup_key',
    });
    await expectStripeError(stripe.entitlements.features.create({ name: 'x'.repeat(81), lookup_key: uniq('k') }), {
      status: 400, param: 'name',
    });
    await expectStripeError(stripe.entitlements.features.create({ name: 'Long key', lookup_key: 'k'.repeat(81) }), {
      status: 400, param: 'lookup_key',
    });
    await expectStripeError(stripe.entitlements.features.create({ name: 'x', lookup_key: uniq('k'), colour: 'red' }), {
      status: 400, code: 'parameter_unknown', param: 'colour',
    });
    // 80 characters is the most.
    const long = await stripe.entitlements.features.create({ name: 'n'.repeat(80), lookup_key: `${uniq('k')}`.padEnd(80, 'z') });
    assert.equal(long.lookup_key.length, 80);
    assert.equal(long.name.length, 80);
  });

  test('an active lookup key cannot be reused; an archived feature frees it', async () => {
    const key = uniq('dup');
    const a = await stripe.entitlements.features.create({ name: 'A', lookup_key: key });
    await expectStripeError(stripe.entitlements.features.create({ name: 'B', lookup_key: key }), {
      status: 400, code: 'resource_already_exists', param: 'lookup_key',
    });
    const archived = await stripe.entitlements.features.update(a.id, { active: false });
    assert.equal(archived.active, false);
    const c = await stripe.entitlements.features.create({ name: 'C', lookup_key: key });
    assert.notEqual(c.id, a.id);
    assert.equal(c.active, true);
    assert.equal(c.lookup_key, key);
    // The archived one keeps its key; the new active one blocks it again.
    const again = await stripe.entitlements.features.retrieve(a.id);
    assert.equal(again.lookup_key, key);
    assert.equal(again.active, false);
    await expectStripeError(stripe.entitlements.features.create({ name: 'D', lookup_key: key }), {
      status: 400, code: 'resource_already_exists', param: 'lookup_key',
    });
  });

  test('retrieve; unknown ids are 404; test features are not visible in live mode', async () => {
    const f = await stripe.entitlements.features.create({ name: 'Retrieve me', lookup_key: uniq('r'), metadata: { a: '1' } });
    assert.deepEqual({ ...(await stripe.entitlements.features.retrieve(f.id)) }, { ...f });
    await expectStripeError(stripe.entitlements.features.retrieve('feat_doesnotexist'), {
      status: 404, code: 'resource_missing', param: 'id',
    });
    await expectStripeError(srv.liveStripe.entitlements.features.retrieve(f.id), {
      status: 404, code: 'resource_missing',
    });
  });

  test('update: name, metadata; active=false archives for good', async () => {
    const key = uniq('upd');
    const f = await stripe.entitlements.features.create({ name: 'Before', lookup_key: key, metadata: { a: '1' } });
    const named = await stripe.entitlements.features.update(f.id, { name: 'After' });
    assert.deepEqual({ ...named }, { ...f, name: 'After' });
    const merged = await stripe.entitlements.features.update(f.id, { metadata: { b: '2' } });
    assert.deepEqual(merged.metadata, { a: '1', b: '2' });
    const unset = await stripe.entitlements.features.update(f.id, { metadata: { a: '' } });
    assert.deepEqual(unset.metadata, { b: '2' });
    const cleared = await stripe.entitlements.features.update(f.id, { metadata: '' });
    assert.deepEqual(cleared.metadata, {});
    // active=true on an active feature changes nothing.
    const still = await stripe.entitlements.features.update(f.id, { active: true });
    assert.equal(still.active, true);
    // The lookup key is fixed.
    await expectStripeError(stripe.entitlements.features.update(f.id, { lookup_key: uniq('other') }), {
      status: 400, code: 'parameter_unknown', param: 'lookup_key',
    });
    const archived = await stripe.entitlements.features.update(f.id, { active: false });
    assert.deepEqual({ ...archived }, { ...f, name: 'After', metadata: {}, active: false });
    await expectStripeError(stripe.entitlements.features.update(f.id, { active: true }), {
      status: 400, code: 'resource_state_invalid', param: 'active',
    });
    assert.equal((await stripe.entitlements.features.retrieve(f.id)).active, false);
    await expectStripeError(stripe.entitlements.features.update('feat_doesnotexist', { name: 'x' }), {
      status: 404, code: 'resource_missing', param: 'id',
    });
  });
});

describe('features: list', () => {
  let p;
  let ps;
  const f = [];
  before(async () => {
    p = await startServer();
    ps = p.stripe;
    for (let i = 0; i < 5; i++) f.push(await ps.entitlements.features.create({ name: `F${i}`, lookup_key: `list_${i}` }));
    await ps.entitlements.features.update(f[1].id, { active: false });
    await ps.entitlements.features.update(f[3].id, { active: false });
    // A new feature with f1's (now archived) lookup key.
    f.push(await ps.entitlements.features.create({ name: 'F5', lookup_key: 'list_1' }));
  });
  after(async () => { await p?.close(); });
  const ids = (l) => l.data.map((x) => x.id);

  test('active features only by default, newest first; archived=true lists the archived ones', async () => {
    const l = await ps.entitlements.features.list({ limit: 100 });
    assert.equal(l.object, 'list');
    assert.equal(l.url, '/v1/entitlements/features');
    assert.equal(l.has_more, false);
    assert.deepEqual(ids(l), [f[5].id, f[4].id, f[2].id, f[0].id]);
    assert.deepEqual(ids(await ps.entitlements.features.list({ archived: false, limit: 100 })), ids(l));
    const a = await ps.entitlements.features.list({ archived: true, limit: 100 });
    assert.deepEqual(ids(a), [f[3].id, f[1].id]);
    assert.ok(a.data.every((x) => x.active === false));
  });

  test('lookup_key filter', async () => {
    assert.deepEqual(ids(await ps.entitlements.features.list({ lookup_key: 'list_2' })), [f[2].id]);
    assert.deepEqual(ids(await ps.entitlements.features.list({ lookup_key: 'list_1' })), [f[5].id]);
    assert.deepEqual(ids(await ps.entitlements.features.list({ lookup_key: 'list_1', archived: true })), [f[1].id]);
    assert.deepEqual(ids(await ps.entitlements.features.list({ lookup_key: 'list_3' })), []);
    assert.deepEqual(ids(await ps.entitlements.features.list({ lookup_key: 'nope' })), []);
  });

  test('pagination: limit, starting_after, ending_before, auto-paging; bad limits', async () => {
    const first = await ps.entitlements.features.list({ limit: 2 });
    assert.deepEqual(ids(first), [f[5].id, f[4].id]);
    assert.equal(first.has_more, true);
    const second = await ps.entitlements.features.list({ limit: 2, starting_after: f[4].id });
    assert.deepEqual(ids(second), [f[2].id, f[0].id]);
    assert.equal(second.has_more, false);
    const back = await ps.entitlements.features.list({ limit: 2, ending_before: f[0].id });
    assert.deepEqual(ids(back), [f[4].id, f[2].id]);
    assert.equal(back.has_more, true);
    const walked = await ps.entitlements.features.list({ limit: 1 }).autoPagingToArray({ limit: 100 });
    assert.deepEqual(walked.map((x) => x.id), [f[5].id, f[4].id, f[2].id, f[0].id]);
    const arch = await ps.entitlements.features.list({ archived: true, limit: 1 });
    assert.deepEqual(ids(arch), [f[3].id]);
    assert.equal(arch.has_more, true);
    const arch2 = await ps.entitlements.features.list({ archived: true, limit: 1, starting_after: f[3].id });
    assert.deepEqual(ids(arch2), [f[1].id]);
    assert.equal(arch2.has_more, false);
    await expectStripeError(ps.rawRequest('GET', '/v1/entitlements/features?archived=maybe'), { status: 400, param: 'archived' });
    await expectStripeError(ps.entitlements.features.list({ limit: 0 }), { status: 400, param: 'limit' });
    await expectStripeError(ps.entitlements.features.list({ limit: 101 }), { status: 400, param: 'limit' });
  });
});

// =============================================================================================
// 2. Product features

describe('product features', () => {
  test('attach, list, retrieve, delete', async () => {
    const prod = await stripe.products.create({ name: 'Attach' });
    const a = await stripe.entitlements.features.create({ name: 'A', lookup_key: uniq('pfa') });
    const b = await stripe.entitlements.features.create({ name: 'B', lookup_key: uniq('pfb') });
    const c = await stripe.entitlements.features.create({ name: 'C', lookup_key: uniq('pfc') });
    const pa = await stripe.products.createFeature(prod.id, { entitlement_feature: a.id });
    assert.match(pa.id, /^prodft_[A-Za-z0-9]+$/);
    assert.deepEqual(JSON.parse(JSON.stringify(pa)), {
      id: pa.id, object: 'product_feature', entitlement_feature: { ...a }, livemode: false, usage_limit: null,
    });
    const pb = await attach(prod.id, b.id, { meter: cat.minutes.id, quantity: '600' });
    assert.deepEqual(pb.usage_limit, { enforcement: 'hard', meter: cat.minutes.id, quantity: '600' });
    assert.deepEqual({ ...pb.entitlement_feature }, { ...b });
    const pc = await attach(prod.id, c.id, { meter: cat.tokens.id, quantity: '2.5', enforcement: 'soft' });
    assert.deepEqual(pc.usage_limit, { enforcement: 'soft', meter: cat.tokens.id, quantity: '2.5' });

    const l = await stripe.products.listFeatures(prod.id, { limit: 100 });
    assert.equal(l.object, 'list');
    assert.equal(l.url, `/v1/products/${prod.id}/features`);
    assert.equal(l.has_more, false);
    assert.deepEqual(l.data.map((x) => x.id), [pc.id, pb.id, pa.id]);
    assert.deepEqual(JSON.parse(JSON.stringify(l.data[1])), JSON.parse(JSON.stringify(pb)));
    const page = await stripe.products.listFeatures(prod.id, { limit: 2 });
    assert.deepEqual(page.data.map((x) => x.id), [pc.id, pb.id]);
    assert.equal(page.has_more, true);
    const rest = await stripe.products.listFeatures(prod.id, { limit: 2, starting_after: pb.id });
    assert.deepEqual(rest.data.map((x) => x.id), [pa.id]);
    assert.equal(rest.has_more, false);

    const got = await stripe.products.retrieveFeature(prod.id, pb.id);
    assert.deepEqual(JSON.parse(JSON.stringify(got)), JSON.parse(JSON.stringify(pb)));
    // The feature is shown as it is now.
    await stripe.entitlements.features.update(a.id, { name: 'A renamed' });
    assert.equal((await stripe.products.retrieveFeature(prod.id, pa.id)).entitlement_feature.name, 'A renamed');

    const del = await stripe.products.deleteFeature(prod.id, pa.id);
    assert.deepEqual({ ...del }, { id: pa.id, object: 'product_feature', deleted: true });
    await expectStripeError(stripe.products.retrieveFeature(prod.id, pa.id), { status: 404, code: 'resource_missing' });
    await expectStripeError(stripe.products.deleteFeature(prod.id, pa.id), { status: 404, code: 'resource_missing' });
    assert.deepEqual((await stripe.products.listFeatures(prod.id)).data.map((x) => x.id), [pc.id, pb.id]);
    // Detached, the feature can be attached again.
    const again = await stripe.products.createFeature(prod.id, { entitlement_feature: a.id });
    assert.notEqual(again.id, pa.id);

    // A product feature is found only under its own product.
    const other = await stripe.products.create({ name: 'Other' });
    await expectStripeError(stripe.products.retrieveFeature(other.id, pb.id), { status: 404, code: 'resource_missing' });
    await expectStripeError(stripe.products.deleteFeature(other.id, pb.id), { status: 404, code: 'resource_missing' });
    await expectStripeError(stripe.products.retrieveFeature(prod.id, 'prodft_doesnotexist'), { status: 404, code: 'resource_missing' });
    assert.deepEqual((await stripe.products.listFeatures(other.id)).data, []);
    await expectStripeError(stripe.products.listFeatures('prod_doesnotexist'), { status: 404, code: 'resource_missing' });
  });

  test('attach errors: unknown product or feature, archived feature, the same feature twice', async () => {
    const prod = await stripe.products.create({ name: 'Attach errors' });
    const f = await stripe.entitlements.features.create({ name: 'F', lookup_key: uniq('pfe') });
    await expectStripeError(stripe.products.createFeature('prod_doesnotexist', { entitlement_feature: f.id }), {
      status: 404, code: 'resource_missing',
    });
    await expectStripeError(stripe.products.createFeature(prod.id, { entitlement_feature: 'feat_doesnotexist' }), {
      status: 404, code: 'resource_missing', param: 'entitlement_feature',
    });
    await expectStripeError(stripe.rawRequest('POST', `/v1/products/${prod.id}/features`, {}), {
      status: 400, code: 'parameter_missing', param: 'entitlement_feature',
    });
    const archived = await stripe.entitlements.features.create({ name: 'Old', lookup_key: uniq('pfold') });
    await stripe.entitlements.features.update(archived.id, { active: false });
    await expectStripeError(stripe.products.createFeature(prod.id, { entitlement_feature: archived.id }), {
      status: 400, code: 'resource_state_invalid', param: 'entitlement_feature',
    });
    await stripe.products.createFeature(prod.id, { entitlement_feature: f.id });
    await expectStripeError(stripe.products.createFeature(prod.id, { entitlement_feature: f.id }), {
      status: 400, code: 'resource_already_exists', param: 'entitlement_feature',
    });
    // Also when the second attach carries a limit.
    await expectStripeError(attach(prod.id, f.id, { meter: cat.tokens.id, quantity: '5' }), {
      status: 400, code: 'resource_already_exists', param: 'entitlement_feature',
    });
    assert.equal((await stripe.products.listFeatures(prod.id)).data.length, 1);
  });

  test('the same feature twice is refused on a product with more than 100 features', async () => {
    const prod = await stripe.products.create({ name: 'Many features' });
    const feats = [];
    for (let i = 0; i < 102; i++) {
      const f = await stripe.entitlements.features.create({ name: `F${i}`, lookup_key: uniq('many') });
      await stripe.products.createFeature(prod.id, { entitlement_feature: f.id });
      feats.push(f);
    }
    for (const f of [feats[0], feats[1], feats[100], feats[101]]) {
      await expectStripeError(stripe.products.createFeature(prod.id, { entitlement_feature: f.id }), {
        status: 400, code: 'resource_already_exists', param: 'entitlement_feature',
      });
    }
    const all = await stripe.products.listFeatures(prod.id, { limit: 100 }).autoPagingToArray({ limit: 1000 });
    assert.equal(all.length, 102);
  });

  test('usage_limit validation; enforcement defaults to hard', async () => {
    const prod = await stripe.products.create({ name: 'Limits' });
    const f = await stripe.entitlements.features.create({ name: 'Limited', lookup_key: uniq('lim') });
    const bad = (usage_limit) => stripe.rawRequest('POST', `/v1/products/${prod.id}/features`, {
      entitlement_feature: f.id, usage_limit,
    });
    await expectStripeError(bad({ meter: 'mtr_doesnotexist', quantity: '10' }), {
      status: 404, code: 'resource_missing', param: 'usage_limit[meter]',
    });
    await expectStripeError(bad({ meter: cat.last.id, quantity: '10' }), {
      status: 400, code: 'parameter_invalid', param: 'usage_limit[meter]',
    });
    const windowed = await createMeter(stripe, { event_time_window: 'day' });
    await expectStripeError(bad({ meter: windowed.id, quantity: '10' }), {
      status: 400, code: 'parameter_invalid', param: 'usage_limit[meter]',
    });
    for (const q of ['ten', '-1', '1.2.3', '1e3', '1.0000000000001', '']) {
      await expectStripeError(bad({ meter: cat.tokens.id, quantity: q }), {
        status: 400, param: 'usage_limit[quantity]',
      });
    }
    await expectStripeError(bad({ meter: cat.tokens.id }), {
      status: 400, code: 'parameter_missing', param: 'usage_limit[quantity]',
    });
    await expectStripeError(bad({ quantity: '10' }), {
      status: 400, code: 'parameter_missing', param: 'usage_limit[meter]',
    });
    await expectStripeError(bad({ meter: cat.tokens.id, quantity: '10', enforcement: 'sometimes' }), {
      status: 400, code: 'parameter_invalid', param: 'usage_limit[enforcement]',
    });
    await expectStripeError(bad('10'), { status: 400, param: 'usage_limit' });
    // Nothing was attached by the refusals.
    assert.deepEqual((await stripe.products.listFeatures(prod.id)).data, []);

    const ok = await bad({ meter: cat.tokens.id, quantity: '12.000000000001' });
    assert.deepEqual(ok.usage_limit, { enforcement: 'hard', meter: cat.tokens.id, quantity: '12.000000000001' });
    // A count meter adds up too; quantity 0 is a limit of nothing.
    const prod2 = await stripe.products.create({ name: 'Limits 2' });
    const counted = await attach(prod2.id, f.id, { meter: cat.calls.id, quantity: '0', enforcement: 'hard' });
    assert.deepEqual(counted.usage_limit, { enforcement: 'hard', meter: cat.calls.id, quantity: '0' });
  });
});

// =============================================================================================
// 3. Active entitlements

describe('active entitlements', () => {
  test('none before subscribing; an active subscription grants its products\' features', async () => {
    const w = await world();
    const empty = await stripe.entitlements.activeEntitlements.list({ customer: w.cus.id });
    assert.equal(empty.object, 'list');
    assert.equal(empty.url, '/v1/entitlements/active_entitlements');
    assert.deepEqual(empty.data, []);
    assert.equal(empty.has_more, false);
    assert.equal((await w.check('sso')).entitled, false);

    const sub = await w.subscribe([cat.basic]);
    assert.equal(sub.status, 'active');
    const l = await stripe.entitlements.activeEntitlements.list({ customer: w.cus.id });
    assert.equal(l.data.length, 1);
    const e = l.data[0];
    assert.match(e.id, /^ent_/);
    assert.deepEqual({ ...e }, {
      id: e.id, object: 'entitlements.active_entitlement', feature: cat.fSso.id, livemode: false, lookup_key: 'sso',
    });
    assert.deepEqual({ ...(await stripe.entitlements.activeEntitlements.retrieve(e.id)) }, { ...e });

    // Another customer's id for the same feature is not this one; unknown ids are 404.
    const w2 = await world();
    await w2.subscribe([cat.basic]);
    const e2 = (await stripe.entitlements.activeEntitlements.list({ customer: w2.cus.id })).data[0];
    assert.notEqual(e2.id, e.id);
    for (const id of ['ent_doesnotexist', 'ent_x_y', 'entitlement', `${e.id}x`]) {
      await expectStripeError(stripe.entitlements.activeEntitlements.retrieve(id), {
        status: 404, code: 'resource_missing', param: 'id',
      });
    }
    // The customer's entitlement in live mode does not exist.
    await expectStripeError(srv.liveStripe.entitlements.activeEntitlements.retrieve(e.id), { status: 404 });
  });

  test('list requires a known customer; pagination', async () => {
    await expectStripeError(stripe.entitlements.activeEntitlements.list({}), {
      status: 400, code: 'parameter_missing', param: 'customer',
    });
    await expectStripeError(stripe.entitlements.activeEntitlements.list({ customer: 'cus_doesnotexist' }), {
      status: 404, code: 'resource_missing', param: 'customer',
    });
    const gone = await stripe.customers.create({ name: 'Gone' });
    await stripe.customers.del(gone.id);
    await expectStripeError(stripe.entitlements.activeEntitlements.list({ customer: gone.id }), {
      status: 404, code: 'resource_missing', param: 'customer',
    });

    const w = await world();
    const three = await plan('Three features', 1000, [{ feature: cat.fSso }, { feature: cat.fAudit }, { feature: cat.fTokens }]);
    await w.subscribe([three]);
    const all = (await stripe.entitlements.activeEntitlements.list({ customer: w.cus.id, limit: 100 })).data;
    assert.deepEqual(all.map((x) => x.lookup_key).sort(), ['audit_log', 'sso', 'tokens']);
    const p1 = await stripe.entitlements.activeEntitlements.list({ customer: w.cus.id, limit: 2 });
    assert.deepEqual(p1.data.map((x) => x.id), all.slice(0, 2).map((x) => x.id));
    assert.equal(p1.has_more, true);
    const p2 = await stripe.entitlements.activeEntitlements.list({ customer: w.cus.id, limit: 2, starting_after: all[1].id });
    assert.deepEqual(p2.data.map((x) => x.id), [all[2].id]);
    assert.equal(p2.has_more, false);
    const walked = await stripe.entitlements.activeEntitlements.list({ customer: w.cus.id, limit: 1 }).autoPagingToArray({ limit: 10 });
    assert.deepEqual(walked.map((x) => x.id), all.map((x) => x.id));
    const back = await stripe.entitlements.activeEntitlements.list({ customer: w.cus.id, limit: 1, ending_before: all[2].id });
    assert.deepEqual(back.data.map((x) => x.id), [all[1].id]);
    assert.equal(back.has_more, true);
    await expectStripeError(stripe.entitlements.activeEntitlements.list({ customer: w.cus.id, starting_after: 'ent_doesnotexist' }), {
      status: 404, param: 'starting_after',
    });
  });

  test('trialing grants; a trial ending paused (no payment method) revokes, a resume grants again', async () => {
    const TRIAL_END = JAN + 14 * DAY;
    const w = await world(JAN, { pm: false });
    const sub = await w.subscribe([cat.basic], {
      trial_period_days: 14, trial_settings: { end_behavior: { missing_payment_method: 'pause' } },
    });
    assert.equal(sub.status, 'trialing');
    assert.deepEqual(await w.lookupKeys(), ['sso']);
    const c = await w.check('sso');
    assert.equal(c.entitled, true);
    await w.advance(TRIAL_END + 2 * HOUR);
    assert.equal((await stripe.subscriptions.retrieve(sub.id)).status, 'paused');
    assert.deepEqual(await w.lookupKeys(), []);
    assert.equal((await w.check('sso')).reason, 'no_entitlement');
    await stripe.subscriptions.resume(sub.id, { billing_cycle_anchor: 'now' });
    assert.deepEqual(await w.lookupKeys(), ['sso']);
  });

  test('a trial ending canceled (no payment method) revokes', async () => {
    const w = await world(JAN, { pm: false });
    const sub = await w.subscribe([cat.basic], {
      trial_period_days: 14, trial_settings: { end_behavior: { missing_payment_method: 'cancel' } },
    });
    assert.deepEqual(await w.lookupKeys(), ['sso']);
    await w.advance(JAN + 14 * DAY + 2 * HOUR);
    assert.equal((await stripe.subscriptions.retrieve(sub.id)).status, 'canceled');
    assert.deepEqual(await w.lookupKeys(), []);
    assert.equal((await w.check('sso')).entitled, false);
  });

  test('past_due still grants (a charge_automatically invoice finalized without a payment method)', async () => {
    const w = await world(JAN, { pm: false });
    const sub = await w.subscribe([cat.basic, cat.tokenPlan]);
    await w.advance(FEB + HOUR + 60);
    assert.equal((await stripe.subscriptions.retrieve(sub.id)).status, 'past_due');
    assert.deepEqual(await w.lookupKeys(), ['sso', 'tokens']);
    const c = await w.check('tokens');
    assert.equal(c.entitled, true);
    assert.equal(c.limit.period_start, FEB);
    assert.equal(c.limit.period_end, MAR);
  });

  test('an archived feature still grants where it is attached', async () => {
    const f = await stripe.entitlements.features.create({ name: 'Legacy', lookup_key: uniq('legacy') });
    const p = await plan('Legacy plan', 1000, [{ feature: f }]);
    const w = await world();
    await w.subscribe([p]);
    await stripe.entitlements.features.update(f.id, { active: false });
    assert.deepEqual(await w.lookupKeys(), [f.lookup_key]);
    assert.equal((await w.check(f.lookup_key)).entitled, true);
  });

  test('canceling revokes at once', async () => {
    const w = await world();
    const sub = await w.subscribe([cat.basic]);
    assert.deepEqual(await w.lookupKeys(), ['sso']);
    await stripe.subscriptions.cancel(sub.id);
    assert.deepEqual(await w.lookupKeys(), []);
    assert.equal((await w.check('sso')).reason, 'no_entitlement');
  });

  test('attaching or detaching a feature changes every subscriber\'s entitlements at once', async () => {
    const p = await plan('Changing', 1000);
    const a = await world();
    const b = await world(FEB);
    const gone = await world();
    await a.subscribe([p]);
    await b.subscribe([p]);
    const gs = await gone.subscribe([p]);
    await stripe.subscriptions.cancel(gs.id);
    assert.deepEqual(await a.lookupKeys(), []);
    const pf = await stripe.products.createFeature(p.product.id, { entitlement_feature: cat.fAudit.id });
    assert.deepEqual(await a.lookupKeys(), ['audit_log']);
    assert.deepEqual(await b.lookupKeys(), ['audit_log']);
    assert.deepEqual(await gone.lookupKeys(), []);
    assert.equal((await a.check('audit_log')).entitled, true);
    await stripe.products.deleteFeature(p.product.id, pf.id);
    assert.deepEqual(await a.lookupKeys(), []);
    assert.deepEqual(await b.lookupKeys(), []);
    assert.equal((await b.check('audit_log')).reason, 'no_entitlement');
  });

  test('summary events when the set of features changes, and only then', async () => {
    const p = await plan('Evented', 1000, [{ feature: cat.fSso }]);
    const also = await plan('Also SSO', 500, [{ feature: cat.fSso }]);
    const w = await world();
    assert.deepEqual(await summaryEvents(w.cus.id), []);
    const sub = await w.subscribe([p]);
    let ev = await summaryEvents(w.cus.id);
    assert.equal(ev.length, 1);
    assert.equal(ev[0].type, SUMMARY_UPDATED);
    const obj = ev[0].data.object;
    assert.equal(obj.object, 'entitlements.active_entitlement_summary');
    assert.equal(obj.customer, w.cus.id);
    assert.equal(obj.livemode, false);
    assert.equal(obj.entitlements.object, 'list');
    assert.deepEqual(obj.entitlements.data.map((e) => ({ ...e })), [{
      id: obj.entitlements.data[0].id, object: 'entitlements.active_entitlement', feature: cat.fSso.id,
      livemode: false, lookup_key: 'sso',
    }]);
    assert.equal((await stripe.events.retrieve(ev[0].id)).id, ev[0].id);

    // Changes that leave the set alone: metadata, a second product with the same feature, a renewal.
    await stripe.subscriptions.update(sub.id, { metadata: { x: '1' } });
    await stripe.subscriptions.update(sub.id, { items: [{ price: also.price.id }] });
    assert.deepEqual(await w.lookupKeys(), ['sso']);
    await w.advance(FEB + 2 * HOUR);
    assert.equal((await summaryEvents(w.cus.id)).length, 1);

    // A feature attached to the product: one event with both.
    const pf = await stripe.products.createFeature(p.product.id, { entitlement_feature: cat.fAudit.id });
    ev = await summaryEvents(w.cus.id);
    assert.equal(ev.length, 2);
    assert.deepEqual(eventKeys(ev[1]), ['audit_log', 'sso']);
    // Detached from the product: back to sso.
    await stripe.products.deleteFeature(p.product.id, pf.id);
    ev = await summaryEvents(w.cus.id);
    assert.equal(ev.length, 3);
    assert.deepEqual(eventKeys(ev[2]), ['sso']);
    // Canceled: nothing.
    await stripe.subscriptions.cancel(sub.id);
    ev = await summaryEvents(w.cus.id);
    assert.equal(ev.length, 4);
    assert.deepEqual(eventKeys(ev[3]), []);
  });
});

// =============================================================================================
// 4. GET /v1/entitlements/check

describe('entitlement check', () => {
  test('no_entitlement; entitled without a limit; errors', async () => {
    const w = await world();
    assert.deepEqual({ ...(await w.check('sso')) }, {
      object: 'entitlements.check', customer: w.cus.id, feature: 'sso', entitled: false, limit: null,
      livemode: false, reason: 'no_entitlement',
    });
    await w.subscribe([cat.basic]);
    assert.deepEqual({ ...(await w.check('sso')) }, {
      object: 'entitlements.check', customer: w.cus.id, feature: 'sso', entitled: true, limit: null,
      livemode: false, reason: null,
    });
    // Without a limit any quantity is fine.
    assert.equal((await w.check('sso', '1000000000')).entitled, true);
    assert.equal((await w.check('tokens')).reason, 'no_entitlement');
    assert.equal((await w.check('no_such_feature')).reason, 'no_entitlement');
    // Errors.
    await expectStripeError(check('cus_doesnotexist', 'sso'), { status: 404, code: 'resource_missing', param: 'customer' });
    const gone = await stripe.customers.create({ name: 'Gone' });
    await stripe.customers.del(gone.id);
    await expectStripeError(check(gone.id, 'sso'), { status: 404, code: 'resource_missing', param: 'customer' });
    await expectStripeError(check(undefined, 'sso'), { status: 400, code: 'parameter_missing', param: 'customer' });
    await expectStripeError(check(w.cus.id, undefined), { status: 400, code: 'parameter_missing', param: 'feature' });
    for (const q of ['abc', '-1', '1e2']) {
      await expectStripeError(check(w.cus.id, 'sso', q), { status: 400, param: 'quantity' });
    }
    // Test-mode customers are unknown in live mode.
    await expectStripeError(check(w.cus.id, 'sso', undefined, srv.liveStripe), { status: 404, code: 'resource_missing' });
  });

  test('a hard limit: used, remaining and the period, exact, never stale; quantity=N; at the cap', async () => {
    const w = await world();
    const sub = await w.subscribe([cat.tokenPlan]);
    const lim = (used, remaining) => ({
      enforcement: 'hard', meter: cat.tokens.id, period_end: FEB, period_start: JAN,
      quantity: '1000', remaining, reserved: '0', used,
    });
    const c0 = await w.check('tokens');
    assert.deepEqual({ ...c0, limit: limitOf(c0) }, {
      object: 'entitlements.check', customer: w.cus.id, feature: 'tokens', entitled: true,
      limit: lim('0', '1000'), livemode: false, reason: null,
    });
    assert.equal(sub.items.data[0].current_period_start, JAN);
    assert.equal(sub.items.data[0].current_period_end, FEB);

    await w.advance(JAN + 3 * DAY);
    // Each event acknowledged is in the very next check.
    const steps = [['1', '1', '999'], ['2.5', '3.5', '996.5'], ['100', '103.5', '896.5'],
      ['0.000000000001', '103.500000000001', '896.499999999999'], ['296.499999999999', '400', '600']];
    for (const [v, used, remaining] of steps) {
      await w.use(cat.tokens, v);
      assert.deepEqual(limitOf(await w.check('tokens')), lim(used, remaining), `after ${v}`);
    }
    // Other customers' usage and other meters do not count.
    const other = await world(JAN + 3 * DAY);
    await other.use(cat.tokens, 50);
    await w.use(cat.seconds, 50);
    assert.equal((await w.check('tokens')).limit.used, '400');

    // quantity=N: allowed when used + N <= quantity.
    let r = await w.check('tokens', '600');
    assert.equal(r.entitled, true);
    assert.equal(r.reason, null);
    r = await w.check('tokens', '600.000000000001');
    assert.equal(r.entitled, false);
    assert.equal(r.reason, 'limit_reached');
    assert.equal(r.limit.remaining, '600');
    assert.equal((await w.check('tokens', '0')).entitled, true);

    // At the cap exactly: not entitled.
    await w.use(cat.tokens, '600');
    r = await w.check('tokens');
    assert.deepEqual({ entitled: r.entitled, reason: r.reason, limit: limitOf(r) }, {
      entitled: false, reason: 'limit_reached', limit: lim('1000', '0'),
    });
    assert.equal((await w.check('tokens', '1')).reason, 'limit_reached');
    // Usage past the cap (meter events are not refused) is counted; remaining stays 0.
    await w.use(cat.tokens, '5');
    assert.deepEqual(limitOf(await w.check('tokens')), lim('1005', '0'));
  });

  test('zero staleness under concurrent meter events', async () => {
    const w = await world(JAN + DAY);
    await w.subscribe([cat.tokenPlan]);
    let acked = 0;
    let sent = 0;
    const worker = async () => {
      while (sent < 60) {
        sent++;
        await w.use(cat.tokens, 1);
        acked++;
        const floor = acked;
        const r = await w.check('tokens');
        const used = Number(r.limit.used);
        assert.ok(used >= floor, `used ${used} < ${floor} events acknowledged before the check`);
        assert.ok(used <= sent, `used ${used} > ${sent} events sent`);
      }
    };
    await Promise.all([worker(), worker(), worker(), worker()]);
    assert.equal((await w.check('tokens')).limit.used, '60');
  });

  test('v2 meter events and the v2 stream are counted by the time they are acknowledged', async () => {
    const w = await world(JAN + DAY);
    await w.subscribe([cat.tokenPlan]);
    const iso = new Date(w.now * 1000).toISOString();
    const ev = (value) => ({
      event_name: cat.tokens.event_name, identifier: uniq('v2'), timestamp: iso,
      payload: { stripe_customer_id: w.cus.id, value },
    });
    await stripe.v2.billing.meterEvents.create(ev('12.5'));
    assert.equal((await w.check('tokens')).limit.used, '12.5');
    const session = await stripe.v2.billing.meterEventSession.create();
    const streamed = stripeClient(session.authentication_token, srv.port);
    await streamed.v2.billing.meterEventStream.create({ events: [ev('7.5'), ev('80')] });
    assert.equal((await w.check('tokens')).limit.used, '100');
  });

  test('a duplicate identifier does not count twice; a cancelled event stops counting', async () => {
    const w = await world(JAN + DAY);
    await w.subscribe([cat.tokenPlan]);
    const id = uniq('evt');
    await w.use(cat.tokens, 30, { identifier: id });
    await expectStripeError(w.use(cat.tokens, 30, { identifier: id }), { status: 400, code: 'duplicate_meter_event' });
    await w.use(cat.tokens, 5);
    assert.equal((await w.check('tokens')).limit.used, '35');
    await stripe.billing.meterEventAdjustments.create({
      event_name: cat.tokens.event_name, type: 'cancel', cancel: { identifier: id },
    });
    await eventually(async () => (await w.check('tokens')).limit.used, '5', { timeout: 2000, interval: 50 });
  });

  test('usage before subscribing in the period counts; the counter resets at the next period', async () => {
    const w = await world(JAN + 5 * DAY);
    await w.use(cat.tokens, 40); // before the subscription, in what becomes its first period
    const sub = await w.subscribe([cat.tokenPlan]);
    const P = JAN + 5 * DAY;
    const NEXT = utc(2026, 2, 6);
    let r = await w.check('tokens');
    assert.equal(r.limit.period_start, P);
    assert.equal(r.limit.period_end, NEXT);
    assert.equal(r.limit.used, '40');
    await w.advance(P + 10 * DAY);
    await w.use(cat.tokens, 960);
    assert.equal((await w.check('tokens')).reason, 'limit_reached');

    await w.advance(NEXT + 2 * HOUR);
    assert.equal((await stripe.subscriptions.retrieve(sub.id)).status, 'active');
    r = await w.check('tokens');
    assert.deepEqual({ entitled: r.entitled, reason: r.reason, limit: limitOf(r) }, {
      entitled: true, reason: null,
      limit: {
        enforcement: 'hard', meter: cat.tokens.id, period_end: utc(2026, 3, 6), period_start: NEXT,
        quantity: '1000', remaining: '1000', reserved: '0', used: '0',
      },
    });
    await w.use(cat.tokens, 7);
    // Late usage for the previous period counts there, not here.
    await w.use(cat.tokens, 3, { timestamp: NEXT - DAY });
    assert.equal((await w.check('tokens')).limit.used, '7');
  });

  test('periods bounded inside a minute: each minute counts toward the period that bills it', async () => {
    // Usage is kept per minute and a minute belongs to the interval it starts in: a first
    // period counts the minute it starts in; the period ending at :30 bills the whole minute
    // holding its end, so its cap counts it, and the renewal starts with the next minute.
    const P = JAN + 5 * DAY + 30;
    const NEXT = utc(2026, 2, 6) + 30;
    const w = await world(P);
    await w.subscribe([cat.tokenPlan]);
    await w.use(cat.tokens, 5, { timestamp: P + 10 });
    assert.equal((await w.check('tokens')).limit.used, '5');
    await w.advance(NEXT - 20);
    await w.use(cat.tokens, 990, { timestamp: NEXT - 25 });
    let r = await w.check('tokens');
    assert.equal(r.limit.period_end, NEXT);
    assert.equal(r.limit.used, '995');
    assert.equal((await w.check('tokens', '6')).reason, 'limit_reached');
    await w.use(cat.tokens, 5, { timestamp: NEXT - 2 });
    assert.equal((await w.check('tokens')).reason, 'limit_reached');

    await w.advance(NEXT + 2 * HOUR);
    r = await w.check('tokens');
    assert.equal(r.limit.period_start, NEXT);
    assert.equal(r.limit.used, '0');
    assert.equal(r.reason, null);
    await w.use(cat.tokens, 7, { timestamp: NEXT + 31 }); // the first whole minute of the period
    assert.equal((await w.check('tokens')).limit.used, '7');
  });

  test('soft enforcement: entitled, with reason limit_reached', async () => {
    const w = await world(JAN + DAY);
    await w.subscribe([cat.softPlan]);
    let r = await w.check('tokens_soft');
    assert.equal(r.entitled, true);
    assert.equal(r.reason, null);
    assert.equal(r.limit.enforcement, 'soft');
    r = await w.check('tokens_soft', '11');
    assert.equal(r.entitled, true);
    assert.equal(r.reason, 'limit_reached');
    await w.use(cat.tokens, 4);
    assert.equal((await w.check('tokens_soft')).reason, null);
    await w.use(cat.tokens, 6);
    r = await w.check('tokens_soft');
    assert.deepEqual({ entitled: r.entitled, reason: r.reason, used: r.limit.used, remaining: r.limit.remaining }, {
      entitled: true, reason: 'limit_reached', used: '10', remaining: '0',
    });
  });

  test('the same feature from two products: the larger limit; no limit beats any', async () => {
    const big = await plan('Tokens 5000', 5000, [{ feature: cat.fTokens, limit: { meter: cat.tokens.id, quantity: '5000' } }]);
    const unlimited = await plan('Tokens unlimited', 9000, [{ feature: cat.fTokens }]);
    const w = await world(JAN + DAY);
    const sub = await w.subscribe([cat.tokenPlan, big]);
    assert.equal((await w.check('tokens')).limit.quantity, '5000');
    await stripe.subscriptions.update(sub.id, { items: [{ price: unlimited.price.id }] });
    const r = await w.check('tokens');
    assert.equal(r.entitled, true);
    assert.equal(r.limit, null);
  });

  test('the larger limit of two subscriptions counts over its own subscription\'s period', async () => {
    const big = await plan('Tokens 3000', 5000, [{ feature: cat.fTokens, limit: { meter: cat.tokens.id, quantity: '3000' } }]);
    const w = await world(JAN);
    await w.subscribe([big]); // [Jan 1, Feb 1)
    await w.advance(JAN + 10 * DAY);
    await w.use(cat.tokens, 100); // Jan 11: in both subscriptions' periods
    await w.subscribe([cat.tokenPlan]); // [Jan 11, Feb 11), limit 1000
    const r = await w.check('tokens');
    assert.deepEqual(limitOf(r), {
      enforcement: 'hard', meter: cat.tokens.id, period_end: FEB, period_start: JAN,
      quantity: '3000', remaining: '2900', reserved: '0', used: '100',
    });
  });
});

// =============================================================================================
// 5. Usage sessions

const SEC = () => ({ feature: 'call_seconds', event_name: cat.seconds.event_name });

/** A new meter, a feature (lookup key `name`_...) and a plan granting it with a hard limit of
 * `quantity` of that meter. */
async function limitedPlan(name, quantity) {
  const m = await createMeter(stripe);
  const f = await stripe.entitlements.features.create({ name, lookup_key: uniq(name) });
  const p = await plan(`${name} ${quantity}`, 1000, [{ feature: f, limit: { meter: m.id, quantity } }]);
  return { m, f, p };
}
const MIN = () => ({ feature: 'call_minutes', event_name: cat.minutes.event_name, rounding: 'minute_up' });

describe('usage sessions', () => {
  test('start errors: missing params, unknown customer or meter, bad options, 402 when not entitled', async () => {
    const w = await world();
    const full = { customer: w.cus.id, ...SEC() };
    for (const p of ['customer', 'feature', 'event_name']) {
      const params = { ...full };
      delete params[p];
      await expectStripeError(sessions.start(params), { status: 400, code: 'parameter_missing', param: p });
    }
    await expectStripeError(sessions.start({ ...full, customer: 'cus_doesnotexist' }), {
      status: 404, code: 'resource_missing', param: 'customer',
    });
    await expectStripeError(sessions.start({ ...full, event_name: 'no_such_event' }), {
      status: 400, code: 'no_meter', param: 'event_name',
    });
    // A session records durations: a counting meter would drift from what it bills.
    const counter = await createMeter(stripe, { formula: 'count' });
    await expectStripeError(sessions.start({ ...full, event_name: counter.event_name }), {
      status: 400, code: 'parameter_invalid', param: 'event_name',
    });
    // Not entitled: 402 with error.upgrade.
    const e = await expectPaymentRequired(sessions.start(full), 'entitlement_required');
    assert.equal(e.type, 'StripeCardError');

    await w.subscribe([cat.callSecPlan]);
    await expectStripeError(sessions.start({ ...full, rounding: 'hour' }), { status: 400, param: 'rounding' });
    await expectStripeError(sessions.start({ ...full, heartbeat_timeout: 4 }), { status: 400, param: 'heartbeat_timeout' });
    await expectStripeError(sessions.start({ ...full, heartbeat_timeout: 3601 }), { status: 400, param: 'heartbeat_timeout' });
    await expectStripeError(sessions.start({ ...full, heartbeat_timeout: 'soon' }), { status: 400, param: 'heartbeat_timeout' });
    await expectStripeError(sessions.start({ ...full, payload: 'x' }), { status: 400, param: 'payload' });
    // The limit counts the seconds meter: recording minutes against it is refused.
    await expectStripeError(sessions.start({ ...full, event_name: cat.minutes.event_name }), {
      status: 400, code: 'parameter_invalid', param: 'event_name',
    });
    // None of the refusals held anything.
    assert.equal((await w.check('call_seconds')).limit.reserved, '0');

    for (const call of [sessions.get, sessions.beat, sessions.end]) {
      await expectStripeError(call('usess_doesnotexist'), { status: 404, code: 'resource_missing', param: 'id' });
    }
  });

  test('refused sessions of one customer never disturb a subscriber starting sessions at the same time', async () => {
    // A refused start drops what it loaded into the check registry; done outside the writer,
    // that once landed inside another customer's start and refused it as not entitled.
    const w = await world(JAN + 3 * DAY);
    await w.subscribe([cat.callSecPlan]);
    const stranger = await world(JAN + 3 * DAY);
    const outcome = (p) => p.then((s) => s.status, (e) => e.code);
    const starts = [];
    for (let i = 0; i < 15; i++) {
      starts.push(outcome(stranger.start(SEC())), outcome(w.start(SEC())));
    }
    const got = await Promise.all(starts);
    const theirs = got.filter((_, i) => i % 2 === 0), ours = got.filter((_, i) => i % 2 === 1);
    assert.deepEqual([...new Set(theirs)], ['entitlement_required']);
    // 100 s shared: the first starts are granted, the rest meet the cap; none is "not entitled"
    assert.ok(ours.includes('active'), JSON.stringify(ours));
    for (const o of ours) assert.ok(o === 'active' || o === 'usage_limit_reached', JSON.stringify(ours));
  });

  test('rounding second: granted_seconds, heartbeats record the elapsed seconds, end', async () => {
    const w = await world(JAN + DAY);
    const T = w.now;
    await w.subscribe([cat.callSecPlan]); // 100 seconds
    const s = await w.start({ ...SEC(), payload: { agent_id: 'agent_7', region: 'eu' }, heartbeat_timeout: 20 });
    assert.match(s.id, /^usess_[A-Za-z0-9]+$/);
    assert.deepEqual({ ...s }, {
      id: s.id, object: 'usage_session', billed_quantity: 0, created: T, customer: w.cus.id, ended_at: null,
      event_name: cat.seconds.event_name, feature: 'call_seconds', granted_seconds: 20, heartbeat_timeout: 20,
      last_heartbeat_at: T, livemode: false, payload: { agent_id: 'agent_7', region: 'eu' }, remaining: '80',
      rounding: 'second', status: 'active',
    });
    let lim = (await w.check('call_seconds')).limit;
    assert.deepEqual([lim.used, lim.reserved, lim.remaining], ['0', '20', '80']);

    await w.tick(15);
    let b = await sessions.beat(s.id);
    assert.deepEqual(
      [b.status, b.billed_quantity, b.granted_seconds, b.last_heartbeat_at, b.remaining],
      ['active', 15, 20, T + 15, '65'],
    );
    lim = (await w.check('call_seconds')).limit;
    assert.deepEqual([lim.used, lim.reserved, lim.remaining], ['15', '20', '65']);
    assert.equal(await usage(stripe, cat.seconds.id, w.cus.id, JAN, FEB), 15);

    await w.tick(15);
    b = await sessions.beat(s.id);
    assert.deepEqual([b.billed_quantity, b.granted_seconds, b.remaining], [30, 20, '50']);
    // Retrieve shows the session as it is now.
    await w.tick(5);
    const g = await sessions.get(s.id);
    assert.deepEqual([g.status, g.billed_quantity, g.granted_seconds, g.last_heartbeat_at], ['active', 30, 15, T + 30]);
    assert.deepEqual(g.payload, { agent_id: 'agent_7', region: 'eu' });

    await w.tick(2);
    const e = await sessions.end(s.id);
    assert.deepEqual(
      [e.status, e.billed_quantity, e.granted_seconds, e.ended_at, e.last_heartbeat_at, e.remaining],
      ['ended', 37, 0, T + 37, T + 37, null],
    );
    assert.deepEqual(e.payload, { agent_id: 'agent_7', region: 'eu' });
    lim = (await w.check('call_seconds')).limit;
    assert.deepEqual([lim.used, lim.reserved, lim.remaining], ['37', '0', '63']);
    assert.equal(await usage(stripe, cat.seconds.id, w.cus.id, JAN, FEB), 37);

    // A heartbeat or an end on an ended session changes nothing.
    await w.tick(30);
    const after1 = await sessions.beat(s.id);
    const after2 = await sessions.end(s.id);
    const after3 = await sessions.get(s.id);
    for (const x of [after1, after2, after3]) assert.deepEqual({ ...x }, { ...e });
    assert.equal((await w.check('call_seconds')).limit.used, '37');
  });

  test('rounding minute_up: a started minute is billed at once; a 61-second call is 2 minutes', async () => {
    const w = await world(JAN + DAY);
    const T = w.now;
    await w.subscribe([cat.callMinPlan]); // 5 minutes
    const s = await w.start(MIN());
    assert.deepEqual(
      [s.rounding, s.billed_quantity, s.granted_seconds, s.remaining, s.heartbeat_timeout, s.created],
      ['minute_up', 1, 120, '3', 30, T],
    );
    let lim = (await w.check('call_minutes')).limit;
    assert.deepEqual([lim.used, lim.reserved, lim.remaining], ['1', '1', '3']);
    await w.tick(29);
    let b = await sessions.beat(s.id);
    assert.deepEqual([b.billed_quantity, b.granted_seconds], [1, 91]);
    await w.tick(29); // 58 s
    b = await sessions.beat(s.id);
    assert.deepEqual([b.billed_quantity, b.granted_seconds], [1, 62]);
    await w.tick(3); // 61 s: the second minute has started
    b = await sessions.beat(s.id);
    assert.deepEqual([b.billed_quantity, b.granted_seconds, b.remaining], [2, 119, '2']);
    assert.equal((await w.check('call_minutes')).limit.used, '2');
    const e = await sessions.end(s.id);
    assert.deepEqual([e.status, e.billed_quantity, e.ended_at], ['ended', 2, T + 61]);
    lim = (await w.check('call_minutes')).limit;
    assert.deepEqual([lim.used, lim.reserved, lim.remaining], ['2', '0', '3']);
    assert.equal(await usage(stripe, cat.minutes.id, w.cus.id, JAN, FEB), 2);

    // A 61-second call ended without heartbeats in between is 2 minutes as well.
    const s2 = await w.start(MIN());
    await w.tick(25);
    await sessions.beat(s2.id);
    await w.tick(25);
    await sessions.beat(s2.id);
    await w.tick(11);
    const e2 = await sessions.end(s2.id);
    assert.equal(e2.billed_quantity, 2);
    assert.equal((await w.check('call_minutes')).limit.used, '4');
    // A call ended at once is still a minute.
    const s3 = await w.start(MIN());
    assert.equal((await sessions.end(s3.id)).billed_quantity, 1);
    assert.equal((await w.check('call_minutes')).limit.used, '5');
    await expectPaymentRequired(w.start(MIN()), 'usage_limit_reached');
  });

  test('minute_up with a heartbeat timeout of several minutes: each grant covers the timeout', async () => {
    const w = await world(JAN + DAY);
    await w.subscribe([cat.callFreePlan]);
    const free = { feature: 'call_free', event_name: cat.minutes.event_name, rounding: 'minute_up', heartbeat_timeout: 300 };
    const s = await w.start(free);
    assert.equal(s.granted_seconds, 300);
    await w.tick(300);
    let b = await sessions.beat(s.id);
    assert.deepEqual([b.status, b.billed_quantity, b.granted_seconds], ['active', 5, 300]);
    await w.tick(250);
    b = await sessions.beat(s.id);
    assert.deepEqual([b.status, b.billed_quantity, b.granted_seconds], ['active', 10, 350]);
    await w.tick(300);
    const e = await sessions.end(s.id);
    assert.deepEqual([e.status, e.billed_quantity], ['ended', 15]); // 850 s
    assert.equal(await usage(stripe, cat.minutes.id, w.cus.id, JAN, FEB), 15);
  });

  test('a hard cap: billing stops at the cap, the heartbeat says limit_reached, a new session is 402', async () => {
    const w = await world(JAN + DAY);
    const T = w.now;
    await w.subscribe([cat.callSecPlan]); // 100 seconds
    const s = await w.start({ ...SEC(), heartbeat_timeout: 60 });
    assert.deepEqual([s.granted_seconds, s.remaining], [60, '40']);
    await w.tick(60);
    let b = await sessions.beat(s.id);
    assert.deepEqual([b.status, b.billed_quantity, b.granted_seconds, b.remaining], ['active', 60, 40, '0']);
    // The client runs 10 s past its grant: it is billed what was granted, never more.
    await w.tick(50);
    b = await sessions.beat(s.id);
    assert.deepEqual(
      [b.status, b.billed_quantity, b.granted_seconds, b.ended_at, b.remaining],
      ['limit_reached', 100, 0, T + 110, null],
    );
    const r = await w.check('call_seconds');
    assert.deepEqual([r.entitled, r.reason, r.limit.used, r.limit.reserved, r.limit.remaining],
      [false, 'limit_reached', '100', '0', '0']);
    await expectPaymentRequired(w.start(SEC()), 'usage_limit_reached');
    // Over: heartbeats change nothing.
    await w.tick(5);
    const again = await sessions.beat(s.id);
    assert.deepEqual({ ...again }, { ...b });
    assert.equal(await usage(stripe, cat.seconds.id, w.cus.id, JAN, FEB), 100);
  });

  test('concurrent sessions share what remains: the grants never add up to more', async () => {
    const w = await world(JAN + DAY);
    await w.subscribe([cat.callSecPlan]); // 100 seconds, 30 s grants
    const results = await Promise.allSettled(Array.from({ length: 6 }, () => w.start(SEC())));
    const ok = results.filter((x) => x.status === 'fulfilled').map((x) => x.value);
    const refused = results.filter((x) => x.status === 'rejected').map((x) => x.reason);
    for (const e of refused) {
      assert.equal(e.statusCode, 402, e.message);
      assert.equal(e.code, 'usage_limit_reached');
      assert.equal(e.raw.upgrade, true);
    }
    const granted = ok.reduce((a, s) => a + s.granted_seconds, 0);
    assert.ok(granted <= 100, `granted ${granted} s of 100`);
    assert.equal(granted, 100, `a start is refused only when nothing remains; grants ${ok.map((s) => s.granted_seconds)}`);
    assert.equal(ok.length, 4);
    let r = await w.check('call_seconds');
    assert.deepEqual([r.limit.used, r.limit.reserved, r.limit.remaining, r.reason], ['0', '100', '0', 'limit_reached']);
    // Ending one gives its share back.
    const first = ok.find((s) => s.granted_seconds === 30);
    const ended = await sessions.end(first.id);
    assert.equal(ended.billed_quantity, 0);
    r = await w.check('call_seconds');
    assert.deepEqual([r.limit.reserved, r.limit.remaining, r.entitled], ['70', '30', true]);
    assert.equal((await w.check('call_seconds', '30')).entitled, true);
    assert.equal((await w.check('call_seconds', '31')).entitled, false);
    const next = await w.start(SEC());
    assert.equal(next.granted_seconds, 30);
    await expectPaymentRequired(w.start(SEC()), 'usage_limit_reached');
  });

  test('concurrent minute_up sessions: billed plus held never exceeds the limit', async () => {
    const w = await world(JAN + DAY);
    await w.subscribe([cat.callMinPlan]); // 5 minutes
    const results = await Promise.allSettled(Array.from({ length: 5 }, () => w.start(MIN())));
    const ok = results.filter((x) => x.status === 'fulfilled').map((x) => x.value);
    for (const x of results.filter((y) => y.status === 'rejected')) assert.equal(x.reason.code, 'usage_limit_reached', x.reason.message);
    const units = ok.reduce((a, s) => a + s.granted_seconds / 60, 0);
    assert.ok(units <= 5, `granted ${units} minutes of 5`);
    const r = await w.check('call_minutes');
    assert.ok(Number(r.limit.used) + Number(r.limit.reserved) <= 5, JSON.stringify(r.limit));
    assert.equal(r.limit.used, String(ok.length), 'each session billed its first minute');
  });

  test('a session whose heartbeats stop expires after heartbeat_timeout and holds nothing after', async () => {
    const w = await world(JAN + DAY);
    const T = w.now;
    await w.subscribe([cat.callSecPlan]);
    const s = await w.start({ ...SEC(), heartbeat_timeout: 10, payload: { agent_id: 'a1' } });
    await w.tick(5);
    await sessions.beat(s.id); // billed 5, last heartbeat T + 5
    await w.tick(10); // exactly the timeout: still live
    assert.equal((await sessions.get(s.id)).status, 'active');
    assert.equal((await w.check('call_seconds')).limit.reserved, '10');
    await w.tick(1); // 11 s without a heartbeat
    const g = await sessions.get(s.id);
    assert.deepEqual(
      [g.status, g.ended_at, g.billed_quantity, g.granted_seconds, g.remaining, g.last_heartbeat_at],
      ['expired', T + 5, 5, 0, null, T + 5],
    );
    let lim = (await w.check('call_seconds')).limit;
    assert.deepEqual([lim.used, lim.reserved, lim.remaining], ['5', '0', '95']);
    // Its share is free for others.
    const other = await w.start({ ...SEC(), heartbeat_timeout: 90 });
    assert.deepEqual([other.granted_seconds, other.remaining], [90, '5']);
    // A late heartbeat finds it expired, billed to its last heartbeat.
    const late = await sessions.beat(s.id);
    assert.deepEqual([late.status, late.ended_at, late.billed_quantity], ['expired', T + 5, 5]);
    assert.deepEqual(late.payload, { agent_id: 'a1' });
    lim = (await w.check('call_seconds')).limit;
    assert.deepEqual([lim.used, lim.reserved], ['5', '90']);
    await sessions.end(other.id);
  });

  test('a feature without a limit: sessions run unmetered against any cap, still recorded', async () => {
    const w = await world(JAN + DAY);
    await w.subscribe([cat.callFreePlan]);
    const s = await w.start({ feature: 'call_free', event_name: cat.seconds.event_name, heartbeat_timeout: 45 });
    assert.deepEqual([s.granted_seconds, s.remaining, s.status], [45, null, 'active']);
    await w.tick(40);
    const b = await sessions.beat(s.id);
    assert.deepEqual([b.billed_quantity, b.granted_seconds, b.remaining], [40, 45, null]);
    await w.tick(40);
    const e = await sessions.end(s.id);
    assert.equal(e.billed_quantity, 80);
    assert.equal(await usage(stripe, cat.seconds.id, w.cus.id, JAN, FEB), 80);
    assert.equal((await w.check('call_free')).limit, null);
  });

  test('events go to the meter\'s own payload keys, with the session\'s dimensions', async () => {
    const m = await createMeter(stripe, {
      customer_mapping: { type: 'by_id', event_payload_key: 'account' },
      value_settings: { event_payload_key: 'secs' },
    });
    const f = await stripe.entitlements.features.create({ name: 'Custom keys', lookup_key: uniq('custom') });
    const p = await plan('Custom keys 50 s', 1000, [{ feature: f, limit: { meter: m.id, quantity: '50' } }]);
    const w = await world(JAN + DAY);
    await w.subscribe([p]);
    const s = await w.start({ feature: f.lookup_key, event_name: m.event_name, payload: { agent_id: 'agent_9' } });
    await w.tick(12);
    const b = await sessions.beat(s.id);
    assert.deepEqual([b.status, b.billed_quantity], ['active', 12]);
    assert.equal((await w.check(f.lookup_key)).limit.used, '12');
    assert.equal(await usage(stripe, m.id, w.cus.id, JAN, FEB), 12);
  });

  test('a soft limit reports but does not stop sessions', async () => {
    const w = await world(JAN + DAY);
    await w.subscribe([cat.callSoftPlan]); // 10 seconds, soft
    const s = await w.start({ feature: 'call_soft', event_name: cat.seconds.event_name, heartbeat_timeout: 20 });
    assert.equal(s.status, 'active');
    assert.equal(s.granted_seconds, 20);
    await w.tick(15);
    const b = await sessions.beat(s.id);
    assert.deepEqual([b.status, b.billed_quantity], ['active', 15]);
    const r = await w.check('call_soft');
    assert.deepEqual([r.entitled, r.reason, r.limit.used], [true, 'limit_reached', '15']);
    const s2 = await w.start({ feature: 'call_soft', event_name: cat.seconds.event_name });
    assert.equal(s2.status, 'active');
    assert.ok(s2.granted_seconds > 0);
  });

  test('an end racing a heartbeat always ends the session', async () => {
    const { m, f, p } = await limitedPlan('race', '100000');
    const w = await world(JAN + DAY);
    await w.subscribe([p]);
    let billed = 0;
    for (let i = 0; i < 40; i++) {
      const s = await w.start({ feature: f.lookup_key, event_name: m.event_name, heartbeat_timeout: 60 });
      await w.tick(10);
      const beat = sessions.beat(s.id);
      await sleep(i % 5);
      const [, e] = await Promise.all([beat, sessions.end(s.id)]);
      assert.ok(['ended', 'limit_reached'].includes(e.status), `try ${i}: ${JSON.stringify(e)}`);
      assert.equal(e.ended_at, w.now, `try ${i}`);
      const g = await sessions.get(s.id);
      assert.deepEqual([g.status, g.billed_quantity], [e.status, e.billed_quantity], `try ${i}`);
      billed += g.billed_quantity;
    }
    const r = await w.check(f.lookup_key);
    assert.deepEqual([r.limit.reserved, r.limit.used], ['0', String(billed)]);
    assert.equal(billed, 400);
  });

  test('a session whose usage can no longer be recorded can still end, billed only what was recorded', async () => {
    const { m, f, p } = await limitedPlan('gone', '1000');
    // The meter is deactivated during the call.
    let w = await world(JAN + DAY);
    await w.subscribe([p]);
    let s = await w.start({ feature: f.lookup_key, event_name: m.event_name });
    await w.tick(20);
    assert.equal((await sessions.beat(s.id)).billed_quantity, 20);
    await stripe.billing.meters.deactivate(m.id);
    await w.tick(10);
    await expectStripeError(sessions.beat(s.id), { status: 400, code: 'no_meter', param: 'event_name' });
    assert.deepEqual([(await sessions.get(s.id)).billed_quantity, (await sessions.get(s.id)).status], [20, 'active']);
    let e = await sessions.end(s.id);
    assert.deepEqual([e.status, e.billed_quantity, e.ended_at], ['ended', 20, w.now]);
    await stripe.billing.meters.reactivate(m.id);
    assert.equal(await usage(stripe, m.id, w.cus.id, JAN, FEB), 20);
    assert.equal((await w.check(f.lookup_key)).limit.reserved, '0');
    // The customer is deleted during the call.
    w = await world(JAN + DAY);
    await w.subscribe([p]);
    s = await w.start({ feature: f.lookup_key, event_name: m.event_name });
    await w.tick(20);
    assert.equal((await sessions.beat(s.id)).billed_quantity, 20);
    await stripe.customers.del(w.cus.id);
    await w.tick(10);
    await expectStripeError(sessions.beat(s.id), { status: 400, param: 'customer' });
    assert.equal((await sessions.get(s.id)).billed_quantity, 20);
    e = await sessions.end(s.id);
    assert.deepEqual([e.status, e.billed_quantity, e.ended_at], ['ended', 20, w.now]);
    assert.equal((await sessions.end(s.id)).status, 'ended');
  });

  test('a call across a period boundary: each period gets its own seconds', async () => {
    const { m, f, p } = await limitedPlan('bound', '100');
    const w = await world(JAN); // periods from the 1st
    await w.subscribe([p]);
    await w.advance(FEB - 20);
    await w.use(m, 90);
    await w.advance(FEB - 8);
    const s = await w.start({ feature: f.lookup_key, event_name: m.event_name });
    assert.equal(s.granted_seconds, 10);
    await w.advance(FEB + 2);
    const b = await sessions.beat(s.id);
    assert.deepEqual([b.status, b.billed_quantity, b.last_heartbeat_at], ['active', 10, FEB + 2]);
    assert.equal(await usage(stripe, m.id, w.cus.id, JAN, FEB), 98);
    assert.equal(await usage(stripe, m.id, w.cus.id, FEB, MAR), 2);
    const r = await w.check(f.lookup_key);
    assert.deepEqual([r.limit.period_start, r.limit.used], [FEB, '2']);
    await w.advance(FEB + 12);
    const e = await sessions.end(s.id);
    assert.deepEqual([e.status, e.billed_quantity], ['ended', 20]);
    assert.equal(await usage(stripe, m.id, w.cus.id, FEB, MAR), 12);
  });

  test('losing the entitlement mid-call stops the session at its next heartbeat', async () => {
    const w = await world(JAN + DAY);
    const sub = await w.subscribe([cat.callFreePlan]);
    const s = await w.start({ feature: 'call_free', event_name: cat.seconds.event_name });
    await w.tick(10);
    await stripe.subscriptions.cancel(sub.id);
    const b = await sessions.beat(s.id);
    assert.notEqual(b.status, 'active');
    assert.equal(b.granted_seconds, 0);
    assert.equal(b.billed_quantity, 10);
    await expectPaymentRequired(w.start({ feature: 'call_free', event_name: cat.seconds.event_name }), 'entitlement_required');
  });
});

describe('usage sessions: every hard limit counting the meter, as it is now', () => {
  const feature = (name) => stripe.entitlements.features.create({ name, lookup_key: uniq(name) });

  test('two features limited on one meter: each one\'s sessions see the other\'s holds', async () => {
    const m = await createMeter(stripe);
    const [fa, fb, fc] = [await feature('a'), await feature('b'), await feature('c')];
    const p = await plan('A 40 + B 1000 + C unlimited, one meter', 1000, [
      { feature: fa, limit: { meter: m.id, quantity: '40' } },
      { feature: fb, limit: { meter: m.id, quantity: '1000' } },
      { feature: fc },
    ]);
    const w = await world(JAN + DAY);
    await w.subscribe([p]);
    const a = await w.start({ feature: fa.lookup_key, event_name: m.event_name });
    assert.deepEqual([a.granted_seconds, a.remaining], [30, '10']);
    let lb = (await w.check(fb.lookup_key)).limit;
    assert.deepEqual([lb.reserved, lb.remaining], ['30', '970']);
    // B's and C's sessions record on A's meter: they get only what A's limit leaves.
    const b = await w.start({ feature: fb.lookup_key, event_name: m.event_name });
    assert.deepEqual([b.granted_seconds, b.remaining], [10, '0']);
    await expectPaymentRequired(w.start({ feature: fc.lookup_key, event_name: m.event_name }), 'usage_limit_reached');
    await w.tick(30);
    const ba = await sessions.beat(a.id);
    const bb = await sessions.beat(b.id);
    assert.equal(ba.billed_quantity + bb.billed_quantity, 40);
    const la = (await w.check(fa.lookup_key)).limit;
    assert.deepEqual([la.used, la.reserved, la.remaining], ['40', '0', '0']);
    assert.equal(await usage(stripe, m.id, w.cus.id, JAN, FEB), 40);
  });

  /** A new meter and feature, and two plans granting it with a hard limit of 100 and 10. */
  async function bigAndSmall() {
    const m = await createMeter(stripe);
    const f = await feature('calls');
    const big = await plan('Big 100 s', 3000, [{ feature: f, limit: { meter: m.id, quantity: '100' } }]);
    const small = await plan('Small 10 s', 1000, [{ feature: f, limit: { meter: m.id, quantity: '10' } }]);
    return { m, f, big, small };
  }

  test('a downgrade during a call: the next heartbeat records no more than the new limit leaves', async () => {
    const { m, f, big, small } = await bigAndSmall();
    const w = await world(JAN + DAY);
    const T = w.now;
    const sub = await w.subscribe([big]);
    const s = await w.start({ feature: f.lookup_key, event_name: m.event_name });
    assert.equal(s.granted_seconds, 30);
    await stripe.subscriptions.update(sub.id, {
      items: [{ id: sub.items.data[0].id, price: small.price.id }], proration_behavior: 'none',
    });
    assert.deepEqual([(await w.check(f.lookup_key)).limit.quantity, (await w.check(f.lookup_key)).limit.reserved], ['10', '30']);
    await w.tick(30);
    const b = await sessions.beat(s.id);
    assert.deepEqual([b.status, b.billed_quantity, b.granted_seconds, b.ended_at], ['limit_reached', 10, 0, T + 30]);
    const r = await w.check(f.lookup_key);
    assert.deepEqual([r.limit.used, r.limit.reserved, r.limit.quantity, r.entitled], ['10', '0', '10', false]);
    assert.equal(await usage(stripe, m.id, w.cus.id, JAN, FEB), 10);
  });

  test('a heartbeat after a renewal: the seconds before it are held to the old period\'s limit, once', async () => {
    const { m, f, big, small } = await bigAndSmall();
    const P = { feature: f.lookup_key, event_name: m.event_name };
    // A downgrade late in January: January's limit is 10, of which 5 are used; the call had
    // reserved 30 under the old limit. Its heartbeat comes after the renewal.
    const w = await world(JAN);
    const sub = await w.subscribe([big]);
    await w.advance(FEB - 60);
    const c = await w.start(P);
    await w.tick(5);
    await sessions.end(c.id);
    await w.advance(FEB - 25);
    const a = await w.start(P);
    assert.equal(a.granted_seconds, 30);
    await w.advance(FEB - 20);
    await stripe.subscriptions.update(sub.id, {
      items: [{ id: sub.items.data[0].id, price: small.price.id }], proration_behavior: 'none',
    });
    await w.advance(FEB + 5);
    const b = await sessions.beat(a.id);
    assert.deepEqual([b.status, b.billed_quantity, b.granted_seconds], ['limit_reached', 5, 0]);
    assert.equal(await usage(stripe, m.id, w.cus.id, JAN, FEB), 10);
    assert.equal(await usage(stripe, m.id, w.cus.id, FEB, MAR), 0);

    // February used up at once: the 30 seconds reserved in January are billed there, and a
    // lone heartbeat answers at once (never 429); 95 of 100 used leaves the call 5 more.
    for (const [febUse, status, granted] of [[100, 'limit_reached', 0], [95, 'active', 5]]) {
      const v = await world(JAN);
      await v.subscribe([big]);
      await v.advance(FEB - 30);
      const s = await v.start(P);
      assert.equal(s.granted_seconds, 30);
      await v.advance(FEB);
      await v.use(m, febUse);
      const r = await sessions.beat(s.id);
      assert.deepEqual([r.status, r.billed_quantity, r.granted_seconds], [status, 30, granted], `February ${febUse}`);
      assert.equal(await usage(stripe, m.id, v.cus.id, JAN, FEB), 30);
      assert.equal(await usage(stripe, m.id, v.cus.id, FEB, MAR), febUse);
    }
  });

  test('calls spanning a renewal: each one\'s January seconds are held to January, not cut by the others\' February grants', async () => {
    const { m, f, p } = await limitedPlan('span', '60');
    const P = { feature: f.lookup_key, event_name: m.event_name, heartbeat_timeout: 30 };
    // Two calls share January's 60 seconds; A's heartbeat after the renewal reserves February
    // time, which is no part of what January leaves B.
    const w = await world(JAN);
    await w.subscribe([p]);
    await w.advance(FEB - 30);
    const a = await w.start(P), b = await w.start(P);
    assert.deepEqual([a.granted_seconds, b.granted_seconds, b.remaining], [30, 30, '0']);
    await w.advance(FEB);
    for (const s of [a, b]) {
      const r = await sessions.beat(s.id);
      assert.deepEqual([r.status, r.billed_quantity, r.granted_seconds], ['active', 30, 30]);
    }
    assert.equal(await usage(stripe, m.id, w.cus.id, JAN, FEB), 60);
    assert.equal(await usage(stripe, m.id, w.cus.id, FEB, MAR), 0);

    // A call started in February holds nothing of January: the January call is billed its 30.
    const v = await world(JAN);
    await v.subscribe([p]);
    await v.advance(FEB - 100);
    await v.use(m, 20);
    await v.advance(FEB - 30);
    const c = await v.start(P);
    assert.deepEqual([c.granted_seconds, c.remaining], [30, '10']);
    await v.advance(FEB);
    const d = await v.start(P);
    assert.equal(d.granted_seconds, 30);
    const r = await sessions.beat(c.id);
    assert.deepEqual([r.status, r.billed_quantity], ['active', 30]);
    assert.equal(await usage(stripe, m.id, v.cus.id, JAN, FEB), 50);
    assert.equal(await usage(stripe, m.id, v.cus.id, FEB, MAR), 0);
  });

  test('limits beyond 2^63 units: sessions start, granted and remaining exact', async () => {
    for (const q of ['9223372036854775808', '18446744073709551646', '99999999999999999999999999']) {
      const m = await createMeter(stripe);
      const f = await feature('calls');
      const p = await plan(`Huge ${q}`, 1000, [{ feature: f, limit: { meter: m.id, quantity: q } }]);
      const w = await world(JAN + DAY);
      await w.subscribe([p]);
      const s = await w.start({ feature: f.lookup_key, event_name: m.event_name });
      assert.deepEqual([s.status, s.granted_seconds, s.remaining], ['active', 30, (BigInt(q) - 30n).toString()], q);
      await w.tick(10);
      const b = await sessions.beat(s.id);
      assert.deepEqual([b.status, b.billed_quantity, b.remaining], ['active', 10, (BigInt(q) - 40n).toString()], q);
      assert.equal((await w.check(f.lookup_key)).limit.remaining, (BigInt(q) - 40n).toString(), q);
    }
  });

  test('a plan change moving the limit to another meter ends the call at its next heartbeat', async () => {
    const m1 = await createMeter(stripe);
    const m2 = await createMeter(stripe);
    const f = await feature('calls');
    const old = await plan('Calls on m1', 3000, [{ feature: f, limit: { meter: m1.id, quantity: '100' } }]);
    const neu = await plan('Calls on m2', 3000, [{ feature: f, limit: { meter: m2.id, quantity: '100' } }]);
    const w = await world(JAN + DAY);
    const sub = await w.subscribe([old]);
    const s = await w.start({ feature: f.lookup_key, event_name: m1.event_name, heartbeat_timeout: 60 });
    await stripe.subscriptions.update(sub.id, {
      items: [{ id: sub.items.data[0].id, price: neu.price.id }], proration_behavior: 'none',
    });
    await w.tick(20);
    // The 20 s already talked are billed where the call recorded them; then it hangs up.
    const b = await sessions.beat(s.id);
    assert.deepEqual([b.status, b.billed_quantity, b.granted_seconds], ['limit_reached', 20, 0]);
    await w.tick(20);
    const again = await sessions.beat(s.id);
    assert.equal(again.billed_quantity, 20);
    assert.equal(await usage(stripe, m1.id, w.cus.id, JAN, FEB), 20);
    await expectStripeError(w.start({ feature: f.lookup_key, event_name: m1.event_name }), { status: 400, param: 'event_name' });
    const s2 = await w.start({ feature: f.lookup_key, event_name: m2.event_name });
    assert.deepEqual([s2.granted_seconds, s2.remaining], [30, '70']);
  });

  test('two granted features with one lookup key: checks and sessions both answer for the tighter limit', async () => {
    const m = await createMeter(stripe);
    const key = uniq('calls');
    const old = await stripe.entitlements.features.create({ name: 'Calls (old)', lookup_key: key });
    const capped = await plan('Calls 10 s (old feature)', 1000, [{ feature: old, limit: { meter: m.id, quantity: '10' } }]);
    await stripe.entitlements.features.update(old.id, { active: false }); // frees the key, still grants
    const neu = await stripe.entitlements.features.create({ name: 'Calls', lookup_key: key });
    const free = await plan('Calls unlimited', 1000, [{ feature: neu }]);
    const mid = await plan('Calls 100 s', 1000, [{ feature: neu, limit: { meter: m.id, quantity: '100' } }]);
    for (const [order, label] of [[[free, capped], 'no limit first'], [[mid, capped], 'a larger limit first']]) {
      const w = await world(JAN + DAY);
      await w.subscribe(order);
      const r = await w.check(key);
      assert.deepEqual([r.entitled, r.limit?.quantity, r.limit?.remaining], [true, '10', '10'], label);
      const s = await w.start({ feature: key, event_name: m.event_name });
      assert.deepEqual([s.granted_seconds, s.remaining], [10, '0'], label);
      await w.tick(30);
      const b = await sessions.beat(s.id);
      assert.deepEqual([b.status, b.billed_quantity], ['limit_reached', 10], label);
      const after = await w.check(key);
      assert.deepEqual([after.entitled, after.reason, after.limit.used], [false, 'limit_reached', '10'], label);
    }
  });

  test('two granted features with one lookup key, limited on two meters: a session records either', async () => {
    const m1 = await createMeter(stripe);
    const m2 = await createMeter(stripe);
    const key = uniq('calls');
    const old = await stripe.entitlements.features.create({ name: 'Calls (old)', lookup_key: key });
    const p1 = await plan('Calls 10 s (old feature)', 1000, [{ feature: old, limit: { meter: m1.id, quantity: '10' } }]);
    await stripe.entitlements.features.update(old.id, { active: false });
    const neu = await stripe.entitlements.features.create({ name: 'Calls', lookup_key: key });
    const p2 = await plan('Calls 100 s', 1000, [{ feature: neu, limit: { meter: m2.id, quantity: '100' } }]);
    const w = await world(JAN + DAY);
    await w.subscribe([p1, p2]);
    for (const [m, granted, remaining] of [[m1, 10, '0'], [m2, 30, '70']]) {
      const s = await w.start({ feature: key, event_name: m.event_name });
      assert.deepEqual([s.status, s.granted_seconds, s.remaining], ['active', granted, remaining], m.event_name);
      await w.tick(5);
      const b = await sessions.beat(s.id);
      assert.deepEqual([b.status, b.billed_quantity], ['active', 5], m.event_name);
      assert.equal((await sessions.end(s.id)).billed_quantity, 5);
    }
    const other = await createMeter(stripe);
    await expectStripeError(w.start({ feature: key, event_name: other.event_name }), { status: 400, param: 'event_name' });
  });
});

describe('usage sessions across a restart', () => {
  let p;
  let ps;
  before(async () => { p = await startServer(); ps = p.stripe; });
  after(async () => { await p?.close(); });

  /** A customer on a clock subscribed to a plan of feature `key` (usage_limit: `limit` of a
   * new meter, or none), and the params of a session for it. */
  async function subscriber(key, limit) {
    const meter = await createMeter(ps);
    const f = await ps.entitlements.features.create({ name: 'Calls', lookup_key: key });
    const prod = await ps.products.create({ name: 'Calls' });
    const price = await ps.prices.create({ product: prod.id, currency: 'usd', unit_amount: 100, recurring: { interval: 'month' } });
    await ps.rawRequest('POST', `/v1/products/${prod.id}/features`, {
      entitlement_feature: f.id, ...(limit ? { usage_limit: { meter: meter.id, quantity: limit } } : {}),
    });
    const clock = await ps.testHelpers.testClocks.create({ frozen_time: JAN + DAY });
    const cus = await ps.customers.create({ name: 'R', test_clock: clock.id, invoice_settings: { default_payment_method: 'pm_card_visa' } });
    const sub = await ps.subscriptions.create({ customer: cus.id, items: [{ price: price.id }] });
    return { meter, clock, cus, sub, params: { customer: cus.id, feature: key, event_name: meter.event_name } };
  }

  test('a live session still holds its share after a restart', async () => {
    const { cus, params } = await subscriber('calls', '40');
    const a = await ps.rawRequest('POST', '/v1/usage_sessions', params);
    assert.equal(a.granted_seconds, 30);
    await p.restart();
    ps = p.stripe;
    const r = await check(cus.id, 'calls', undefined, ps);
    assert.equal(r.limit.reserved, '30', JSON.stringify(r.limit));
    const b = await ps.rawRequest('POST', '/v1/usage_sessions', params);
    assert.ok(a.granted_seconds + b.granted_seconds <= 40, `granted ${a.granted_seconds} + ${b.granted_seconds} of 40`);
  });

  test('a subscription change after a kill -9 keeps the live sessions\' holds', async () => {
    const key = uniq('calls');
    const { clock, cus, sub, params } = await subscriber(key, '40');
    const a = await ps.rawRequest('POST', '/v1/usage_sessions', params);
    assert.equal(a.granted_seconds, 30);
    await p.restart({ hard: true });
    ps = p.stripe;
    // The first thing to touch the customer after the restart recomputes its grants.
    await ps.subscriptions.update(sub.id, { metadata: { x: '1' } });
    const r = await check(cus.id, key, undefined, ps);
    assert.equal(r.limit.reserved, '30', JSON.stringify(r.limit));
    const b = await ps.rawRequest('POST', '/v1/usage_sessions', params);
    assert.equal(b.granted_seconds, 10);
    await ps.testHelpers.testClocks.advance(clock.id, { frozen_time: JAN + DAY + 30 });
    await ps.rawRequest('POST', `/v1/usage_sessions/${a.id}/heartbeat`, {});
    await ps.rawRequest('POST', `/v1/usage_sessions/${b.id}/heartbeat`, {});
    const after = await check(cus.id, key, undefined, ps);
    assert.equal(after.limit.used, '40', JSON.stringify(after.limit));
  });

  test('heartbeats cut by a kill -9 are billed once, even when the calls never come back', async () => {
    const N = 60;
    for (let round = 0; round < 6; round++) {
      const { meter, clock, cus, params: p0 } = await subscriber(uniq('calls'));
      const params = { ...p0, heartbeat_timeout: 3600 };
      const ids = [];
      for (let i = 0; i < N; i++) ids.push((await ps.rawRequest('POST', '/v1/usage_sessions', params)).id);
      await ps.testHelpers.testClocks.advance(clock.id, { frozen_time: JAN + DAY + 100 });
      const beats = ids.map((id) => ps.rawRequest('POST', `/v1/usage_sessions/${id}/heartbeat`, {}).catch(() => null));
      await sleep(2 + round * 3);
      await p.kill9();
      await Promise.all(beats);
      await p.restart();
      ps = p.stripe;
      // Nobody heartbeats again: the sessions expire.
      await ps.testHelpers.testClocks.advance(clock.id, { frozen_time: JAN + DAY + 4000 });
      let billed = 0;
      for (const id of ids) {
        const s = await ps.rawRequest('GET', `/v1/usage_sessions/${id}`);
        assert.equal(s.status, 'expired');
        billed += s.billed_quantity;
      }
      assert.equal(await usage(ps, meter.id, cus.id, JAN, FEB), billed, `round ${round}`);
    }
  });
});

describe('usage sessions when the writer is saturated', () => {
  let q;
  let qs;
  before(async () => { q = await startServer({ args: ['--queue-events', '1'] }); qs = q.stripe; });
  after(async () => { await q?.close(); });

  const raw = (method, path, params) => qs.rawRequest(method, path, params);
  const outcome = (promise) => promise.then((v) => v, (e) => ({ error: e }));

  /** A customer on a clock subscribed to a new plan granting a new feature (usage_limit: `limit`
   * of meter `m`, or none). */
  async function subscriber(m, limit) {
    const f = await qs.entitlements.features.create({ name: 'Calls', lookup_key: uniq('calls') });
    const prod = await qs.products.create({ name: 'Calls' });
    const price = await qs.prices.create({ product: prod.id, currency: 'usd', unit_amount: 100, recurring: { interval: 'month' } });
    await raw('POST', `/v1/products/${prod.id}/features`, {
      entitlement_feature: f.id, ...(limit ? { usage_limit: { meter: m.id, quantity: limit } } : {}),
    });
    const clock = await qs.testHelpers.testClocks.create({ frozen_time: JAN + DAY });
    const cus = await qs.customers.create({ name: 'Q', test_clock: clock.id, invoice_settings: { default_payment_method: 'pm_card_visa' } });
    await qs.subscriptions.create({ customer: cus.id, items: [{ price: price.id }] });
    const tick = async (s) => {
      const now = (await qs.testHelpers.testClocks.retrieve(clock.id)).frozen_time;
      await qs.testHelpers.testClocks.advance(clock.id, { frozen_time: now + s });
    };
    return { cus, tick, params: { customer: cus.id, feature: f.lookup_key, event_name: m.event_name } };
  }

  /** Runs fn while other clients keep the event queue full (events of meter `noise`). */
  async function flooded(noise, customer, fn) {
    let stop = false;
    const flood = async () => {
      while (!stop) {
        await qs.billing.meterEvents.create({
          event_name: noise.event_name, payload: { stripe_customer_id: customer, value: '1' },
        }).catch(() => null);
      }
    };
    const floods = Array.from({ length: 6 }, flood);
    try {
      await sleep(5);
      return await fn();
    } finally {
      stop = true;
      await Promise.all(floods);
    }
  }

  test('units committed but not yet recorded stay held past the heartbeat timeout', async () => {
    const m = await createMeter(qs);
    const noise = await createMeter(qs);
    // A heartbeat whose own event is refused (429): its 30 units are committed, not recorded.
    let w;
    let a;
    let hb;
    for (let tries = 0; tries < 40 && !hb?.error; tries++) {
      w = await subscriber(m, '100');
      a = await raw('POST', '/v1/usage_sessions', w.params);
      await w.tick(30);
      hb = await flooded(noise, w.cus.id, () => outcome(raw('POST', `/v1/usage_sessions/${a.id}/heartbeat`, {})));
    }
    assert.equal(hb.error?.statusCode, 429, 'no heartbeat met a full queue');
    const limit = async () => (await check(w.cus.id, w.params.feature, undefined, qs)).limit;
    assert.deepEqual([(await limit()).used, (await limit()).reserved], ['0', '60']);
    // Its client is gone: the reservation lapses, the 30 pending units stay held.
    await w.tick(31);
    assert.deepEqual([(await limit()).reserved, (await limit()).remaining], ['30', '70']);
    const b = await raw('POST', '/v1/usage_sessions', w.params);
    let bb = b;
    for (let i = 0; i < 6 && bb.status === 'active'; i++) {
      await w.tick(30);
      bb = await raw('POST', `/v1/usage_sessions/${b.id}/heartbeat`, {});
    }
    assert.deepEqual([bb.status, bb.billed_quantity], ['limit_reached', 70]);
    // The late retry records the 30 units: used reaches the limit, never more.
    const late = await raw('POST', `/v1/usage_sessions/${a.id}/heartbeat`, {});
    assert.deepEqual([late.status, late.billed_quantity], ['expired', 30]);
    const end = await limit();
    assert.deepEqual([end.used, end.reserved], ['100', '0']);
    assert.equal(await usage(qs, m.id, w.cus.id, JAN, FEB), 100);
  });

  test('a minute_up start refused with 429 bills nothing and holds nothing, even after a restart', async () => {
    const m = await createMeter(qs);
    const noise = await createMeter(qs);
    let w;
    let started = [];
    let refused = [];
    for (let tries = 0; tries < 20 && !refused.length; tries++) {
      w = await subscriber(m, '1000');
      const params = { ...w.params, rounding: 'minute_up', heartbeat_timeout: 60 };
      const res = await flooded(noise, w.cus.id, () => Promise.all(Array.from({ length: 40 }, () => outcome(raw('POST', '/v1/usage_sessions', params)))));
      started = res.filter((r) => r.id);
      refused = res.filter((r) => r.error);
    }
    assert.ok(refused.length > 0, 'no start met a full queue');
    for (const r of refused) assert.equal(r.error.statusCode, 429);
    const limit = async () => (await check(w.cus.id, w.params.feature, undefined, qs)).limit;
    // Each started call: its first minute used, the next one reserved; the refused hold nothing.
    assert.deepEqual([(await limit()).used, (await limit()).reserved], [String(started.length), String(started.length)]);
    await q.restart();
    qs = q.stripe;
    assert.equal(await usage(qs, m.id, w.cus.id, JAN, FEB), started.length);
    assert.deepEqual([(await limit()).used, (await limit()).reserved], [String(started.length), String(started.length)]);
  });
});

// =============================================================================================
// 6. The seed scenario: Starter runs out mid-call, upgrades to Pro, continues.

describe('seed scenario: voice minutes on Starter, then Pro', () => {
  let voice;
  let starter;
  let pro;
  let proAddon;
  before(async () => {
    voice = await stripe.entitlements.features.create({ name: 'Voice minutes', lookup_key: 'voice_minutes' });
    starter = await plan('Starter', 14900, [{ feature: voice, limit: { meter: cat.minutes.id, quantity: '10' } }]);
    pro = await plan('Pro', 49900, [{ feature: voice, limit: { meter: cat.minutes.id, quantity: '100' } }]);
    proAddon = await plan('Pro minutes add-on', 20000, [{ feature: voice, limit: { meter: cat.minutes.id, quantity: '100' } }]);
  });
  const call = (w, agent) => w.start({
    feature: 'voice_minutes', event_name: cat.minutes.event_name, rounding: 'minute_up', payload: { agent_id: agent },
  });

  /** Heartbeats every 20 s until the session is no longer active; returns the last answer. */
  async function talk(w, s, maxSeconds) {
    let b = s;
    for (let t = 20; t <= maxSeconds && b.status === 'active'; t += 20) {
      await w.tick(20);
      b = await sessions.beat(s.id);
    }
    return b;
  }

  test('runs out mid-call, upgrades to Pro by replacing the price, continues', async () => {
    const w = await world(utc(2026, 3, 1));
    const T = w.now;
    const sub = await w.subscribe([starter]);
    const s = await call(w, 'agent_1');
    assert.deepEqual([s.status, s.billed_quantity, s.granted_seconds, s.payload.agent_id], ['active', 1, 120, 'agent_1']);
    const last = await talk(w, s, 900);
    // Ten minutes: the call may run to 600 s and no further.
    assert.equal(last.status, 'limit_reached');
    assert.equal(last.ended_at, T + 600);
    assert.equal(last.billed_quantity, 10);
    assert.deepEqual(last.payload, { agent_id: 'agent_1' });
    let r = await w.check('voice_minutes');
    assert.deepEqual([r.entitled, r.reason, r.limit.used, r.limit.remaining, r.limit.quantity], [false, 'limit_reached', '10', '0', '10']);
    assert.equal(await usage(stripe, cat.minutes.id, w.cus.id, T, T + HOUR), 10);
    await expectPaymentRequired(call(w, 'agent_1'), 'usage_limit_reached');

    // Upgrade: Pro's price replaces Starter's on the same item.
    const before = await summaryEvents(w.cus.id);
    const up = await stripe.subscriptions.update(sub.id, { items: [{ id: sub.items.data[0].id, price: pro.price.id }] });
    assert.equal(up.items.data.length, 1);
    assert.equal(up.items.data[0].price.id, pro.price.id);
    // Same features: no summary event; the limit is Pro's, the period's usage kept.
    assert.equal((await summaryEvents(w.cus.id)).length, before.length);
    r = await w.check('voice_minutes');
    assert.deepEqual([r.entitled, r.reason, r.limit.quantity, r.limit.used, r.limit.remaining, r.limit.period_start],
      [true, null, '100', '10', '90', T]);
    const s2 = await call(w, 'agent_1');
    assert.deepEqual([s2.status, s2.billed_quantity, s2.granted_seconds], ['active', 1, 120]);
    for (let i = 0; i < 3; i++) {
      await w.tick(20);
      assert.equal((await sessions.beat(s2.id)).status, 'active');
    }
    await w.tick(10); // 70 s: two started minutes
    const e2 = await sessions.end(s2.id);
    assert.equal(e2.billed_quantity, 2);
    assert.equal((await w.check('voice_minutes')).limit.used, '12');
  });

  test('an upgrade during a call lets the same call go past the old cap', async () => {
    const w = await world(utc(2026, 3, 1));
    const T = w.now;
    const sub = await w.subscribe([starter]);
    const s = await call(w, 'agent_3');
    let b = await talk(w, s, 560);
    // At 560 s the tenth minute is billed and nothing is left to reserve: 40 s to go.
    assert.deepEqual([b.status, b.billed_quantity, b.granted_seconds, b.remaining], ['active', 10, 40, '0']);
    await stripe.subscriptions.update(sub.id, { items: [{ id: sub.items.data[0].id, price: pro.price.id }] });
    await w.tick(20); // 580 s
    b = await sessions.beat(s.id);
    assert.deepEqual([b.status, b.billed_quantity, b.granted_seconds, b.remaining], ['active', 10, 80, '89']);
    for (let t = 600; t <= 700; t += 20) {
      await w.tick(20);
      b = await sessions.beat(s.id);
      assert.equal(b.status, 'active', `at ${t} s`);
    }
    const e = await sessions.end(s.id);
    assert.deepEqual([e.status, e.billed_quantity, e.ended_at], ['ended', 12, T + 700]);
    assert.equal((await w.check('voice_minutes')).limit.used, '12');
  });

  test('a schedule moving to Pro next period raises the limit at the renewal', async () => {
    const APR = utc(2026, 4, 1);
    const w = await world(utc(2026, 3, 1));
    const sub = await w.subscribe([starter]);
    const sched = await stripe.subscriptionSchedules.create({ from_subscription: sub.id });
    await stripe.subscriptionSchedules.update(sched.id, {
      phases: [
        { items: [{ price: starter.price.id }], start_date: utc(2026, 3, 1), end_date: APR },
        { items: [{ price: pro.price.id }] },
      ],
    });
    assert.equal((await w.check('voice_minutes')).limit.quantity, '10');
    await w.advance(utc(2026, 3, 20));
    await w.use(cat.minutes, 10);
    assert.equal((await w.check('voice_minutes')).reason, 'limit_reached');
    await w.advance(APR + 2 * HOUR);
    const r = await w.check('voice_minutes');
    assert.deepEqual(limitOf(r), {
      enforcement: 'hard', meter: cat.minutes.id, period_end: utc(2026, 5, 1), period_start: APR,
      quantity: '100', remaining: '100', reserved: '0', used: '0',
    });
    assert.equal(r.entitled, true);
  });

  test('or upgrades by adding Pro as a second item: the larger limit applies', async () => {
    const w = await world(utc(2026, 3, 1));
    const sub = await w.subscribe([starter]);
    const s = await call(w, 'agent_2');
    const last = await talk(w, s, 900);
    assert.equal(last.status, 'limit_reached');
    await expectPaymentRequired(call(w, 'agent_2'), 'usage_limit_reached');
    await stripe.subscriptions.update(sub.id, { items: [{ id: sub.items.data[0].id }, { price: proAddon.price.id }] });
    const r = await w.check('voice_minutes');
    assert.deepEqual([r.entitled, r.limit.quantity, r.limit.used], [true, '100', '10']);
    const s2 = await call(w, 'agent_2');
    assert.equal(s2.status, 'active');
    assert.equal(s2.granted_seconds, 120);
  });
});
