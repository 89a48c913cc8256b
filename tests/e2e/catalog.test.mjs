// The billing catalog through the official stripe client: products, prices (per unit, decimal,
// tiered, transformed, metered), lookup keys, list filters, test clocks, and /v1/events.

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startServer, expectStripeError, createMeter, createCustomer, nowSec, uniq, DAY,
} from './helpers.mjs';

let srv;
let stripe;
before(async () => {
  srv = await startServer();
  stripe = srv.stripe;
});
after(async () => { await srv?.close(); });

// stripe-node parses *_decimal fields into Decimal objects; compare them as strings.
const dec = (v) => (v === null || v === undefined ? v : String(v));
const utc = (y, m, d, h = 0, mi = 0, s = 0) => Date.UTC(y, m - 1, d, h, mi, s) / 1000;

// Stripe's own tier example (https://docs.stripe.com/products-prices/pricing-models#tiered-pricing).
const STRIPE_TIERS = [
  { up_to: 5, unit_amount: 500, flat_amount: 1000 },
  { up_to: 10, unit_amount: 400, flat_amount: 2000 },
  { up_to: 15, unit_amount: 300, flat_amount: 3000 },
  { up_to: 20, unit_amount: 200, flat_amount: 4000 },
  { up_to: 'inf', unit_amount: 100, flat_amount: 5000 },
];

async function product(extra = {}) {
  return stripe.products.create({ name: uniq('Product'), ...extra });
}

// ---------------------------------------------------------------------------------------------

describe('products', () => {
  test('create without an id gives a prod_ id and Stripe\'s product shape', async () => {
    const t0 = nowSec();
    const p = await stripe.products.create({
      name: 'Voice minutes', description: 'per-minute voice', metadata: { tier: 'gold' },
    });
    assert.match(p.id, /^prod_[A-Za-z0-9]+$/);
    assert.equal(p.object, 'product');
    assert.equal(p.name, 'Voice minutes');
    assert.equal(p.description, 'per-minute voice');
    assert.equal(p.active, true);
    assert.equal(p.livemode, false);
    assert.deepEqual(p.metadata, { tier: 'gold' });
    assert.equal(p.default_price, null);
    assert.deepEqual(p.images, []);
    assert.equal(p.type, 'service');
    assert.ok(p.created >= t0 - 2 && p.created <= nowSec() + 2, `created ${p.created}`);
    assert.ok(Number.isInteger(p.updated));
  });

  test('create with a custom id keeps it; a duplicate id is 400', async () => {
    const id = uniq('plan-gold');
    const p = await stripe.products.create({ id, name: 'Gold' });
    assert.equal(p.id, id);
    const r = await stripe.products.retrieve(id);
    assert.equal(r.id, id);
    assert.equal(r.name, 'Gold');
    await expectStripeError(stripe.products.create({ id, name: 'Gold again' }), {
      status: 400, code: 'resource_already_exists', param: 'id',
    });
    // The first one is untouched.
    assert.equal((await stripe.products.retrieve(id)).name, 'Gold');
  });

  test('name is required', async () => {
    await expectStripeError(stripe.products.create({ description: 'nameless' }), {
      status: 400, code: 'parameter_missing', param: 'name',
    });
  });

  test('retrieve returns what create returned; unknown is 404', async () => {
    const p = await product({ metadata: { a: '1' } });
    const r = await stripe.products.retrieve(p.id);
    assert.deepStrictEqual({ ...r }, { ...p });
    await expectStripeError(stripe.products.retrieve('prod_doesnotexist'), {
      status: 404, code: 'resource_missing', param: 'id',
      message: "No such product: 'prod_doesnotexist'",
    });
  });

  test('update changes name, description, active and metadata', async () => {
    const p = await product({ description: 'before', metadata: { keep: 'k', drop: 'd' } });
    const u = await stripe.products.update(p.id, {
      name: 'Renamed', description: '', active: false, metadata: { drop: '', added: 'x' },
    });
    assert.equal(u.id, p.id);
    assert.equal(u.name, 'Renamed');
    assert.equal(u.description, null);
    assert.equal(u.active, false);
    assert.deepEqual(u.metadata, { keep: 'k', added: 'x' });
    assert.ok(u.updated >= p.updated);
    const r = await stripe.products.retrieve(p.id);
    assert.deepStrictEqual({ ...r }, { ...u });
    await expectStripeError(stripe.products.update(p.id, { colour: 'red' }), {
      status: 400, code: 'parameter_unknown', param: 'colour',
    });
    await expectStripeError(stripe.products.update('prod_nope', { name: 'x' }), {
      status: 404, code: 'resource_missing', param: 'id',
    });
  });

  test('delete is refused while the product has prices, allowed without', async () => {
    const withPrice = await product();
    await stripe.prices.create({ product: withPrice.id, currency: 'usd', unit_amount: 100 });
    await expectStripeError(stripe.products.del(withPrice.id), {
      status: 400, message: /price/,
    });
    assert.equal((await stripe.products.retrieve(withPrice.id)).id, withPrice.id);

    const bare = await product();
    const d = await stripe.products.del(bare.id);
    assert.deepStrictEqual({ ...d }, { id: bare.id, object: 'product', deleted: true });
    await expectStripeError(stripe.products.retrieve(bare.id), {
      status: 404, code: 'resource_missing', param: 'id',
    });
    await expectStripeError(stripe.products.del(bare.id), { status: 404, code: 'resource_missing' });
    const all = await stripe.products.list({ limit: 100 }).autoPagingToArray({ limit: 10000 });
    assert.ok(!all.some((x) => x.id === bare.id), 'a deleted product is still listed');
    // A deleted product cannot take new prices.
    await expectStripeError(stripe.prices.create({ product: bare.id, currency: 'usd', unit_amount: 1 }), {
      code: 'resource_missing', param: 'product',
    });
  });
});

