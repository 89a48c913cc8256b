// Stripe's Search API through the official stripe client: GET /v1/{customers,products,prices,
// subscriptions,invoices}/search, the query language (exact and substring matches, numeric
// ranges, null, negation, AND/OR), paging with next_page, total_count, test/live isolation,
// and every refusal of a bad query or parameter.
//
// Every query is scoped to the objects its test made (a metadata["run"] clause holding a uniq()
// id, or for invoices, which have no settable metadata, the test's own customer), so the tests
// share the server but not their results.

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, expectStripeError, expectRawError, uniq, sleep, nowSec } from './helpers.mjs';

let srv;
let stripe;
before(async () => {
  srv = await startServer();
  stripe = srv.stripe;
});
after(async () => { await srv?.close(); });

const idsOf = (r) => r.data.map((x) => x.id);
const idsIn = (objs) => objs.map((x) => x.id);
/** The newest-first order of objects made in the given order. */
const newestFirst = (...objs) => idsIn(objs).reverse();
const run = () => uniq('run');
const scope = (r) => `metadata["run"]:"${r}"`;
const payingCustomer = (extra = {}) =>
  stripe.customers.create({ name: 'Subscriber', invoice_settings: { default_payment_method: 'pm_x' }, ...extra });

/** Waits until the wall clock is past second `t`, so the next object is created after it. */
async function nextSecond(t) {
  // 100 ms into the next second: the server's clock may be read coarsely, a few ms behind.
  while (Date.now() < (t + 1) * 1000 + 100) await sleep(20);
}

/**
 * Searches `resource` (customers, products, ...) for `query` with a page large enough to hold
 * every match, checks the search_result envelope, and returns the ids in order.
 */
async function search(resource, query, { client = stripe, ...extra } = {}) {
  const r = await client[resource].search({ query, limit: 100, ...extra });
  assert.equal(r.object, 'search_result', `query ${query}`);
  assert.equal(r.url, `/v1/${resource}/search`);
  assert.equal(r.has_more, false, `query ${query}`);
  assert.equal(r.next_page, null, `query ${query}`);
  return idsOf(r);
}

/** Asserts that each [query, expected objects or ids] pair finds exactly those, in that order. */
async function expectFinds(resource, cases, opts) {
  for (const [query, want] of cases) {
    const wantIds = want.map((x) => (typeof x === 'string' ? x : x.id));
    assert.deepEqual(await search(resource, query, opts), wantIds, `${resource} search: ${query}`);
  }
}

/** GET /v1/{resource}/search with raw HTTP; params are sent as given (no encoding by a client). */
function rawSearch(resource, params, opts = {}) {
  const qs = Object.entries(params).map(([k, v]) => `${k}=${encodeURIComponent(v)}`).join('&');
  return srv.raw('GET', `/v1/${resource}/search${qs ? `?${qs}` : ''}`, opts);
}

/** A refused query: 400 invalid_request_error naming `query`. */
function badQuery(resource, query, message = /\S/) {
  return expectStripeError(stripe[resource].search({ query }), { status: 400, param: 'query', message })
    .catch((e) => { e.message = `query ${JSON.stringify(query)} on ${resource}: ${e.message}`; throw e; });
}

// ---------------------------------------------------------------------------------------------