describe('product list', () => {
  // A server of its own so the list holds exactly what is made here.
  let p;
  let ps;
  let activeIds; // newest first
  let inactiveIds;
  let allIds;
  before(async () => {
    p = await startServer();
    ps = p.stripe;
    const all = [];
    for (let i = 0; i < 8; i++) {
      const prod = await ps.products.create({ name: `p${i}`, active: i % 3 !== 2 });
      all.push(prod);
    }
    // One deleted product, never listed.
    const gone = await ps.products.create({ name: 'gone' });
    await ps.products.del(gone.id);
    allIds = all.map((x) => x.id).reverse();
    activeIds = all.filter((x) => x.active).map((x) => x.id).reverse();
    inactiveIds = all.filter((x) => !x.active).map((x) => x.id).reverse();
  });
  after(async () => { await p?.close(); });

  test('newest first with the list envelope', async () => {
    const l = await ps.products.list({ limit: 100 });
    assert.equal(l.object, 'list');
    assert.equal(l.url, '/v1/products');
    assert.equal(l.has_more, false);
    assert.deepEqual(l.data.map((x) => x.id), allIds);
  });

  test('active filter', async () => {
    assert.equal(activeIds.length, 6);
    assert.equal(inactiveIds.length, 2);
    const a = await ps.products.list({ active: true, limit: 100 });
    assert.deepEqual(a.data.map((x) => x.id), activeIds);
    const i = await ps.products.list({ active: false, limit: 100 });
    assert.deepEqual(i.data.map((x) => x.id), inactiveIds);
  });

  test('pagination: limit, starting_after, ending_before, auto-paging', async () => {
    const first = await ps.products.list({ limit: 3 });
    assert.deepEqual(first.data.map((x) => x.id), allIds.slice(0, 3));
    assert.equal(first.has_more, true);
    const second = await ps.products.list({ limit: 3, starting_after: allIds[2] });
    assert.deepEqual(second.data.map((x) => x.id), allIds.slice(3, 6));
    assert.equal(second.has_more, true);
    const last = await ps.products.list({ limit: 3, starting_after: allIds[5] });
    assert.deepEqual(last.data.map((x) => x.id), allIds.slice(6, 8));
    assert.equal(last.has_more, false);
    const back = await ps.products.list({ limit: 2, ending_before: allIds[4] });
    assert.deepEqual(back.data.map((x) => x.id), allIds.slice(2, 4));
    assert.equal(back.has_more, true);
    const walked = await ps.products.list({ limit: 3 }).autoPagingToArray({ limit: 100 });
    assert.deepEqual(walked.map((x) => x.id), allIds);
    const activeWalk = await ps.products.list({ limit: 2, active: true }).autoPagingToArray({ limit: 100 });
    assert.deepEqual(activeWalk.map((x) => x.id), activeIds);
  });
});

// ---------------------------------------------------------------------------------------------

describe('prices: amounts', () => {
  test('unit_amount 5 gives unit_amount 5 and unit_amount_decimal "5"', async () => {
    const prod = await product();
    const pr = await stripe.prices.create({ product: prod.id, currency: 'USD', unit_amount: 5 });
    assert.match(pr.id, /^price_[A-Za-z0-9]+$/);
    assert.equal(pr.object, 'price');
    assert.equal(pr.product, prod.id);
    assert.equal(pr.currency, 'usd');
    assert.equal(pr.active, true);
    assert.equal(pr.billing_scheme, 'per_unit');
    assert.equal(pr.type, 'one_time');
    assert.equal(pr.recurring, null);
    assert.equal(pr.tiers_mode, null);
    assert.equal(pr.transform_quantity, null);
    assert.equal(pr.lookup_key, null);
    assert.equal(pr.nickname, null);
    assert.equal(pr.livemode, false);
    assert.deepEqual(pr.metadata, {});
    assert.equal(pr.unit_amount, 5);
    assert.equal(dec(pr.unit_amount_decimal), '5');
    const raw = await srv.raw('GET', `/v1/prices/${pr.id}`);
    assert.equal(raw.status, 200);
    assert.strictEqual(raw.json.unit_amount, 5);
    assert.strictEqual(raw.json.unit_amount_decimal, '5');
    assert.ok(!('tiers' in raw.json), 'a per_unit price has no tiers field');
  });

  test('unit_amount_decimal "0.2" gives unit_amount null and unit_amount_decimal "0.2"', async () => {
    const prod = await product();
    const pr = await stripe.prices.create({ product: prod.id, currency: 'usd', unit_amount_decimal: '0.2' });
    assert.equal(pr.unit_amount, null);
    assert.equal(dec(pr.unit_amount_decimal), '0.2');
    const raw = await srv.raw('GET', `/v1/prices/${pr.id}`);
    assert.strictEqual(raw.json.unit_amount, null);
    assert.strictEqual(raw.json.unit_amount_decimal, '0.2');
  });

  test('a whole unit_amount_decimal is also a whole unit_amount', async () => {
    const prod = await product();
    const pr = await stripe.prices.create({ product: prod.id, currency: 'usd', unit_amount_decimal: '250' });
    assert.equal(pr.unit_amount, 250);
    assert.equal(dec(pr.unit_amount_decimal), '250');
  });

  test('unit_amount_decimal takes up to 12 decimal places', async () => {
    const prod = await product();
    const pr = await stripe.prices.create({
      product: prod.id, currency: 'usd', unit_amount_decimal: '0.000000000001',
    });
    const raw = await srv.raw('GET', `/v1/prices/${pr.id}`);
    assert.strictEqual(raw.json.unit_amount_decimal, '0.000000000001');
    await expectStripeError(stripe.prices.create({
      product: prod.id, currency: 'usd', unit_amount_decimal: '0.0000000000001',
    }), { status: 400, code: 'parameter_invalid', param: 'unit_amount_decimal' });
    await expectStripeError(stripe.prices.create({
      product: prod.id, currency: 'usd', unit_amount_decimal: 'abc',
    }), { status: 400, code: 'parameter_invalid', param: 'unit_amount_decimal' });
  });

  test('unit_amount and unit_amount_decimal together is 400 parameters_exclusive', async () => {
    const prod = await product();
    await expectStripeError(stripe.prices.create({
      product: prod.id, currency: 'usd', unit_amount: 5, unit_amount_decimal: '5',
    }), { status: 400, code: 'parameters_exclusive' });
  });

  test('an amount is required; a negative one is refused', async () => {
    const prod = await product();
    await expectStripeError(stripe.prices.create({ product: prod.id, currency: 'usd' }), {
      status: 400, code: 'parameter_missing',
    });
    await expectStripeError(stripe.prices.create({ product: prod.id, currency: 'usd', unit_amount: -1 }), {
      status: 400, param: 'unit_amount',
    });
  });

  test('unknown currency is 400 on currency; currency is required', async () => {
    const prod = await product();
    await expectStripeError(stripe.prices.create({ product: prod.id, currency: 'xyz', unit_amount: 5 }), {
      status: 400, code: 'parameter_invalid', param: 'currency',
    });
    await expectStripeError(stripe.prices.create({ product: prod.id, unit_amount: 5 }), {
      status: 400, code: 'parameter_missing', param: 'currency',
    });
  });

  test('zero-decimal currency: a jpy price is whole yen', async () => {
    const prod = await product();
    const pr = await stripe.prices.create({
      product: prod.id, currency: 'jpy', unit_amount: 1500, recurring: { interval: 'month' },
    });
    assert.equal(pr.currency, 'jpy');
    assert.equal(pr.unit_amount, 1500);
    assert.equal(dec(pr.unit_amount_decimal), '1500');
    assert.equal(pr.type, 'recurring');
  });

  test('unknown product is resource_missing on product; product_data creates one inline', async () => {
    await expectStripeError(stripe.prices.create({ product: 'prod_nope', currency: 'usd', unit_amount: 5 }), {
      code: 'resource_missing', param: 'product',
    });
    const name = uniq('Inline product');
    const pr = await stripe.prices.create({ product_data: { name }, currency: 'usd', unit_amount: 700 });
    assert.match(pr.product, /^prod_/);
    const prod = await stripe.products.retrieve(pr.product);
    assert.equal(prod.name, name);
    assert.equal(prod.active, true);
    await expectStripeError(stripe.prices.create({ currency: 'usd', unit_amount: 5 }), {
      status: 400, code: 'parameter_missing', param: 'product',
    });
    await expectStripeError(stripe.prices.create({
      product: prod.id, product_data: { name: 'x' }, currency: 'usd', unit_amount: 5,
    }), { status: 400, code: 'parameters_exclusive' });
  });
});