describe('customers', () => {
  // Read-only fixture: no test below changes these customers.
  let R;
  let c1, c2, c3, c4, c5;
  before(async () => {
    R = run();
    c1 = await stripe.customers.create({
      name: 'Ada one two three', email: `amy.${R}@example.test`, phone: '+1 555 0101',
      metadata: { run: R, plan: 'pro', region: 'eu' },
    });
    c2 = await stripe.customers.create({
      name: 'Bob one twothree', email: `AMY.${R}@EXAMPLE.TEST`,
      metadata: { run: R, plan: 'PRO' },
    });
    c3 = await stripe.customers.create({
      name: 'Carol two one', email: `amy.${R}@example.test.org`,
      metadata: { run: R, plan: 'pro plus', tier: `gold_${R}` },
    });
    c4 = await stripe.customers.create({ name: "Pat O'Brien", metadata: { run: R, tier: `silver_${R}` } });
    c5 = await stripe.customers.create({ metadata: { run: R } });
  });

  test('the run clause alone finds every customer of the run, newest first, as retrieve shows them', async () => {
    const r = await stripe.customers.search({ query: scope(R) });
    assert.equal(r.object, 'search_result');
    assert.equal(r.url, '/v1/customers/search');
    assert.equal(r.has_more, false);
    assert.equal(r.next_page, null);
    assert.equal(r.total_count, undefined, 'total_count only when expanded');
    assert.deepEqual(idsOf(r), newestFirst(c1, c2, c3, c4, c5));
    const found = r.data.find((c) => c.id === c1.id);
    assert.equal(found.object, 'customer');
    assert.equal(found.name, c1.name);
    assert.equal(found.email, c1.email);
    assert.deepEqual(found.metadata, { run: R, plan: 'pro', region: 'eu' });
    assert.equal(found.livemode, false);
    // metadata['key'] with single quotes is the same clause.
    await expectFinds('customers', [[`metadata['run']:'${R}'`, newestFirst(c1, c2, c3, c4, c5)]]);
  });

  test('name: matches a contiguous run of whole words, case-insensitively', async () => {
    const S = scope(R);
    await expectFinds('customers', [
      [`${S} name:"one two"`, [c1]],
      [`${S} name:"ONE TWO THREE"`, [c1]],
      [`${S} name:"two three"`, [c1]],
      [`${S} name:"one three"`, []],
      [`${S} name:"three two"`, []],
      [`${S} name:"one"`, [c3, c2, c1]],
      [`${S} name:"two"`, [c3, c1]],
      [`${S} name:"twothree"`, [c2]],
      [`${S} name:"tw"`, []],
      [`${S} name:"ada one two three"`, [c1]],
      [`${S} name:"ada one two three four"`, []],
      [`${S} name:"O'Brien"`, [c4]],
      [`${S} name:'o\\'brien'`, [c4]],
      [`${S} name:"pat o'brien"`, [c4]],
    ]);
  });

  test('~ is a case-insensitive substring match', async () => {
    const S = scope(R);
    await expectFinds('customers', [
      [`${S} name~"twoth"`, [c2]],
      [`${S} name~"TWO"`, [c3, c2, c1]],
      [`${S} name~"two o"`, [c3]],
      [`${S} name~"o'b"`, [c4]],
      [`${S} name~"zzz"`, []],
      [`${S} email~"${R}@example.test"`, [c3, c2, c1]],
      [`${S} email~".TEST.ORG"`, [c3]],
      [`${S} phone~"555"`, [c1]],
    ]);
  });

  test('email: is exact and case-insensitive; phone: matches words', async () => {
    const S = scope(R);
    await expectFinds('customers', [
      [`${S} email:"amy.${R}@example.test"`, [c2, c1]],
      [`${S} email:"Amy.${R}@Example.Test"`, [c2, c1]],
      [`${S} email:"amy.${R}@example.test.org"`, [c3]],
      [`${S} email:"${R}@example.test"`, []],
      [`${S} phone:"555 0101"`, [c1]],
      [`${S} phone:"+1 555 0101"`, [c1]],
      [`${S} phone:"0101 555"`, []],
    ]);
    // Without the run clause: the email is the run's own, so only these two exist anywhere.
    await expectFinds('customers', [[`email:"amy.${R}@example.test"`, [c2, c1]]]);
  });

  test('field:null and -field:null on string fields', async () => {
    const S = scope(R);
    await expectFinds('customers', [
      [`${S} email:null`, [c5, c4]],
      [`${S} -email:null`, [c3, c2, c1]],
      [`${S} name:null`, [c5]],
      [`${S} -name:null`, [c4, c3, c2, c1]],
      [`${S} phone:null`, [c5, c4, c3, c2]],
      [`${S} -phone:null`, [c1]],
    ]);
  });

  test('metadata is a case-insensitive exact token; null and -null test the key', async () => {
    const S = scope(R);
    await expectFinds('customers', [
      [`${S} metadata["plan"]:"pro"`, [c2, c1]],
      [`${S} metadata["plan"]:"PRO"`, [c2, c1]],
      [`${S} metadata['plan']:'pro plus'`, [c3]],
      [`${S} metadata["plan"]:"plus"`, []],
      [`${S} metadata["plan"]:"pr"`, []],
      [`${S} metadata["plan"]:null`, [c5, c4]],
      [`${S} -metadata["plan"]:null`, [c3, c2, c1]],
      [`${S} -metadata["plan"]:"pro"`, [c5, c4, c3]],
      [`${S} metadata["region"]:"EU"`, [c1]],
      [`${S} metadata["nosuchkey"]:null`, [c5, c4, c3, c2, c1]],
      [`${S} -metadata["nosuchkey"]:null`, []],
      [`metadata["tier"]:"GOLD_${R.toUpperCase()}"`, [c3]],
    ]);
  });

  test('AND, implicit AND, negation; keywords in any case', async () => {
    const S = scope(R);
    await expectFinds('customers', [
      [`${S} AND name:"one" AND metadata["region"]:"eu"`, [c1]],
      [`${S} name:"one" metadata["region"]:"eu"`, [c1]],
      [`${S} and name:"one" And metadata["plan"]:"pro"`, [c2, c1]],
      [`${S} name:"one" -metadata["plan"]:"pro"`, [c3]],
      [`${S} -name:"one"`, [c5, c4]],
      [`${S} -name:"one" -email:null`, []],
      [`${S} name:"one" name:"two"`, [c3, c1]],
      [`${S} name:"one" name:"zzz"`, []],
      [`${S} -metadata["run"]:"${R}"`, []],
    ]);
  });

  test('OR finds what either clause finds, each once; keywords in any case', async () => {
    await expectFinds('customers', [
      [`metadata["tier"]:"gold_${R}" OR metadata["tier"]:"silver_${R}"`, [c4, c3]],
      [`metadata["tier"]:"gold_${R}" or metadata["tier"]:"silver_${R}"`, [c4, c3]],
      [`email:"amy.${R}@example.test" OR metadata["tier"]:"silver_${R}"`, [c4, c2, c1]],
      [`email:"amy.${R}@example.test" Or email:"amy.${R}@example.test.org" OR metadata["tier"]:"gold_${R}"`, [c3, c2, c1]],
      [`metadata["tier"]:"gold_${R}" OR metadata["tier"]:"nothing_${R}"`, [c3]],
      [`metadata["tier"]:"nothing_${R}" OR email:"nobody.${R}@example.test"`, []],
    ]);
  });

  test('ten clauses are accepted', async () => {
    const clauses = [scope(R)];
    for (let i = 0; i < 9; i++) clauses.push(`-name:"nomatch${i}"`);
    assert.equal(clauses.length, 10);
    await expectFinds('customers', [[clauses.join(' '), [c5, c4, c3, c2, c1]]]);
    await expectFinds('customers', [[clauses.join(' AND '), [c5, c4, c3, c2, c1]]]);
  });
});