describe('prices: tiers', () => {
  test('graduated: tiers are returned only with expand[]=tiers, up_to null for inf', async () => {
    const prod = await product();
    const pr = await stripe.prices.create({
      product: prod.id, currency: 'usd', billing_scheme: 'tiered', tiers_mode: 'graduated',
      tiers: STRIPE_TIERS, recurring: { interval: 'month' },
    });
    assert.equal(pr.billing_scheme, 'tiered');
    assert.equal(pr.tiers_mode, 'graduated');
    assert.equal(pr.unit_amount, null);
    assert.equal(pr.unit_amount_decimal, null);
    assert.ok(!('tiers' in pr), `tiers present without expand: ${JSON.stringify(pr.tiers)}`);

    const plain = await stripe.prices.retrieve(pr.id);
    assert.ok(!('tiers' in plain), 'tiers present on retrieve without expand');
    const ex = await stripe.prices.retrieve(pr.id, { expand: ['tiers'] });
    assert.equal(ex.tiers.length, 5);
    assert.deepEqual(ex.tiers.map((t) => t.up_to), [5, 10, 15, 20, null]);
    assert.deepEqual(ex.tiers.map((t) => t.unit_amount), [500, 400, 300, 200, 100]);
    assert.deepEqual(ex.tiers.map((t) => t.flat_amount), [1000, 2000, 3000, 4000, 5000]);
    assert.deepEqual(ex.tiers.map((t) => dec(t.unit_amount_decimal)), ['500', '400', '300', '200', '100']);
    assert.deepEqual(ex.tiers.map((t) => dec(t.flat_amount_decimal)), ['1000', '2000', '3000', '4000', '5000']);

    const listed = await stripe.prices.list({ product: prod.id, expand: ['data.tiers'] });
    assert.equal(listed.data.length, 1);
    assert.equal(listed.data[0].tiers.length, 5);
    const listedPlain = await stripe.prices.list({ product: prod.id });
    assert.ok(!('tiers' in listedPlain.data[0]), 'tiers present in a list without expand');

    const created = await stripe.prices.create({
      product: prod.id, currency: 'usd', billing_scheme: 'tiered', tiers_mode: 'graduated',
      tiers: STRIPE_TIERS, expand: ['tiers'],
    });
    assert.equal(created.tiers.length, 5);
  });

  test('volume with decimal tier amounts and a tier without a flat amount', async () => {
    const prod = await product();
    const pr = await stripe.prices.create({
      product: prod.id, currency: 'usd', billing_scheme: 'tiered', tiers_mode: 'volume',
      tiers: [
        { up_to: 1000, unit_amount_decimal: '0.25' },
        { up_to: 'inf', unit_amount_decimal: '0.125', flat_amount_decimal: '99.5' },
      ],
      expand: ['tiers'],
    });
    assert.equal(pr.tiers_mode, 'volume');
    const [a, b] = pr.tiers;
    assert.equal(a.up_to, 1000);
    assert.equal(a.unit_amount, null);
    assert.equal(dec(a.unit_amount_decimal), '0.25');
    assert.equal(a.flat_amount, null);
    assert.equal(a.flat_amount_decimal, null);
    assert.equal(b.up_to, null);
    assert.equal(dec(b.unit_amount_decimal), '0.125');
    assert.equal(b.flat_amount, null);
    assert.equal(dec(b.flat_amount_decimal), '99.5');
  });

  test('tier validation errors', async () => {
    const prod = await product();
    const base = { product: prod.id, currency: 'usd', billing_scheme: 'tiered', tiers_mode: 'graduated' };
    // Last tier must be inf.
    await expectStripeError(stripe.prices.create({
      ...base, tiers: [{ up_to: 5, unit_amount: 1 }, { up_to: 10, unit_amount: 1 }],
    }), { status: 400, code: 'parameter_invalid', param: 'tiers[1]' });
    // inf only at the end.
    await expectStripeError(stripe.prices.create({
      ...base, tiers: [{ up_to: 'inf', unit_amount: 1 }, { up_to: 10, unit_amount: 1 }],
    }), { status: 400, code: 'parameter_invalid', param: 'tiers[0]' });
    // Strictly increasing.
    await expectStripeError(stripe.prices.create({
      ...base, tiers: [{ up_to: 10, unit_amount: 1 }, { up_to: 10, unit_amount: 1 }, { up_to: 'inf', unit_amount: 1 }],
    }), { status: 400, code: 'parameter_invalid', param: 'tiers[1]' });
    // A tier needs an amount.
    await expectStripeError(stripe.prices.create({
      ...base, tiers: [{ up_to: 10 }, { up_to: 'inf', unit_amount: 1 }],
    }), { status: 400, code: 'parameter_invalid', param: 'tiers[0]' });
    // Both forms of one amount.
    await expectStripeError(stripe.prices.create({
      ...base, tiers: [{ up_to: 10, unit_amount: 1, unit_amount_decimal: '1' }, { up_to: 'inf', unit_amount: 1 }],
    }), { status: 400, code: 'parameters_exclusive' });
    // up_to must be a positive integer or inf.
    await expectStripeError(stripe.prices.create({
      ...base, tiers: [{ up_to: 0, unit_amount: 1 }, { up_to: 'inf', unit_amount: 1 }],
    }), { status: 400, param: 'tiers[0][up_to]' });
    await expectStripeError(stripe.prices.create({
      ...base, tiers: [{ up_to: 'lots', unit_amount: 1 }, { up_to: 'inf', unit_amount: 1 }],
    }), { status: 400, param: 'tiers[0][up_to]' });
    // tiered needs tiers and tiers_mode; tiers need tiered; tiered takes no unit_amount.
    await expectStripeError(stripe.prices.create({ ...base }), {
      status: 400, code: 'parameter_missing', param: 'tiers',
    });
    await expectStripeError(stripe.prices.create({
      product: prod.id, currency: 'usd', billing_scheme: 'tiered', tiers: STRIPE_TIERS,
    }), { status: 400, code: 'parameter_missing', param: 'tiers_mode' });
    await expectStripeError(stripe.prices.create({
      product: prod.id, currency: 'usd', tiers_mode: 'volume', tiers: STRIPE_TIERS,
    }), { status: 400, param: 'tiers' });
    await expectStripeError(stripe.prices.create({ ...base, tiers: STRIPE_TIERS, unit_amount: 5 }), {
      status: 400, param: 'unit_amount',
    });
    await expectStripeError(stripe.prices.create({ ...base, tiers_mode: 'stepped', tiers: STRIPE_TIERS }), {
      status: 400, code: 'parameter_invalid', param: 'tiers_mode',
    });
  });
});