describe('customers: created, updates, deletes, modes', () => {
  test('created takes :, >, <, >=, <= with integers, quoted or not', async () => {
    const R = run();
    const S = scope(R);
    const a1 = await stripe.customers.create({ name: 'first', metadata: { run: R } });
    await nextSecond(a1.created);
    const a2 = await stripe.customers.create({ name: 'second', metadata: { run: R } });
    await nextSecond(a2.created);
    const a3 = await stripe.customers.create({ name: 'third', metadata: { run: R } });
    assert.ok(a1.created < a2.created && a2.created < a3.created, `created ${a1.created} ${a2.created} ${a3.created}`);
    await expectFinds('customers', [
      [`${S} created:${a2.created}`, [a2]],
      [`${S} created:"${a2.created}"`, [a2]],
      [`${S} -created:${a2.created}`, [a3, a1]],
      [`${S} created>${a1.created}`, [a3, a2]],
      [`${S} created>=${a2.created}`, [a3, a2]],
      [`${S} created>="${a2.created}"`, [a3, a2]],
      [`${S} created<${a3.created}`, [a2, a1]],
      [`${S} created<=${a1.created}`, [a1]],
      [`${S} created>${a1.created} created<${a3.created}`, [a2]],
      [`created>=${a1.created} AND created<=${a3.created} AND ${S}`, [a3, a2, a1]],
      [`${S} created>${a3.created}`, []],
      [`${S} created<${a1.created}`, []],
      [`${S} created>0`, [a3, a2, a1]],
    ]);
  });

  test('a search sees the customer as it is now', async () => {
    const R = run();
    const S = scope(R);
    const u = await stripe.customers.create({ name: `Before ${R}`, email: `old.${R}@example.test`, metadata: { run: R } });
    await expectFinds('customers', [[`${S} name:"before"`, [u]], [`${S} metadata["plan"]:null`, [u]]]);
    await stripe.customers.update(u.id, { name: `After ${R}`, email: '', metadata: { plan: 'gold' } });
    await expectFinds('customers', [
      [`${S} name:"before"`, []],
      [`${S} name:"after"`, [u]],
      [`email:"old.${R}@example.test"`, []],
      [`${S} email:null`, [u]],
      [`${S} metadata["plan"]:"gold"`, [u]],
      [`${S} metadata["plan"]:null`, []],
    ]);
    const r = await stripe.customers.search({ query: S });
    assert.equal(r.data[0].name, `After ${R}`);
    assert.equal(r.data[0].email, null);
    assert.deepEqual(r.data[0].metadata, { run: R, plan: 'gold' });
  });

  test('a deleted customer is not found', async () => {
    const R = run();
    const S = scope(R);
    const email = `gone.${R}@example.test`;
    const d1 = await stripe.customers.create({ email, metadata: { run: R } });
    const d2 = await stripe.customers.create({ name: 'stays', metadata: { run: R } });
    await expectFinds('customers', [[S, [d2, d1]], [`email:"${email}"`, [d1]]]);
    await stripe.customers.del(d1.id);
    await expectFinds('customers', [
      [S, [d2]],
      [`email:"${email}"`, []],
      [`${S} email:null`, [d2]],
      [`${S} -metadata["run"]:null`, [d2]],
    ]);
    const counted = await stripe.customers.search({ query: S, expand: ['total_count'] });
    assert.equal(counted.total_count, 1);
  });

  test('test and live keys search only their own mode', async () => {
    const R = run();
    const S = scope(R);
    const t = await stripe.customers.create({ name: `Twin ${R}`, metadata: { run: R } });
    const l = await srv.liveStripe.customers.create({ name: `Twin ${R}`, metadata: { run: R } });
    assert.equal(l.livemode, true);
    await expectFinds('customers', [[S, [t]], [`name:"twin ${R}"`, [t]]]);
    await expectFinds('customers', [[S, [l]], [`name:"twin ${R}"`, [l]]], { client: srv.liveStripe });
    const live = await srv.liveStripe.customers.search({ query: S, expand: ['total_count'] });
    assert.equal(live.data[0].livemode, true);
    assert.equal(live.total_count, 1);
    const tp = await stripe.products.create({ name: `Twin product ${R}`, metadata: { run: R } });
    const lp = await srv.liveStripe.products.create({ name: `Twin product ${R}`, metadata: { run: R } });
    await expectFinds('products', [[S, [tp]]]);
    await expectFinds('products', [[S, [lp]]], { client: srv.liveStripe });
  });
});

describe('paging', () => {
  // Read-only fixture: twelve customers of one run.
  let R;
  let S;
  let ids; // newest first
  before(async () => {
    R = run();
    S = scope(R);
    const made = [];
    for (let i = 0; i < 12; i++) made.push(await stripe.customers.create({ name: `page ${i}`, metadata: { run: R } }));
    ids = newestFirst(...made);
  });

  test('the default limit is 10; next_page gives the rest', async () => {
    const first = await stripe.customers.search({ query: S });
    assert.deepEqual(idsOf(first), ids.slice(0, 10));
    assert.equal(first.has_more, true);
    assert.equal(typeof first.next_page, 'string');
    assert.ok(first.next_page.length > 0);
    const second = await stripe.customers.search({ query: S, page: first.next_page });
    assert.deepEqual(idsOf(second), ids.slice(10));
    assert.equal(second.has_more, false);
    assert.equal(second.next_page, null);
    assert.equal(second.object, 'search_result');
    assert.equal(second.url, '/v1/customers/search');
  });

  test('limit bounds a page; has_more is true exactly when more match', async () => {
    for (const [limit, more] of [[1, true], [11, true], [12, false], [13, false], [100, false]]) {
      const r = await stripe.customers.search({ query: S, limit });
      assert.deepEqual(idsOf(r), ids.slice(0, limit), `limit ${limit}`);
      assert.equal(r.has_more, more, `limit ${limit}`);
      if (more) assert.equal(typeof r.next_page, 'string', `limit ${limit}`);
      else assert.equal(r.next_page, null, `limit ${limit}`);
    }
  });

  test('walking next_page gives every match once, in order', async () => {
    const pages = [];
    let params = { query: S, limit: 5 };
    for (let guard = 0; guard < 10; guard++) {
      const r = await stripe.customers.search(params);
      pages.push(idsOf(r));
      if (!r.has_more) {
        assert.equal(r.next_page, null);
        break;
      }
      assert.equal(typeof r.next_page, 'string');
      params = { query: S, limit: 5, page: r.next_page };
    }
    assert.deepEqual(pages, [ids.slice(0, 5), ids.slice(5, 10), ids.slice(10)]);
    // Pages of 4 end exactly on the last match.
    const p1 = await stripe.customers.search({ query: S, limit: 4 });
    const p2 = await stripe.customers.search({ query: S, limit: 4, page: p1.next_page });
    const p3 = await stripe.customers.search({ query: S, limit: 4, page: p2.next_page });
    assert.deepEqual([idsOf(p1), idsOf(p2), idsOf(p3)], [ids.slice(0, 4), ids.slice(4, 8), ids.slice(8)]);
    assert.deepEqual([p1.has_more, p2.has_more, p3.has_more], [true, true, false]);
    assert.equal(p3.next_page, null);
  });

  test('auto-pagination gives the same as walking by hand', async () => {
    const arr = await stripe.customers.search({ query: S, limit: 5 }).autoPagingToArray({ limit: 100 });
    assert.deepEqual(idsIn(arr), ids);
    const seen = [];
    for await (const c of stripe.customers.search({ query: S, limit: 3 })) seen.push(c.id);
    assert.deepEqual(seen, ids);
    const capped = await stripe.customers.search({ query: S, limit: 2 }).autoPagingToArray({ limit: 7 });
    assert.deepEqual(idsIn(capped), ids.slice(0, 7));
  });

  test('expand total_count counts every match, on any page', async () => {
    const r = await stripe.customers.search({ query: S, limit: 5, expand: ['total_count'] });
    assert.equal(r.total_count, 12);
    assert.deepEqual(idsOf(r), ids.slice(0, 5));
    const r2 = await stripe.customers.search({ query: S, limit: 5, page: r.next_page, expand: ['total_count'] });
    assert.equal(r2.total_count, 12);
    assert.deepEqual(idsOf(r2), ids.slice(5, 10));
    const some = await stripe.customers.search({ query: `${S} name:"page" -name:"0" -name:"1"`, expand: ['total_count'] });
    assert.equal(some.total_count, 10);
    const none = await stripe.customers.search({ query: `${S} name:"nomatch"`, expand: ['total_count'] });
    assert.equal(none.total_count, 0);
    assert.deepEqual(none.data, []);
    assert.equal(none.has_more, false);
    assert.equal(none.next_page, null);
    const plain = await stripe.customers.search({ query: S, limit: 5 });
    assert.equal(plain.total_count, undefined);
  });

  test('a page stays good when the object it starts below is deleted; another search refuses it', async () => {
    // Products are gone once deleted; customers stay as deleted rows: both kinds of cursor.
    const P = run();
    const made = [];
    for (let i = 0; i < 5; i++) made.push(await stripe.products.create({ name: `paged ${i}`, metadata: { run: P } }));
    const pids = newestFirst(...made);
    const first = await stripe.products.search({ query: scope(P), limit: 2 });
    assert.deepEqual(idsOf(first), pids.slice(0, 2));
    await stripe.products.del(pids[1]); // the object the next page starts below
    const next = await stripe.products.search({ query: scope(P), limit: 2, page: first.next_page });
    assert.deepEqual(idsOf(next), pids.slice(2, 4));
    const counted = await stripe.products.search({ query: scope(P), limit: 2, page: first.next_page, expand: ['total_count'] });
    assert.deepEqual(idsOf(counted), pids.slice(2, 4));
    assert.equal(counted.total_count, 4);

    const C = run();
    const cs = [];
    for (let i = 0; i < 4; i++) cs.push(await stripe.customers.create({ name: `gone ${i}`, metadata: { run: C } }));
    const cids = newestFirst(...cs);
    const c1 = await stripe.customers.search({ query: scope(C), limit: 2, expand: ['total_count'] });
    await stripe.customers.del(cids[1]);
    const c2 = await stripe.customers.search({ query: scope(C), limit: 2, page: c1.next_page, expand: ['total_count'] });
    assert.deepEqual(idsOf(c2), cids.slice(2));
    assert.equal(c2.total_count, 3);

    // A page of one search is not a page of another, nor of another resource.
    await expectStripeError(stripe.customers.search({ query: `${scope(C)} name:"gone"`, page: c1.next_page }),
      { status: 400, type: 'invalid_request_error', param: 'page' });
    await expectStripeError(stripe.products.search({ query: scope(C), page: c1.next_page }),
      { status: 400, type: 'invalid_request_error', param: 'page' });
    await expectStripeError(stripe.customers.search({ query: scope(C), page: cids[0] }),
      { status: 400, type: 'invalid_request_error', param: 'page' });
    // Only the exact spelling given is taken back, and only in its mode.
    const [, num, hash] = /^sp_(\d+)\.([0-9a-f]{8})$/.exec(c1.next_page);
    for (const page of [`sp_ ${num}.${hash}`, `sp_+${num}.${hash}`, `sp_0${num}.${hash}`, `sp_${num}.${hash.toUpperCase()}`,
      `sp_${num}.${hash}x`, `sp_${num}.`, 'sp_', 'sp', `sp_99999999999999999999999.${hash}`])
      if (page !== c1.next_page)
        await expectStripeError(stripe.customers.search({ query: scope(C), page }), { status: 400, param: 'page' });
    await expectStripeError(srv.liveStripe.customers.search({ query: scope(C), page: c1.next_page }), { status: 400, param: 'page' });
  });

  test('raw: the envelope has exactly object, url, has_more, next_page and data (and total_count when expanded)', async () => {
    const res = await rawSearch('customers', { query: S, limit: '5' });
    assert.equal(res.status, 200, res.text);
    assert.deepEqual(Object.keys(res.json).sort(), ['data', 'has_more', 'next_page', 'object', 'url']);
    assert.equal(res.json.object, 'search_result');
    assert.equal(res.json.url, '/v1/customers/search');
    assert.equal(res.json.has_more, true);
    assert.deepEqual(res.json.data.map((c) => c.id), ids.slice(0, 5));
    const next = await rawSearch('customers', { query: S, limit: '5', page: res.json.next_page, 'expand[]': 'total_count' });
    assert.equal(next.status, 200, next.text);
    assert.deepEqual(Object.keys(next.json).sort(), ['data', 'has_more', 'next_page', 'object', 'total_count', 'url']);
    assert.equal(next.json.total_count, 12);
    assert.deepEqual(next.json.data.map((c) => c.id), ids.slice(5, 10));
  });
});