describe('prices: transform_quantity, recurring, meters', () => {
  test('transform_quantity is stored and returned', async () => {
    const prod = await product();
    const up = await stripe.prices.create({
      product: prod.id, currency: 'usd', unit_amount: 100, transform_quantity: { divide_by: 60, round: 'up' },
    });
    assert.deepEqual({ ...up.transform_quantity }, { divide_by: 60, round: 'up' });
    const down = await stripe.prices.create({
      product: prod.id, currency: 'usd', unit_amount: 100, transform_quantity: { divide_by: 1000, round: 'down' },
    });
    assert.deepEqual({ ...down.transform_quantity }, { divide_by: 1000, round: 'down' });
    await expectStripeError(stripe.prices.create({
      product: prod.id, currency: 'usd', unit_amount: 100, transform_quantity: { divide_by: 60 },
    }), { status: 400, code: 'parameter_missing', param: 'transform_quantity[round]' });
    await expectStripeError(stripe.prices.create({
      product: prod.id, currency: 'usd', unit_amount: 100, transform_quantity: { round: 'up' },
    }), { status: 400, code: 'parameter_missing', param: 'transform_quantity[divide_by]' });
    await expectStripeError(stripe.prices.create({
      product: prod.id, currency: 'usd', unit_amount: 100, transform_quantity: { divide_by: 0, round: 'up' },
    }), { status: 400, param: 'transform_quantity[divide_by]' });
  });

  test('transform_quantity with tiers is refused', async () => {
    const prod = await product();
    await expectStripeError(stripe.prices.create({
      product: prod.id, currency: 'usd', billing_scheme: 'tiered', tiers_mode: 'volume',
      tiers: STRIPE_TIERS, transform_quantity: { divide_by: 10, round: 'up' },
    }), { status: 400, param: 'transform_quantity' });
  });

  test('recurring fields are returned', async () => {
    const prod = await product();
    const pr = await stripe.prices.create({
      product: prod.id, currency: 'usd', unit_amount: 999,
      recurring: { interval: 'week', interval_count: 2, trial_period_days: 7 },
    });
    assert.equal(pr.type, 'recurring');
    assert.deepEqual({ ...pr.recurring }, {
      interval: 'week', interval_count: 2, meter: null, trial_period_days: 7, usage_type: 'licensed',
    });
    await expectStripeError(stripe.prices.create({
      product: prod.id, currency: 'usd', unit_amount: 1, recurring: { interval: 'fortnight' },
    }), { status: 400, code: 'parameter_invalid', param: 'recurring[interval]' });
    await expectStripeError(stripe.prices.create({
      product: prod.id, currency: 'usd', unit_amount: 1, recurring: { interval: 'year', interval_count: 4 },
    }), { status: 400, param: 'recurring[interval_count]' });
    await expectStripeError(stripe.prices.create({
      product: prod.id, currency: 'usd', unit_amount: 1, recurring: { interval_count: 1 },
    }), { status: 400, code: 'parameter_missing', param: 'recurring[interval]' });
  });

  test('metered needs an active meter; licensed takes none', async () => {
    const prod = await product();
    const meter = await createMeter(stripe);
    const ok = await stripe.prices.create({
      product: prod.id, currency: 'usd', unit_amount_decimal: '0.5',
      recurring: { interval: 'month', usage_type: 'metered', meter: meter.id },
    });
    assert.deepEqual({ ...ok.recurring }, {
      interval: 'month', interval_count: 1, meter: meter.id, trial_period_days: null, usage_type: 'metered',
    });
    await expectStripeError(stripe.prices.create({
      product: prod.id, currency: 'usd', unit_amount: 1, recurring: { interval: 'month', usage_type: 'metered' },
    }), { status: 400, code: 'parameter_missing', param: 'recurring[meter]' });
    await expectStripeError(stripe.prices.create({
      product: prod.id, currency: 'usd', unit_amount: 1,
      recurring: { interval: 'month', usage_type: 'licensed', meter: meter.id },
    }), { status: 400, param: 'recurring[meter]' });
    await expectStripeError(stripe.prices.create({
      product: prod.id, currency: 'usd', unit_amount: 1,
      recurring: { interval: 'month', usage_type: 'metered', meter: 'mtr_doesnotexist' },
    }), { code: 'resource_missing', param: 'recurring[meter]' });

    const idle = await createMeter(stripe);
    await stripe.billing.meters.deactivate(idle.id);
    await expectStripeError(stripe.prices.create({
      product: prod.id, currency: 'usd', unit_amount: 1,
      recurring: { interval: 'month', usage_type: 'metered', meter: idle.id },
    }), { status: 400, code: 'price_meter_inactive', param: 'recurring[meter]' });
    await stripe.billing.meters.reactivate(idle.id);
    const again = await stripe.prices.create({
      product: prod.id, currency: 'usd', unit_amount: 1,
      recurring: { interval: 'month', usage_type: 'metered', meter: idle.id },
    });
    assert.equal(again.recurring.meter, idle.id);
  });
});