// ---------------------------------------------------------------------------------------------

describe('products', () => {
  test('name, description, active, metadata, and the always-null shippable and url', async () => {
    const R = run();
    const S = scope(R);
    const p1 = await stripe.products.create({ name: `Voice minutes ${R}`, description: 'per minute voice', metadata: { run: R, tier: 'gold' } });
    const p2 = await stripe.products.create({ name: `SMS bundle ${R}`, active: false, metadata: { run: R } });
    const p3 = await stripe.products.create({ name: 'Voice seats', description: 'Seats for VOICE', metadata: { run: R, tier: 'GOLD' } });
    await expectFinds('products', [
      [S, [p3, p2, p1]],
      [`${S} name:"voice"`, [p3, p1]],
      [`${S} name:"VOICE MINUTES"`, [p1]],
      [`${S} name:"minutes voice"`, []],
      [`${S} name~"seat"`, [p3]],
      [`${S} name~"BUND"`, [p2]],
      [`name:"sms bundle ${R}"`, [p2]],
      [`${S} active:"true"`, [p3, p1]],
      [`${S} active:"FALSE"`, [p2]],
      [`${S} -active:"true"`, [p2]],
      [`${S} description:null`, [p2]],
      [`${S} -description:null`, [p3, p1]],
      [`${S} description:"voice"`, [p3, p1]],
      [`${S} description:"per minute"`, [p1]],
      [`${S} description~"for v"`, [p3]],
      [`${S} metadata["tier"]:"gold"`, [p3, p1]],
      [`${S} metadata["tier"]:null`, [p2]],
      [`${S} shippable:null`, [p3, p2, p1]],
      [`${S} -shippable:null`, []],
      [`${S} url:null`, [p3, p2, p1]],
      [`${S} -url:null`, []],
      [`${S} name:"voice" AND active:"true" AND -description:null`, [p3, p1]],
      [`name:"voice minutes ${R}" OR name:"sms bundle ${R}"`, [p2, p1]],
    ]);
    // An update shows at once.
    await stripe.products.update(p1.id, { active: false, description: '' });
    await expectFinds('products', [
      [`${S} active:"false"`, [p2, p1]],
      [`${S} description:null`, [p2, p1]],
    ]);
    // Auto-pagination on another resource.
    const all = await stripe.products.search({ query: S, limit: 2 }).autoPagingToArray({ limit: 100 });
    assert.deepEqual(idsIn(all), newestFirst(p1, p2, p3));
    const counted = await stripe.products.search({ query: `${S} -active:"false"`, expand: ['total_count'] });
    assert.equal(counted.total_count, 1);
    assert.deepEqual(idsOf(counted), [p3.id]);
  });
});

describe('prices', () => {
  test('active, currency, lookup_key, metadata, product and type', async () => {
    const R = run();
    const S = scope(R);
    const prod = await stripe.products.create({ name: `Priced ${R}` });
    const prod2 = await stripe.products.create({ name: `Priced too ${R}` });
    const pr1 = await stripe.prices.create({
      product: prod.id, currency: 'usd', unit_amount: 1000, lookup_key: `basic_${R}`, metadata: { run: R },
    });
    const pr2 = await stripe.prices.create({
      product: prod.id, currency: 'usd', unit_amount: 2000, recurring: { interval: 'month' },
      lookup_key: `pro_monthly_${R}`, metadata: { run: R, plan: 'pro' },
    });
    const pr3 = await stripe.prices.create({
      product: prod2.id, currency: 'eur', unit_amount: 3000, recurring: { interval: 'month' },
      active: false, metadata: { run: R },
    });
    await expectFinds('prices', [
      [S, [pr3, pr2, pr1]],
      [`${S} product:"${prod.id}"`, [pr2, pr1]],
      [`${S} product:"${prod2.id}"`, [pr3]],
      [`product:"${prod2.id}"`, [pr3]],
      [`${S} type:"recurring"`, [pr3, pr2]],
      [`${S} type:"RECURRING"`, [pr3, pr2]],
      [`${S} type:"one_time"`, [pr1]],
      [`${S} -type:"one_time"`, [pr3, pr2]],
      [`${S} currency:"usd"`, [pr2, pr1]],
      [`${S} currency:"EUR"`, [pr3]],
      [`${S} currency:"gbp"`, []],
      [`${S} active:"true"`, [pr2, pr1]],
      [`${S} active:"false"`, [pr3]],
      [`${S} lookup_key:"pro_monthly_${R}"`, [pr2]],
      [`${S} lookup_key:"PRO_MONTHLY_${R.toUpperCase()}"`, [pr2]],
      [`${S} lookup_key:"pro"`, []],
      [`${S} lookup_key~"monthly"`, [pr2]],
      [`${S} lookup_key~"${R}"`, [pr2, pr1]],
      [`${S} lookup_key:null`, [pr3]],
      [`${S} -lookup_key:null`, [pr2, pr1]],
      [`${S} metadata["plan"]:"pro"`, [pr2]],
      [`${S} -metadata["plan"]:null`, [pr2]],
      [`${S} type:"recurring" currency:"usd"`, [pr2]],
      [`${S} AND type:"recurring" AND active:"true"`, [pr2]],
      [`lookup_key:"basic_${R}" OR lookup_key:"pro_monthly_${R}"`, [pr2, pr1]],
      [`lookup_key:"basic_${R}" OR product:"${prod2.id}"`, [pr3, pr1]],
    ]);
    const r = await stripe.prices.search({ query: `${S} lookup_key:"basic_${R}"` });
    assert.equal(r.url, '/v1/prices/search');
    assert.equal(r.data[0].object, 'price');
    assert.equal(r.data[0].unit_amount, 1000);
    assert.equal(r.data[0].product, prod.id);
    assert.equal(r.data[0].type, 'one_time');
  });
});

describe('subscriptions', () => {
  test('status, metadata and created', async () => {
    const R = run();
    const S = scope(R);
    const prod = await stripe.products.create({ name: `Plan ${R}` });
    const price = await stripe.prices.create({ product: prod.id, currency: 'usd', unit_amount: 1000, recurring: { interval: 'month' } });
    const cus = await payingCustomer();
    const refA = uniq('ref');
    const refC = uniq('ref');
    const sA = await stripe.subscriptions.create({ customer: cus.id, items: [{ price: price.id }], metadata: { run: R, plan: 'team', ref: refA } });
    await nextSecond(sA.created);
    const sB = await stripe.subscriptions.create({ customer: cus.id, items: [{ price: price.id }], trial_period_days: 7, metadata: { run: R, plan: 'TEAM' } });
    await nextSecond(sB.created);
    const sC = await stripe.subscriptions.create({ customer: cus.id, items: [{ price: price.id }], metadata: { run: R, ref: refC } });
    assert.equal(sA.status, 'active');
    assert.equal(sB.status, 'trialing');
    assert.equal((await stripe.subscriptions.cancel(sC.id)).status, 'canceled');
    assert.ok(sA.created < sB.created && sB.created < sC.created, `created ${sA.created} ${sB.created} ${sC.created}`);
    await expectFinds('subscriptions', [
      [S, [sC, sB, sA]],
      [`${S} status:"active"`, [sA]],
      [`${S} status:"TRIALING"`, [sB]],
      [`${S} status:"canceled"`, [sC]],
      [`${S} -status:"canceled"`, [sB, sA]],
      [`${S} status:"past_due"`, []],
      [`${S} metadata["plan"]:"team"`, [sB, sA]],
      [`${S} metadata["plan"]:null`, [sC]],
      [`${S} -metadata["ref"]:null`, [sC, sA]],
      [`${S} created:${sB.created}`, [sB]],
      [`${S} created>=${sB.created}`, [sC, sB]],
      [`${S} created<${sB.created}`, [sA]],
      [`${S} created>${sA.created} created<${sC.created}`, [sB]],
      [`${S} created<=${sC.created} -status:"trialing"`, [sC, sA]],
      [`metadata["ref"]:"${refA}" OR metadata["ref"]:"${refC}"`, [sC, sA]],
      [`metadata["ref"]:"${refA}" or metadata["ref"]:"${refC}" OR metadata["ref"]:"${uniq('ref')}"`, [sC, sA]],
    ]);
    const r = await stripe.subscriptions.search({ query: `${S} status:"canceled"` });
    assert.equal(r.url, '/v1/subscriptions/search');
    assert.equal(r.data[0].object, 'subscription');
    assert.equal(r.data[0].status, 'canceled');
    assert.equal(r.data[0].customer, cus.id);
    assert.deepEqual(r.data[0].items.data.map((i) => i.price.id), [price.id]);
  });
});