describe('prices: lookup keys and updates', () => {
  test('lookup_key is unique; transfer_lookup_key moves it', async () => {
    const prod = await product();
    const key = uniq('pro_monthly');
    const a = await stripe.prices.create({ product: prod.id, currency: 'usd', unit_amount: 100, lookup_key: key });
    assert.equal(a.lookup_key, key);
    await expectStripeError(stripe.prices.create({
      product: prod.id, currency: 'usd', unit_amount: 200, lookup_key: key,
    }), { status: 400, param: 'lookup_key' });
    const b = await stripe.prices.create({
      product: prod.id, currency: 'usd', unit_amount: 200, lookup_key: key, transfer_lookup_key: true,
    });
    assert.equal(b.lookup_key, key);
    assert.equal((await stripe.prices.retrieve(a.id)).lookup_key, null);
    const found = await stripe.prices.list({ lookup_keys: [key] });
    assert.deepEqual(found.data.map((p) => p.id), [b.id]);

    // On update as well.
    const c = await stripe.prices.create({ product: prod.id, currency: 'usd', unit_amount: 300 });
    await expectStripeError(stripe.prices.update(c.id, { lookup_key: key }), {
      status: 400, param: 'lookup_key',
    });
    const moved = await stripe.prices.update(c.id, { lookup_key: key, transfer_lookup_key: true });
    assert.equal(moved.lookup_key, key);
    assert.equal((await stripe.prices.retrieve(b.id)).lookup_key, null);
    // The key may be set again on its own holder.
    const same = await stripe.prices.update(c.id, { lookup_key: key });
    assert.equal(same.lookup_key, key);
  });

  test('update of active, nickname, metadata, lookup_key', async () => {
    const prod = await product();
    const pr = await stripe.prices.create({
      product: prod.id, currency: 'usd', unit_amount: 1234, nickname: 'old', metadata: { a: '1', b: '2' },
    });
    assert.equal(pr.nickname, 'old');
    const key = uniq('lk');
    const u = await stripe.prices.update(pr.id, {
      active: false, nickname: 'new', metadata: { a: '', c: '3' }, lookup_key: key,
    });
    assert.equal(u.active, false);
    assert.equal(u.nickname, 'new');
    assert.deepEqual(u.metadata, { b: '2', c: '3' });
    assert.equal(u.lookup_key, key);
    assert.equal(u.unit_amount, 1234, 'the amount is immutable');
    const r = await stripe.prices.retrieve(pr.id);
    assert.deepStrictEqual(JSON.parse(JSON.stringify(r)), JSON.parse(JSON.stringify(u)));
    const cleared = await stripe.prices.update(pr.id, { nickname: '', lookup_key: '', active: true });
    assert.equal(cleared.nickname, null);
    assert.equal(cleared.lookup_key, null);
    assert.equal(cleared.active, true);
  });

  test('amounts cannot be updated: unit_amount is an unknown parameter', async () => {
    const prod = await product();
    const pr = await stripe.prices.create({ product: prod.id, currency: 'usd', unit_amount: 500 });
    await expectStripeError(stripe.prices.update(pr.id, { unit_amount: 600 }), {
      status: 400, code: 'parameter_unknown', param: 'unit_amount',
    });
    await expectStripeError(stripe.prices.update(pr.id, { currency: 'eur' }), {
      status: 400, code: 'parameter_unknown', param: 'currency',
    });
    assert.equal((await stripe.prices.retrieve(pr.id)).unit_amount, 500);
    await expectStripeError(stripe.prices.update('price_nope', { nickname: 'x' }), {
      status: 404, code: 'resource_missing', param: 'id',
    });
    await expectStripeError(stripe.prices.retrieve('price_nope'), {
      status: 404, code: 'resource_missing', param: 'id', message: "No such price: 'price_nope'",
    });
  });
});

describe('price list filters', () => {
  // A server of its own so the filters see exactly these prices.
  let p;
  let ps;
  const made = {}; // name -> price
  let prodA;
  let prodB;
  before(async () => {
    p = await startServer();
    ps = p.stripe;
    prodA = await ps.products.create({ name: 'A' });
    prodB = await ps.products.create({ name: 'B' });
    const mk = async (name, params) => {
      made[name] = await ps.prices.create({ currency: 'usd', unit_amount: 100, ...params });
    };
    // Created oldest to newest.
    await mk('a_eur_1', { product: prodA.id, currency: 'eur', lookup_key: 'eur_one' });
    await mk('a_eur_2', { product: prodA.id, currency: 'eur', recurring: { interval: 'month' } });
    await mk('a_eur_3', { product: prodA.id, currency: 'eur', recurring: { interval: 'year' }, lookup_key: 'eur_three' });
    await mk('a_usd_1', { product: prodA.id, recurring: { interval: 'month' }, lookup_key: 'usd_one' });
    await mk('b_usd_1', { product: prodB.id, active: false });
    await mk('b_usd_2', { product: prodB.id, recurring: { interval: 'month' } });
    await mk('b_usd_3', { product: prodB.id });
    await mk('b_usd_4', { product: prodB.id, recurring: { interval: 'week' }, active: false });
    await mk('b_jpy_1', { product: prodB.id, currency: 'jpy', unit_amount: 500 });
  });
  after(async () => { await p?.close(); });

  const ids = (names) => names.map((n) => made[n].id);
  const listIds = async (params) => (await ps.prices.list({ limit: 100, ...params })).data.map((x) => x.id);

  test('no filter: all, newest first', async () => {
    assert.deepEqual(await listIds({}), ids([
      'b_jpy_1', 'b_usd_4', 'b_usd_3', 'b_usd_2', 'b_usd_1', 'a_usd_1', 'a_eur_3', 'a_eur_2', 'a_eur_1',
    ]));
  });

  test('product', async () => {
    assert.deepEqual(await listIds({ product: prodA.id }), ids(['a_usd_1', 'a_eur_3', 'a_eur_2', 'a_eur_1']));
    assert.deepEqual(await listIds({ product: prodB.id }), ids(['b_jpy_1', 'b_usd_4', 'b_usd_3', 'b_usd_2', 'b_usd_1']));
  });

  test('active', async () => {
    assert.deepEqual(await listIds({ active: false }), ids(['b_usd_4', 'b_usd_1']));
    assert.deepEqual(await listIds({ active: true, product: prodB.id }), ids(['b_jpy_1', 'b_usd_3', 'b_usd_2']));
  });

  test('type', async () => {
    assert.deepEqual(await listIds({ type: 'recurring' }), ids(['b_usd_4', 'b_usd_2', 'a_usd_1', 'a_eur_3', 'a_eur_2']));
    assert.deepEqual(await listIds({ type: 'one_time' }), ids(['b_jpy_1', 'b_usd_3', 'b_usd_1', 'a_eur_1']));
    assert.deepEqual(await listIds({ type: 'one_time', active: true, product: prodB.id }), ids(['b_jpy_1', 'b_usd_3']));
    await expectStripeError(ps.prices.list({ type: 'sometimes' }), { status: 400, param: 'type' });
  });

  test('currency', async () => {
    assert.deepEqual(await listIds({ currency: 'eur' }), ids(['a_eur_3', 'a_eur_2', 'a_eur_1']));
    assert.deepEqual(await listIds({ currency: 'jpy' }), ids(['b_jpy_1']));
    assert.deepEqual(await listIds({ currency: 'usd', type: 'recurring' }), ids(['b_usd_4', 'b_usd_2', 'a_usd_1']));
  });

  test('lookup_keys[]', async () => {
    assert.deepEqual(await listIds({ lookup_keys: ['usd_one', 'eur_three'] }), ids(['a_usd_1', 'a_eur_3']));
    assert.deepEqual(await listIds({ lookup_keys: ['eur_one'] }), ids(['a_eur_1']));
    assert.deepEqual(await listIds({ lookup_keys: ['nobody'] }), []);
  });

  test('a filtered page is a full page (limit counts matching prices only)', async () => {
    // The three eur prices are the oldest; the newest six are not eur.
    const page = await ps.prices.list({ currency: 'eur', limit: 2 });
    assert.deepEqual(page.data.map((x) => x.id), ids(['a_eur_3', 'a_eur_2']));
    assert.equal(page.has_more, true);
    const walked = await ps.prices.list({ currency: 'eur', limit: 2 }).autoPagingToArray({ limit: 100 });
    assert.deepEqual(walked.map((x) => x.id), ids(['a_eur_3', 'a_eur_2', 'a_eur_1']));
    const oneTime = await ps.prices.list({ type: 'one_time', limit: 1 });
    assert.deepEqual(oneTime.data.map((x) => x.id), ids(['b_jpy_1']));
    assert.equal(oneTime.has_more, true);
    const walkedTypes = await ps.prices.list({ type: 'recurring', limit: 2 }).autoPagingToArray({ limit: 100 });
    assert.deepEqual(walkedTypes.map((x) => x.id), ids(['b_usd_4', 'b_usd_2', 'a_usd_1', 'a_eur_3', 'a_eur_2']));
  });
});