describe('invoices', () => {
  test('customer, status, total, currency, subscription, number, receipt_number, metadata and created', async () => {
    const prod = await stripe.products.create({ name: uniq('Invoiced') });
    const monthly = (currency, unit_amount) =>
      stripe.prices.create({ product: prod.id, currency, unit_amount, recurring: { interval: 'month' } });
    const p1000 = await monthly('usd', 1000);
    const p2500 = await monthly('usd', 2500);
    const p4000 = await monthly('eur', 4000);
    const C = await payingCustomer();
    const D = await payingCustomer();
    const s1 = await stripe.subscriptions.create({ customer: C.id, items: [{ price: p1000.id }] });
    const i1 = await stripe.invoices.retrieve(s1.latest_invoice);
    await nextSecond(i1.created);
    const s2 = await stripe.subscriptions.create({ customer: C.id, items: [{ price: p2500.id }] });
    const i2 = await stripe.invoices.pay(s2.latest_invoice, { paid_out_of_band: true });
    const s3 = await stripe.subscriptions.create({ customer: D.id, items: [{ price: p4000.id }] });
    const i3 = await stripe.invoices.retrieve(s3.latest_invoice);
    // What the queries below rely on.
    assert.deepEqual([i1.total, i1.status, i1.currency], [1000, 'open', 'usd']);
    assert.deepEqual([i2.total, i2.status, i2.currency], [2500, 'paid', 'usd']);
    assert.deepEqual([i3.total, i3.status, i3.currency], [4000, 'open', 'eur']);
    assert.ok(i1.created < i2.created, `created ${i1.created} ${i2.created}`);
    assert.match(i1.number, /\S/);
    assert.ok(!/\s/.test(i1.number), `number ${JSON.stringify(i1.number)}`);
    const SC = `customer:"${C.id}"`;
    const SD = `customer:"${D.id}"`;
    await expectFinds('invoices', [
      [SC, [i2, i1]],
      [SD, [i3]],
      [`${SC} status:"open"`, [i1]],
      [`${SC} status:"PAID"`, [i2]],
      [`${SC} status~"pai"`, [i2]],
      [`${SC} -status:"paid"`, [i1]],
      [`${SC} status:"draft"`, []],
      [`${SC} total:1000`, [i1]],
      [`${SC} total:"2500"`, [i2]],
      [`${SC} total>1000`, [i2]],
      [`${SC} total>=1000`, [i2, i1]],
      [`${SC} total<2500`, [i1]],
      [`${SC} total<=2500`, [i2, i1]],
      [`${SC} total>1000 total<2500`, []],
      [`${SC} total>=1000 AND total<=1000`, [i1]],
      [`${SC} total>2500`, []],
      [`${SD} total>=4000`, [i3]],
      [`${SC} currency:"USD"`, [i2, i1]],
      [`${SC} currency:"eur"`, []],
      [`${SD} currency:"eur"`, [i3]],
      [`${SC} subscription:"${s1.id}"`, [i1]],
      [`subscription:"${s2.id}"`, [i2]],
      [`${SC} number:"${i1.number}"`, [i1]],
      [`${SC} number:"${i1.number.toLowerCase()}"`, [i1]],
      [`${SC} -number:null`, [i2, i1]],
      [`${SC} receipt_number:null`, [i2, i1]],
      [`${SC} -receipt_number:null`, []],
      [`${SC} metadata["anything"]:null`, [i2, i1]],
      [`${SC} -metadata["anything"]:null`, []],
      [`${SC} created>=${i2.created}`, [i2]],
      [`${SC} created<${i2.created}`, [i1]],
      [`${SC} created:${i1.created}`, [i1]],
      [`${SC} -customer:"${C.id}"`, []],
      [`${SC} OR ${SD}`, [i3, i2, i1]],
      [`${SC} or ${SD}`, [i3, i2, i1]],
      [`subscription:"${s1.id}" OR subscription:"${s3.id}"`, [i3, i1]],
    ]);
    const r = await stripe.invoices.search({ query: `${SC} status:"paid"`, expand: ['total_count'] });
    assert.equal(r.url, '/v1/invoices/search');
    assert.equal(r.total_count, 1);
    assert.equal(r.data[0].object, 'invoice');
    assert.equal(r.data[0].id, i2.id);
    assert.equal(r.data[0].status, 'paid');
    assert.equal(r.data[0].total, 2500);
    assert.equal(r.data[0].customer, C.id);
    // The customer token is case-insensitive too.
    await expectFinds('invoices', [[`customer:"${D.id.toUpperCase()}"`, [i3]]]);
  });
});

// ---------------------------------------------------------------------------------------------

describe('raw responses', () => {
  test('each resource answers a search_result envelope whose objects are what retrieve returns', async () => {
    const R = run();
    const S = scope(R);
    const cus = await payingCustomer({ metadata: { run: R } });
    const prod = await stripe.products.create({ name: `Raw ${R}`, metadata: { run: R } });
    const price = await stripe.prices.create({ product: prod.id, currency: 'usd', unit_amount: 700, recurring: { interval: 'month' }, metadata: { run: R } });
    const sub = await stripe.subscriptions.create({ customer: cus.id, items: [{ price: price.id }], metadata: { run: R } });
    const cases = [
      ['customers', S, cus.id],
      ['products', S, prod.id],
      ['prices', S, price.id],
      ['subscriptions', S, sub.id],
      ['invoices', `customer:"${cus.id}"`, sub.latest_invoice],
    ];
    for (const [resource, query, id] of cases) {
      const res = await rawSearch(resource, { query });
      assert.equal(res.status, 200, `${resource}: ${res.text}`);
      assert.deepEqual(Object.keys(res.json).sort(), ['data', 'has_more', 'next_page', 'object', 'url'], resource);
      assert.equal(res.json.object, 'search_result');
      assert.equal(res.json.url, `/v1/${resource}/search`);
      assert.equal(res.json.has_more, false);
      assert.equal(res.json.next_page, null);
      assert.equal(res.json.data.length, 1, `${resource}: ${res.text.slice(0, 300)}`);
      const got = await srv.raw('GET', `/v1/${resource}/${id}`);
      assert.equal(got.status, 200);
      assert.deepStrictEqual(res.json.data[0], got.json, `${resource} search shape differs from retrieve`);
      // Another key's mode does not see them.
      const live = await rawSearch(resource, { query }, { auth: srv.liveKey });
      assert.equal(live.status, 200, live.text);
      assert.deepEqual(live.json.data, []);
    }
  });

  test('a query with no key is 401; a search by POST is not a search', async () => {
    const res = await rawSearch('customers', { query: 'name:"x"' }, { auth: null });
    assert.equal(res.status, 401);
    const post = await srv.raw('POST', '/v1/customers/search', { body: { query: 'name:"x"' } });
    assert.ok(post.status >= 400 && post.status < 500, `POST /v1/customers/search answered ${post.status}`);
    assert.equal(post.json?.error?.type, 'invalid_request_error');
  });
});

// ---------------------------------------------------------------------------------------------