describe('test and live catalogs are disjoint', () => {
  test('a test-mode product or price is not found with a live key', async () => {
    const prod = await product();
    const pr = await stripe.prices.create({ product: prod.id, currency: 'usd', unit_amount: 5 });
    await expectStripeError(srv.liveStripe.products.retrieve(prod.id), { status: 404, code: 'resource_missing' });
    await expectStripeError(srv.liveStripe.prices.retrieve(pr.id), { status: 404, code: 'resource_missing' });
    await expectStripeError(srv.liveStripe.prices.create({ product: prod.id, currency: 'usd', unit_amount: 5 }), {
      code: 'resource_missing', param: 'product',
    });
    const live = await srv.liveStripe.products.create({ name: 'Live product' });
    assert.equal(live.livemode, true);
    const livePrices = await srv.liveStripe.prices.list({ limit: 100 });
    assert.ok(!livePrices.data.some((x) => x.id === pr.id));
    const testProducts = await stripe.products.list({ limit: 100 }).autoPagingToArray({ limit: 10000 });
    assert.ok(!testProducts.some((x) => x.id === live.id));
  });
});

// ---------------------------------------------------------------------------------------------

describe('test clocks', () => {
  test('create, retrieve, list, delete; then 404', async () => {
    const t0 = nowSec();
    const frozen = utc(2026, 1, 1);
    const k = await stripe.testHelpers.testClocks.create({ frozen_time: frozen, name: 'January' });
    assert.match(k.id, /^clock_[A-Za-z0-9]+$/);
    assert.equal(k.object, 'test_helpers.test_clock');
    assert.equal(k.frozen_time, frozen);
    assert.equal(k.name, 'January');
    assert.equal(k.status, 'ready');
    assert.equal(k.livemode, false);
    assert.ok(k.created >= t0 - 2 && k.created <= nowSec() + 2, `created ${k.created}`);
    assert.equal(k.deletes_after, k.created + 30 * DAY);

    const r = await stripe.testHelpers.testClocks.retrieve(k.id);
    assert.deepStrictEqual({ ...r }, { ...k });
    const listed = await stripe.testHelpers.testClocks.list({ limit: 100 }).autoPagingToArray({ limit: 1000 });
    assert.ok(listed.some((x) => x.id === k.id), 'the clock is not listed');

    const d = await stripe.testHelpers.testClocks.del(k.id);
    assert.deepStrictEqual({ ...d }, { id: k.id, object: 'test_helpers.test_clock', deleted: true });
    await expectStripeError(stripe.testHelpers.testClocks.retrieve(k.id), {
      status: 404, code: 'resource_missing',
    });
    const after = await stripe.testHelpers.testClocks.list({ limit: 100 }).autoPagingToArray({ limit: 1000 });
    assert.ok(!after.some((x) => x.id === k.id), 'a deleted clock is still listed');
    await expectStripeError(stripe.testHelpers.testClocks.advance(k.id, { frozen_time: frozen + 60 }), {
      status: 404, code: 'resource_missing',
    });
    await expectStripeError(stripe.testHelpers.testClocks.del('clock_doesnotexist'), {
      status: 404, code: 'resource_missing',
    });
  });

  test('frozen_time is required', async () => {
    await expectStripeError(stripe.testHelpers.testClocks.create({ name: 'no time' }), {
      status: 400, code: 'parameter_missing', param: 'frozen_time',
    });
  });

  test('advance moves frozen_time forward and customers read the clock\'s time', async () => {
    const frozen = utc(2026, 2, 1, 12);
    const k = await stripe.testHelpers.testClocks.create({ frozen_time: frozen });
    const cus = await createCustomer(stripe, { test_clock: k.id });
    assert.equal(cus.test_clock, k.id);
    assert.equal(cus.created, frozen);
    const a = await stripe.testHelpers.testClocks.advance(k.id, { frozen_time: frozen + 3 * DAY });
    assert.equal(a.frozen_time, frozen + 3 * DAY);
    assert.equal(a.status, 'ready');
    assert.equal((await stripe.testHelpers.testClocks.retrieve(k.id)).frozen_time, frozen + 3 * DAY);
  });

  test('advancing backwards (or not forward) is refused', async () => {
    const frozen = utc(2026, 3, 1);
    const k = await stripe.testHelpers.testClocks.create({ frozen_time: frozen });
    await expectStripeError(stripe.testHelpers.testClocks.advance(k.id, { frozen_time: frozen - 60 }), {
      status: 400, code: 'parameter_invalid', param: 'frozen_time',
    });
    await expectStripeError(stripe.testHelpers.testClocks.advance(k.id, { frozen_time: frozen }), {
      status: 400, param: 'frozen_time',
    });
    assert.equal((await stripe.testHelpers.testClocks.retrieve(k.id)).frozen_time, frozen);
  });

  test('advancing more than two intervals of the shortest subscription is refused', async () => {
    const frozen = utc(2026, 4, 1);
    const k = await stripe.testHelpers.testClocks.create({ frozen_time: frozen });
    const cus = await createCustomer(stripe, { test_clock: k.id });
    const prod = await product();
    const monthly = await stripe.prices.create({ product: prod.id, currency: 'usd', unit_amount: 100, recurring: { interval: 'month' } });
    const daily = await stripe.prices.create({ product: prod.id, currency: 'usd', unit_amount: 100, recurring: { interval: 'day' } });
    await stripe.subscriptions.create({ customer: cus.id, items: [{ price: monthly.id }] });
    await stripe.subscriptions.create({ customer: cus.id, items: [{ price: daily.id }] });
    // The shortest is a day: at most two days per advance.
    await expectStripeError(stripe.testHelpers.testClocks.advance(k.id, { frozen_time: frozen + 2 * DAY + 1 }), {
      status: 400, param: 'frozen_time',
    });
    assert.equal((await stripe.testHelpers.testClocks.retrieve(k.id)).frozen_time, frozen);
    const ok = await stripe.testHelpers.testClocks.advance(k.id, { frozen_time: frozen + 2 * DAY });
    assert.equal(ok.frozen_time, frozen + 2 * DAY);
  });

  test('test clocks are a test-mode feature', async () => {
    await expectStripeError(srv.liveStripe.testHelpers.testClocks.create({ frozen_time: utc(2026, 1, 1) }), {
      status: 400,
    });
    const k = await stripe.testHelpers.testClocks.create({ frozen_time: utc(2026, 1, 1) });
    let err;
    try {
      await srv.liveStripe.testHelpers.testClocks.advance(k.id, { frozen_time: utc(2026, 1, 2) });
    } catch (e) { err = e; }
    assert.ok(err, 'a live key advanced a test clock');
    assert.ok([400, 404].includes(err.statusCode), `status ${err.statusCode}`);
    assert.equal((await stripe.testHelpers.testClocks.retrieve(k.id)).frozen_time, utc(2026, 1, 1));
  });

  test('deleting a clock deletes its customers and cancels their subscriptions', async () => {
    const frozen = utc(2026, 5, 1);
    const k = await stripe.testHelpers.testClocks.create({ frozen_time: frozen });
    const cus = await createCustomer(stripe, { test_clock: k.id });
    const prod = await product();
    const price = await stripe.prices.create({ product: prod.id, currency: 'usd', unit_amount: 100, recurring: { interval: 'month' } });
    const sub = await stripe.subscriptions.create({ customer: cus.id, items: [{ price: price.id }] });
    await stripe.testHelpers.testClocks.del(k.id);
    const s = await stripe.subscriptions.retrieve(sub.id);
    assert.equal(s.status, 'canceled');
    let c;
    try {
      c = await stripe.customers.retrieve(cus.id);
    } catch (e) {
      assert.equal(e.statusCode, 404);
      return;
    }
    assert.equal(c.deleted, true);
  });
});

// ---------------------------------------------------------------------------------------------

describe('events', () => {
  let prod;
  let price;
  let sub;
  before(async () => {
    prod = await product();
    price = await stripe.prices.create({ product: prod.id, currency: 'usd', unit_amount: 4200, recurring: { interval: 'month' } });
    const k = await stripe.testHelpers.testClocks.create({ frozen_time: utc(2026, 6, 1) });
    const cus = await createCustomer(stripe, { test_clock: k.id });
    sub = await stripe.subscriptions.create({ customer: cus.id, items: [{ price: price.id }] });
  });

  test('list and retrieve; the event carries the object', async () => {
    const all = await stripe.events.list({ limit: 100 });
    assert.equal(all.object, 'list');
    assert.equal(all.url, '/v1/events');
    const created = all.data.find((e) => e.type === 'product.created' && e.data.object.id === prod.id);
    assert.ok(created, 'no product.created event for the product');
    assert.match(created.id, /^evt_/);
    assert.equal(created.object, 'event');
    assert.equal(created.livemode, false);
    assert.equal(created.data.object.object, 'product');
    assert.equal(created.data.object.name, prod.name);
    const r = await stripe.events.retrieve(created.id);
    assert.deepStrictEqual(JSON.parse(JSON.stringify(r)), JSON.parse(JSON.stringify(created)));
    await expectStripeError(stripe.events.retrieve('evt_doesnotexist'), {
      status: 404, code: 'resource_missing', param: 'id',
    });
  });

  test('type filter: exact type', async () => {
    const list = await stripe.events.list({ type: 'price.created', limit: 100 }).autoPagingToArray({ limit: 10000 });
    assert.ok(list.length > 0);
    assert.ok(list.every((e) => e.type === 'price.created'), JSON.stringify(list.map((e) => e.type)));
    assert.ok(list.some((e) => e.data.object.id === price.id), 'the price.created event is missing');
    const subs = await stripe.events.list({ type: 'customer.subscription.created', limit: 100 }).autoPagingToArray({ limit: 10000 });
    assert.ok(subs.some((e) => e.data.object.id === sub.id));
    assert.ok(subs.every((e) => e.type === 'customer.subscription.created'));
    const none = await stripe.events.list({ type: 'no.such.type' });
    assert.deepEqual(none.data, []);
  });

  test('type filter: "invoice.*" matches every invoice event', async () => {
    const list = await stripe.events.list({ type: 'invoice.*', limit: 100 }).autoPagingToArray({ limit: 10000 });
    assert.ok(list.every((e) => e.type.startsWith('invoice.')), JSON.stringify(list.map((e) => e.type)));
    const forFirst = list.filter((e) => e.data.object.id === sub.latest_invoice);
    const types = new Set(forFirst.map((e) => e.type));
    assert.ok(types.has('invoice.created'), `types ${[...types]}`);
    assert.ok(types.has('invoice.finalized'), `types ${[...types]}`);
    for (const e of forFirst) assert.equal(e.data.object.object, 'invoice');
    const subEvents = await stripe.events.list({ type: 'customer.subscription.*', limit: 100 }).autoPagingToArray({ limit: 10000 });
    assert.ok(subEvents.length > 0);
    assert.ok(subEvents.every((e) => e.type.startsWith('customer.subscription.')));
  });

  test('events are newest first and paginate', async () => {
    const page1 = await stripe.events.list({ limit: 3 });
    assert.equal(page1.data.length, 3);
    assert.equal(page1.has_more, true);
    const page2 = await stripe.events.list({ limit: 3, starting_after: page1.data[2].id });
    const seen = new Set(page1.data.map((e) => e.id));
    for (const e of page2.data) assert.ok(!seen.has(e.id), 'an event appears on two pages');
    const walked = await stripe.events.list({ limit: 7 }).autoPagingToArray({ limit: 10000 });
    assert.equal(new Set(walked.map((e) => e.id)).size, walked.length);
    // A later product's event comes before an earlier one's.
    const p2 = await product();
    const latest = await stripe.events.list({ limit: 1 });
    assert.equal(latest.data[0].type, 'product.created');
    assert.equal(latest.data[0].data.object.id, p2.id);
  });
});