describe('refusals', () => {
  test('query is required and may not be empty', async () => {
    for (const resource of ['customers', 'products', 'prices', 'subscriptions', 'invoices']) {
      await expectStripeError(stripe[resource].search({}), { status: 400, code: 'parameter_missing', param: 'query' });
      await expectStripeError(stripe[resource].search({ query: '' }), { status: 400, code: 'parameter_missing', param: 'query' });
      expectRawError(await rawSearch(resource, {}), { status: 400, code: 'parameter_missing', param: 'query' });
      expectRawError(await rawSearch(resource, { limit: '5' }), { status: 400, code: 'parameter_missing', param: 'query' });
    }
  });

  test('limit is 1..100', async () => {
    const query = scope(run());
    for (const limit of [0, 101, -1]) {
      await expectStripeError(stripe.customers.search({ query, limit }), { status: 400, param: 'limit' });
    }
    expectRawError(await rawSearch('invoices', { query: 'total>1', limit: 'abc' }), { status: 400, param: 'limit' });
    for (const limit of [1, 100]) {
      const r = await stripe.customers.search({ query, limit });
      assert.deepEqual(r.data, []);
    }
  });

  test('a made-up page is refused', async () => {
    const query = scope(run());
    for (const page of ['nonsense', 'page_123', '%%%']) {
      await expectStripeError(stripe.customers.search({ query, page }), { status: 400, param: 'page' });
    }
    await expectStripeError(stripe.invoices.search({ query: 'total>1', page: 'bogus' }), { status: 400, param: 'page' });
  });

  test('an unknown parameter is 400 parameter_unknown', async () => {
    const query = scope(run());
    await expectStripeError(stripe.customers.search({ query, colour: 'red' }), {
      status: 400, code: 'parameter_unknown', param: 'colour', message: /colour/,
    });
    await expectStripeError(stripe.customers.search({ query, starting_after: 'cus_x' }), {
      status: 400, code: 'parameter_unknown', param: 'starting_after',
    });
    await expectStripeError(stripe.products.search({ query, email: 'a@b.c' }), {
      status: 400, code: 'parameter_unknown', param: 'email',
    });
  });

  test('unknown fields, for each resource', async () => {
    await badQuery('customers', 'colour:"red"', /colour/);
    await badQuery('customers', 'status:"active"', /status/);
    await badQuery('products', 'currency:"usd"', /currency/);
    await badQuery('prices', 'unit_amount>5', /unit_amount/);
    await badQuery('subscriptions', 'total>5', /total/);
    await badQuery('invoices', 'colour:"red"', /colour/);
    await badQuery('customers', `${scope(run())} colour:"red"`, /colour/);
  });

  test('an operator the field does not take', async () => {
    await badQuery('customers', 'name>3');
    await badQuery('customers', 'name<"abc"');
    await badQuery('customers', 'email>="a@b.c"');
    await badQuery('customers', 'created~"123"');
    await badQuery('customers', 'created~"12"');
    await badQuery('subscriptions', 'status~"act"');
    await badQuery('subscriptions', 'status>"active"');
    await badQuery('customers', 'metadata["run"]~"abc"');
    await badQuery('products', 'active>1');
    await badQuery('prices', 'currency<"usd"');
    await badQuery('invoices', 'total~"100"');
    await badQuery('invoices', 'customer~"cus"');
  });

  test('~ needs at least three characters', async () => {
    await badQuery('customers', 'name~"ab"');
    await badQuery('customers', 'name~""');
    await badQuery('products', 'description~"x"');
    // Three is enough.
    const r = await stripe.customers.search({ query: `${scope(run())} name~"abc"` });
    assert.deepEqual(r.data, []);
  });

  test('values: strings quoted and terminated, numbers integers', async () => {
    await badQuery('customers', 'email:amy');
    await badQuery('customers', 'name:Ada');
    await badQuery('subscriptions', 'status:active');
    await badQuery('customers', `metadata["run"]:${uniq('run')}`);
    await badQuery('customers', 'name:"abc');
    await badQuery('customers', "name:'abc");
    await badQuery('customers', 'name:"abc\'');
    await badQuery('customers', 'name:"abc\\"');
    await badQuery('customers', 'created>abc');
    await badQuery('customers', 'created:"abc"');
    await badQuery('invoices', 'total>1.5');
    await badQuery('invoices', 'total:"1.5"');
    await badQuery('subscriptions', 'created<=12x');
  });

  test('AND and OR cannot be mixed, in any case', async () => {
    await badQuery('customers', 'name:"a" AND email:"b@c.d" OR phone:"1"');
    await badQuery('customers', 'name:"a" OR email:"b@c.d" AND phone:"1"');
    await badQuery('customers', 'name:"a" or email:"b@c.d" and phone:"1"');
    await badQuery('invoices', 'total>1 OR total<5 AND currency:"usd"');
    // Implicit AND with OR is mixing as well.
    await badQuery('customers', 'name:"a" email:"b@c.d" OR phone:"1"');
  });

  test('at most ten clauses', async () => {
    const clauses = [scope(run())];
    for (let i = 0; i < 10; i++) clauses.push(`-name:"nomatch${i}"`);
    assert.equal(clauses.length, 11);
    await badQuery('customers', clauses.join(' '));
    await badQuery('customers', clauses.join(' AND '));
    await badQuery('customers', clauses.map((_, i) => `name:"n${i}"`).join(' OR '));
  });

  test('garbage', async () => {
    for (const q of [':"x"', 'name:', 'name', '"x"', 'name:"x" AND', 'AND name:"x"', 'name:"x" OR', 'name:"x" AND AND email:"a@b.c"',
      '-', 'name:"x" -', 'metadata["run":"x"', 'metadata["run"]"x"', 'name::"x"', '   ']) {
      await badQuery('customers', q);
    }
  });

  test('a refusal is the same for every resource, whatever the route', async () => {
    for (const resource of ['customers', 'products', 'prices', 'subscriptions', 'invoices']) {
      await badQuery(resource, 'colour:"red"', /colour/);
      await badQuery(resource, ':"x"');
      const res = await rawSearch(resource, { query: 'colour:"red"' });
      expectRawError(res, { status: 400, param: 'query', message: /colour/ });
    }
  });
});
