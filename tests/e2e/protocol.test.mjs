// Wire protocol over raw HTTP: auth, envelopes, routing, body decoding, limits, idempotency,
// clean shutdown.

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import { join } from 'node:path';
import { readdir } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import {
  startServer, rawRequest, stripeClient, expectRawError, nowSec, uniq, createMeter, createCustomer, sleep,
  floorTo, usage, runCli,
} from './helpers.mjs';

let srv;
let meter;
let cus;
before(async () => {
  srv = await startServer();
  meter = await createMeter(srv.stripe);
  cus = await createCustomer(srv.stripe);
});
after(async () => { await srv?.close(); });

function checkCommonHeaders(r) {
  assert.match(String(r.headers['request-id']), /^req_[A-Za-z0-9]+$/, `Request-Id on ${r.status}`);
  assert.match(String(r.headers['content-type']), /^application\/json/, `Content-Type on ${r.status}`);
  assert.ok(r.headers['stripe-version'], `Stripe-Version on ${r.status}`);
  assert.ok(r.json !== null, `body is JSON: ${r.text.slice(0, 200)}`);
}

describe('authentication', () => {
  test('missing Authorization is 401 api_key_missing', async () => {
    const r = await srv.raw('GET', '/v1/customers', { auth: null });
    checkCommonHeaders(r);
    expectRawError(r, { status: 401, code: 'api_key_missing' });
  });

  test('unknown key is 401 api_key_invalid', async () => {
    for (const key of ['sk_test_nottherealkey', 'sk_live_nottherealkey', 'garbage']) {
      const r = await srv.raw('GET', '/v1/customers', { auth: key });
      checkCommonHeaders(r);
      expectRawError(r, { status: 401, code: 'api_key_invalid' });
    }
    const r = await srv.raw('GET', '/v1/customers', { auth: null, headers: { Authorization: 'Bearer' } });
    assert.equal(r.status, 401);
    const r2 = await srv.raw('GET', '/v1/customers', { auth: null, headers: { Authorization: 'Token abc' } });
    assert.equal(r2.status, 401);
  });

  test('Basic auth with the key as user name works', async () => {
    const basic = (k) => `Basic ${Buffer.from(`${k}:`).toString('base64')}`;
    const r = await srv.raw('GET', '/v1/customers', { auth: null, headers: { Authorization: basic(srv.key) } });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.object, 'list');
    const created = await srv.raw('POST', '/v1/customers', {
      auth: null, headers: { Authorization: basic(srv.liveKey) }, body: 'name=basic-live',
    });
    assert.equal(created.status, 200, created.text);
    assert.equal(created.json.livemode, true);
    const bad = await srv.raw('GET', '/v1/customers', { auth: null, headers: { Authorization: basic('sk_test_wrong') } });
    expectRawError(bad, { status: 401, code: 'api_key_invalid' });
    // Only the key itself: not the key with a NUL and more after it, not garbage after padding.
    for (const header of [`Basic ${Buffer.from(`${srv.key}\0junk:`).toString('base64')}`,
      `${basic(srv.key).replace(/=*$/, '')}==garbage`, `${basic(srv.key)}!`]) {
      const r2 = await srv.raw('GET', '/v1/customers', { auth: null, headers: { Authorization: header } });
      assert.equal(r2.status, 401, `${header}: ${r2.text}`);
    }
  });

  test('a key revoked with `tollgate keys revoke` while the server runs stops working within seconds, with its stream sessions', async () => {
    const made = await runCli(['keys', 'create', '--data', srv.dir]);
    assert.equal(made.code, 0, made.stderr);
    const key = made.stdout.trim().split('\n').pop();
    const stripe = stripeClient(key, srv.port);
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 }); // one connection, kept
    const viaConn = () => rawRequest(srv.port, 'GET', '/v1/customers?limit=1', { auth: key, agent });
    assert.equal((await stripe.customers.list({ limit: 1 })).object, 'list');
    assert.equal((await viaConn()).status, 200);
    const token = (await stripe.v2.billing.meterEventSession.create()).authentication_token;
    const other = (await srv.stripe.v2.billing.meterEventSession.create()).authentication_token;
    const stream = (t) => stripeClient(t, srv.port).v2.billing.meterEventStream.create({
      events: [{ event_name: meter.event_name, payload: { stripe_customer_id: cus.id, value: '1' } }],
    });
    await stream(token);

    const revoked = await runCli(['keys', 'revoke', key, '--data', srv.dir]);
    assert.equal(revoked.code, 0, revoked.stderr);
    assert.match(revoked.stdout, /^revoked sk_test_/);
    const t0 = Date.now();
    let r;
    while ((r = await viaConn()).status === 200 && Date.now() - t0 < 5000) await sleep(50);
    agent.destroy();
    expectRawError(r, { status: 401, code: 'api_key_invalid' });
    await assert.rejects(stripe.customers.list({ limit: 1 }), (e) => e.type === 'StripeAuthenticationError' && e.statusCode === 401);
    assert.equal((await srv.stripe.customers.list({ limit: 1 })).object, 'list', 'other keys still work');
    // The session the revoked key made ends with it (the cache looks it up again within 1 s).
    let refused;
    while (Date.now() - t0 < 5000) {
      try { await stream(token); await sleep(50); } catch (e) { refused = e; break; }
    }
    assert.equal(refused?.statusCode, 401, `stream with the revoked key's session: ${refused?.message}`);
    assert.equal(refused.raw?.code ?? refused.code, 'billing_meter_event_session_expired');
    await stream(other); // another key's session goes on

    const again = await runCli(['keys', 'revoke', key, '--data', srv.dir]);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /No active API key matches/);
    const nowhere = await runCli(['keys', 'revoke', key, '--data', join(srv.dir, 'missing')]);
    assert.equal(nowhere.code, 1);
    assert.match(nowhere.stderr, /no data directory/);
    assert.equal((await runCli(['keys', 'revoke'])).code, 2, 'usage');
  });

  test('the key is also accepted without trailing colon in Basic', async () => {
    const r = await srv.raw('GET', '/v1/customers', {
      auth: null, headers: { Authorization: `Basic ${Buffer.from(srv.key).toString('base64')}` },
    });
    assert.equal(r.status, 200, r.text);
  });
});

describe('routing and envelopes', () => {
  test('Stripe-Version: any well-formed version is answered with the shapes served, a malformed one refused', async () => {
    for (const v of ['2020-08-27', '2025-03-31.basil', '2026-07-29.dahlia', '2026-07-29.dahlia; embedded_connect_beta=v2', '']) {
      const r = await srv.raw('GET', '/v1/customers?limit=1', { headers: { 'Stripe-Version': v } });
      assert.equal(r.status, 200, `${v}: ${r.text}`);
      assert.equal(r.headers['stripe-version'], '2026-07-29.dahlia', 'the version of what is answered');
    }
    for (const v of ['garbage', '2020-8-27', '2026-07-29.', '2026-07-29.Dahlia', '2026-07-29 dahlia']) {
      const r = await srv.raw('GET', '/v1/customers?limit=1', { headers: { 'Stripe-Version': v } });
      expectRawError(r, { status: 400, message: `Invalid Stripe API version: ${v}` });
    }
  });

  test('every response carries Request-Id, Stripe-Version and JSON', async () => {
    const rs = [
      await srv.raw('GET', '/v1/customers'),
      await srv.raw('POST', '/v1/customers', { body: 'name=x' }),
      await srv.raw('GET', '/v1/customers/cus_missing'),
      await srv.raw('GET', '/v1/nope'),
      await srv.raw('DELETE', '/v1/billing/meters'),
      await srv.raw('POST', '/v1/customers', { body: 'a=%zz' }),
      await srv.raw('GET', '/v1/customers', { auth: null }),
      await srv.raw('POST', '/v2/billing/meter_events', { body: '{nope', headers: { 'Content-Type': 'application/json' } }),
    ];
    const ids = new Set();
    for (const r of rs) {
      checkCommonHeaders(r);
      ids.add(r.headers['request-id']);
    }
    assert.equal(ids.size, rs.length, 'request ids are unique');
  });

  test('unknown path is 404 unrecognized_request_url', async () => {
    for (const path of ['/v1/nope', '/v1/customers/cus_x/bogus', '/v3/customers', '/']) {
      const r = await srv.raw('GET', path);
      expectRawError(r, { status: 404, code: 'unrecognized_request_url', param: null });
    }
  });

  test('wrong method on a known path is 405 method_not_allowed', async () => {
    const r = await srv.raw('DELETE', '/v1/billing/meters');
    expectRawError(r, { status: 405, code: 'method_not_allowed', param: null });
    const r2 = await srv.raw('PUT', '/v1/customers');
    expectRawError(r2, { status: 405, code: 'method_not_allowed' });
    const r3 = await srv.raw('GET', '/v1/billing/meter_events');
    expectRawError(r3, { status: 405, code: 'method_not_allowed' });
  });

  test('healthz needs no key', async () => {
    const r = await srv.raw('GET', '/healthz', { auth: null });
    assert.equal(r.status, 200);
  });
});

describe('body decoding', () => {
  test('malformed percent-encoding is 400 body_malformed', async () => {
    for (const body of ['a=%zz', 'name=%', 'name=%4', '%zz=1']) {
      const r = await srv.raw('POST', '/v1/customers', { body });
      expectRawError(r, { status: 400, code: 'body_malformed' });
    }
  });

  test('deep bracket nesting is 400 and never a crash', async () => {
    const deep = `metadata${'[a]'.repeat(20)}=1`;
    const r = await srv.raw('POST', '/v1/customers', { body: deep });
    expectRawError(r, { status: 400, code: 'body_malformed' });
    const veryDeep = `x${'['.repeat(5000)}=1`;
    const r2 = await srv.raw('POST', '/v1/customers', { body: veryDeep });
    assert.equal(r2.status, 400, r2.text);
    const r3 = await srv.raw('POST', '/v1/customers', { body: `x${'[0]'.repeat(10000)}=1` });
    assert.equal(r3.status, 400, r3.text);
    const r4 = await srv.raw('POST', '/v2/billing/meter_events', {
      body: `${'['.repeat(10000)}${']'.repeat(10000)}`, headers: { 'Content-Type': 'application/json' },
    });
    assert.equal(r4.status, 400, r4.text);
    const h = await srv.raw('GET', '/healthz');
    assert.equal(h.status, 200);
  });

  test('unbalanced brackets and odd keys are 400, not a crash', async () => {
    for (const body of ['payload[value=1', 'payload]=1', '[]=1', 'a[b]]=1', '&&&', '=1', 'name']) {
      const r = await srv.raw('POST', '/v1/customers', { body });
      assert.ok(r.status === 400 || r.status === 200, `${body}: ${r.status} ${r.text}`);
      assert.ok(r.json, `${body}: not JSON`);
    }
    assert.equal((await srv.raw('GET', '/healthz')).status, 200);
  });

  test('percent-encoded brackets work like raw ones', async () => {
    const id = uniq('pct');
    const body = `event_name=${meter.event_name}&identifier=${id}` +
      `&payload%5Bstripe_customer_id%5D=${cus.id}&payload%5Bvalue%5D=3`;
    const r = await srv.raw('POST', '/v1/billing/meter_events', { body });
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.json.payload, { stripe_customer_id: cus.id, value: '3' });
    const mixed = `name=a%20b%2Bc&metadata%5Bk%5D=v%26w&metadata[z]=%E2%82%AC+sign`;
    const c = await srv.raw('POST', '/v1/customers', { body: mixed });
    assert.equal(c.status, 200, c.text);
    assert.equal(c.json.name, 'a b+c');
    assert.deepEqual(c.json.metadata, { k: 'v&w', z: '€ sign' });
  });

  test('expand[]= and expand[0]= are both accepted', async () => {
    const a = await srv.raw('GET', `/v1/customers/${cus.id}?expand[]=test_clock`);
    assert.equal(a.status, 200, a.text);
    const b = await srv.raw('GET', `/v1/customers/${cus.id}?expand%5B0%5D=test_clock`);
    assert.equal(b.status, 200, b.text);
    const c = await srv.raw('POST', '/v1/customers', { body: 'name=exp&expand[0]=test_clock' });
    assert.equal(c.status, 200, c.text);
    const d = await srv.raw('POST', `/v1/billing/meters/${meter.id}`, { body: 'expand[]=' });
    assert.equal(d.status, 200, d.text);
    const e = await srv.raw('GET', '/v1/customers?limit=1&expand[0]=data.test_clock&expand[1]=data.test_clock');
    assert.equal(e.status, 200, e.text);
  });

  test('GET takes parameters from the query string', async () => {
    const r = await srv.raw('GET', '/v1/customers?limit=2');
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.data.length, 2);
    const r2 = await srv.raw('GET', '/v1/customers?limit=1&starting_after=' + r.json.data[0].id);
    assert.equal(r2.status, 200, r2.text);
    assert.equal(r2.json.data[0].id, r.json.data[1].id);
    const r3 = await srv.raw('GET', '/v1/customers?bogus=1');
    expectRawError(r3, { status: 400, code: 'parameter_unknown', param: 'bogus' });
  });

  test('DELETE takes parameters from the query string', async () => {
    const c = await createCustomer(srv.stripe);
    const r = await srv.raw('DELETE', `/v1/customers/${c.id}?bogus=1`);
    expectRawError(r, { status: 400, code: 'parameter_unknown', param: 'bogus' });
    const ok = await srv.raw('DELETE', `/v1/customers/${c.id}`);
    assert.equal(ok.status, 200, ok.text);
    assert.deepEqual(ok.json, { id: c.id, object: 'customer', deleted: true });
  });

  test('a JSON body is accepted on /v1', async () => {
    const r = await srv.raw('POST', '/v1/customers', {
      body: JSON.stringify({ name: 'json', metadata: { a: '1' } }),
      headers: { 'Content-Type': 'application/json' },
    });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.name, 'json');
    assert.deepEqual(r.json.metadata, { a: '1' });
  });

  test('invalid JSON to /v2 is 400 body_malformed', async () => {
    for (const body of ['{nope', '', '[1,2]', '"str"', '{"event_name": "x",}']) {
      const r = await srv.raw('POST', '/v2/billing/meter_events', {
        body, headers: { 'Content-Type': 'application/json' },
      });
      assert.equal(r.status, 400, `${JSON.stringify(body)} -> ${r.status} ${r.text}`);
      assert.ok(r.json && r.json.error, r.text);
      if (body === '{nope') assert.equal(r.json.error.code, 'body_malformed');
    }
  });

  test('body over 1 MiB is 413 request_too_large', async () => {
    const body = `name=${'a'.repeat(1024 * 1024 + 100)}`;
    // With "Expect: 100-continue" the server must answer 413 before the body is sent.
    const r = await srv.raw('POST', '/v1/customers', { body, expectContinue: true });
    expectRawError(r, { status: 413, code: 'request_too_large', param: null });
    checkCommonHeaders(r);
    // Without it, a client still writing the body may see the 413 or lose the connection
    // (if the server closes without draining); the server must survive either way.
    try {
      const r2 = await srv.raw('POST', '/v1/customers', { body });
      expectRawError(r2, { status: 413, code: 'request_too_large' });
    } catch (e) {
      assert.match(e.code ?? '', /EPIPE|ECONNRESET/, e.message);
    }
    // A chunked body (no Content-Length) over the limit is refused as well.
    const chunked = await new Promise((res, rej) => {
      const req = http.request({
        host: '127.0.0.1', port: srv.port, method: 'POST', path: '/v1/customers',
        headers: { Authorization: `Bearer ${srv.key}`, 'Content-Type': 'application/x-www-form-urlencoded' },
      }, (resp) => { resp.resume(); resp.on('end', () => res(resp.statusCode)); });
      req.on('error', (e) => res(e.code));
      const chunk = 'a'.repeat(64 * 1024);
      req.write('name=');
      let sent = 0;
      const pump = () => {
        while (sent < 20) {
          sent++;
          if (!req.write(chunk)) { req.once('drain', pump); return; }
        }
        req.end();
      };
      pump();
      setTimeout(() => rej(new Error('chunked upload got no answer')), 15000).unref();
    });
    assert.ok([413, 'EPIPE', 'ECONNRESET'].includes(chunked), `chunked over the limit: ${chunked}`);
    // a body well under the limit is fine
    const ok = await srv.raw('POST', '/v1/customers', {
      body: `name=ok&metadata[a]=${'x'.repeat(500)}&metadata[b]=${'y'.repeat(500)}`,
    });
    assert.equal(ok.status, 200, ok.text);
    assert.equal((await srv.raw('GET', '/healthz')).status, 200);
  });

  test('a body over the limit is refused as soon as it is known to be, not once it has all come', async () => {
    // Reads until the answer's head is in; the connection stays open on the client's side.
    const answerOf = (head, body) => new Promise((res, rej) => {
      const sock = net.connect(srv.port, '127.0.0.1');
      let got = '';
      sock.on('data', (d) => {
        got += d.toString('latin1');
        if (got.includes('\r\n\r\n')) { res(got); sock.destroy(); }
      });
      sock.on('error', () => {});
      sock.write(head);
      sock.write(body);
      setTimeout(() => { sock.destroy(); rej(new Error(`no answer; got ${JSON.stringify(got)}`)); }, 5000).unref();
    });
    const auth = `Authorization: Bearer ${srv.key}\r\nContent-Type: application/x-www-form-urlencoded\r\n`;
    // A Content-Length of 10^17 without Expect: 413 while only 64 KiB of it was sent.
    const declared = await answerOf(`POST /v1/customers HTTP/1.1\r\nHost: x\r\n${auth}Content-Length: 100000000000000000\r\n\r\n`,
      'a'.repeat(64 * 1024));
    assert.match(declared, /^HTTP\/1\.1 413 /);
    // A chunked body: 413 once past 1 MiB, with no last chunk sent.
    const chunk = 'a'.repeat(256 * 1024);
    const chunked = await answerOf(`POST /v1/customers HTTP/1.1\r\nHost: x\r\n${auth}Transfer-Encoding: chunked\r\n\r\n`,
      Array.from({ length: 5 }, () => `${chunk.length.toString(16)}\r\n${chunk}\r\n`).join(''));
    assert.match(chunked, /^HTTP\/1\.1 413 /);
    assert.equal((await srv.raw('GET', '/healthz')).status, 200);
  });

  test('--max-body lowers the limit', async () => {
    const small = await startServer({ args: ['--max-body', '2048'] });
    try {
      const r = await small.raw('POST', '/v1/customers', { body: `name=${'b'.repeat(3000)}`, expectContinue: true });
      expectRawError(r, { status: 413, code: 'request_too_large' });
      const plain = await small.raw('POST', '/v1/customers', { body: `name=${'b'.repeat(3000)}` });
      expectRawError(plain, { status: 413, code: 'request_too_large' });
      const ok = await small.raw('POST', '/v1/customers', {
        body: `name=ok&metadata[a]=${'x'.repeat(500)}&metadata[b]=${'y'.repeat(500)}`,
      });
      assert.equal(ok.status, 200, ok.text);
      const v2 = await small.raw('POST', '/v2/billing/meter_events', {
        body: JSON.stringify({ event_name: 'x', payload: { pad: 'p'.repeat(3000) } }), expectContinue: true,
      });
      expectRawError(v2, { status: 413, code: 'request_too_large' });
    } finally {
      await small.close();
    }
  });
});

// Bytes on one socket: write `data` (a string or a list of strings written apart), read until
// the server closes, `expect` responses are in, or `waitMs` passes, and split what came back
// into responses.
function onSocket(port, data, { waitMs = 5000, expect = Infinity, noBody = [] } = {}) {
  return new Promise((res, rej) => {
    const sock = net.connect(port, '127.0.0.1');
    const chunks = [];
    let closed = false;
    sock.on('data', (c) => {
      chunks.push(c);
      if (splitResponses(Buffer.concat(chunks).toString('latin1'), noBody).length >= expect) finish();
    });
    sock.on('error', rej);
    sock.on('close', () => { closed = true; finish(); });
    const timer = setTimeout(() => { sock.destroy(); finish(); }, waitMs);
    let done = false;
    function finish() {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      res({ responses: splitResponses(Buffer.concat(chunks).toString('latin1'), noBody), closed });
    }
    sock.on('connect', async () => {
      for (const part of Array.isArray(data) ? data : [data]) {
        sock.write(part);
        await sleep(50);
      }
    });
  });
}

// noBody: the indexes of answers to HEAD (a Content-Length, no body)
function splitResponses(text, noBody = []) {
  const out = [];
  while (text.length) {
    const end = text.indexOf('\r\n\r\n');
    if (end < 0) break;
    const [statusLine, ...lines] = text.slice(0, end).split('\r\n');
    const headers = {};
    for (const l of lines) headers[l.slice(0, l.indexOf(':')).toLowerCase()] = l.slice(l.indexOf(':') + 1).trim();
    const len = noBody.includes(out.length) ? 0 : Number(headers['content-length'] ?? 0);
    if (text.length < end + 4 + len) break; // not all here yet
    const body = text.slice(end + 4, end + 4 + len);
    out.push({ status: Number(statusLine.split(' ')[1]), headers, body, json: body ? JSON.parse(body) : null });
    text = text.slice(end + 4 + len);
  }
  return out;
}

describe('HTTP/1.1 on the wire', () => {
  const auth = () => `Authorization: Bearer ${srv.key}\r\n`;
  const post = (path, body, extra = '') =>
    `POST ${path} HTTP/1.1\r\nHost: t\r\n${auth()}Content-Type: application/x-www-form-urlencoded\r\n` +
    `Content-Length: ${Buffer.byteLength(body)}\r\n${extra}\r\n${body}`;

  test('pipelined requests are answered in order, meter events included', async () => {
    const ids = [uniq('pipe'), uniq('pipe'), uniq('pipe')];
    const ev = (id, v) => post('/v1/billing/meter_events',
      `event_name=${meter.event_name}&identifier=${id}&payload[stripe_customer_id]=${cus.id}&payload[value]=${v}`);
    const r = await onSocket(srv.port, [
      ev(ids[0], 1) + `GET /v1/customers/${cus.id} HTTP/1.1\r\nHost: t\r\n${auth()}\r\n` + ev(ids[1], 2) +
        ev(ids[0], 1) + `GET /nope HTTP/1.1\r\nHost: t\r\n${auth()}\r\n` + ev(ids[2], 3),
    ], { expect: 6 });
    assert.equal(r.closed, false, 'keep-alive: the connection stays open');
    assert.deepEqual(r.responses.map((x) => x.status), [200, 200, 200, 400, 404, 200]);
    assert.equal(r.responses[0].json.identifier, ids[0]);
    assert.equal(r.responses[1].json.id, cus.id);
    assert.equal(r.responses[2].json.identifier, ids[1]);
    assert.equal(r.responses[3].json.error.code, 'duplicate_meter_event');
    assert.equal(r.responses[5].json.identifier, ids[2]);
    for (const x of r.responses) assert.match(x.headers['request-id'], /^req_/);
  });

  test('one connection changing keys: each request is answered for its own key', async () => {
    // The server remembers the key a connection last authenticated with; a different key on
    // the same connection (another mode, an invalid one, Basic auth, none) must not reuse it.
    const get = (authLine) => `GET /v1/customers?limit=1 HTTP/1.1\r\nHost: t\r\n${authLine}\r\n`;
    const createAs = (authLine, name) =>
      `POST /v1/customers HTTP/1.1\r\nHost: t\r\n${authLine}Content-Type: application/x-www-form-urlencoded\r\n` +
      `Content-Length: ${Buffer.byteLength(`name=${name}`)}\r\n\r\nname=${name}`;
    const bearer = (k) => `Authorization: Bearer ${k}\r\n`;
    const basic = (k) => `Authorization: Basic ${Buffer.from(`${k}:`).toString('base64')}\r\n`;
    const r = await onSocket(srv.port, [
      get(bearer(srv.key)) + createAs(bearer(srv.liveKey), 'switch-live') + get(bearer(`${srv.key}x`)) +
        createAs(bearer(srv.key), 'switch-test') + get('') + createAs(basic(srv.liveKey), 'switch-basic') +
        get(bearer(srv.key.slice(0, -1))) + get(bearer(srv.key)),
    ], { expect: 8 });
    assert.equal(r.closed, false);
    assert.deepEqual(r.responses.map((x) => x.status), [200, 200, 401, 200, 401, 200, 401, 200]);
    assert.equal(r.responses[1].json.livemode, true);
    assert.equal(r.responses[2].json.error.code, 'api_key_invalid');
    assert.equal(r.responses[3].json.livemode, false);
    assert.equal(r.responses[4].json.error.code, 'api_key_missing');
    assert.equal(r.responses[5].json.livemode, true);
    assert.equal(r.responses[6].json.error.code, 'api_key_invalid');
    for (const list of [r.responses[0], r.responses[7]]) { // lists of test-mode customers
      assert.equal(list.json.object, 'list');
      assert.ok(list.json.data.length === 1 && list.json.data[0].livemode === false, list.body);
    }
  });

  test('a pipelined read waits for the events before it: it sees them', async () => {
    // Meter events run together (each waits for its commit); a request of another kind
    // after them must see their effect, as if the requests had come one by one.
    const c = await createCustomer(srv.stripe);
    const t = nowSec() - 120;
    const start = floorTo(t, 60), end = start + 3600;
    const ev = (v) => post('/v1/billing/meter_events',
      `event_name=${meter.event_name}&identifier=${uniq('ord')}&timestamp=${t}` +
      `&payload[stripe_customer_id]=${c.id}&payload[value]=${v}`);
    const summary = `GET /v1/billing/meters/${meter.id}/event_summaries?customer=${c.id}` +
      `&start_time=${start}&end_time=${end} HTTP/1.1\r\nHost: t\r\n${auth()}\r\n`;
    const r = await onSocket(srv.port, [ev(1) + ev(2) + ev(3) + summary + ev(4) + summary], { expect: 6 });
    assert.deepEqual(r.responses.map((x) => x.status), [200, 200, 200, 200, 200, 200]);
    assert.equal(r.responses[3].json.data[0].aggregated_value, 6);
    assert.equal(r.responses[5].json.data[0].aggregated_value, 10);
  });

  test('a connection that starts with a check moves to the check lane and serves anything', async () => {
    const c = await createCustomer(srv.stripe);
    const t = nowSec() - 120;
    const start = floorTo(t, 60);
    const get = (path) => `GET ${path} HTTP/1.1\r\nHost: t\r\n${auth()}\r\n`;
    const check = get(`/v1/entitlements/check?customer=${c.id}&feature=none_${uniq('f')}`);
    const ev = post('/v1/billing/meter_events',
      `event_name=${meter.event_name}&identifier=${uniq('lane')}&timestamp=${t}` +
      `&payload[stripe_customer_id]=${c.id}&payload[value]=5`);
    const summary = get(`/v1/billing/meters/${meter.id}/event_summaries?customer=${c.id}` +
      `&start_time=${start}&end_time=${start + 3600}`);
    // written in pieces, so some requests arrive after the move
    const r = await onSocket(srv.port, [check + ev.slice(0, 40), ev.slice(40) + summary, check], { expect: 4 });
    assert.deepEqual(r.responses.map((x) => x.status), [200, 200, 200, 200]);
    assert.equal(r.responses[0].json.object, 'entitlements.check');
    assert.equal(r.responses[0].json.entitled, false);
    assert.equal(r.responses[0].json.reason, 'no_entitlement');
    assert.equal(r.responses[2].json.data[0].aggregated_value, 5);
    assert.equal(r.responses[3].json.object, 'entitlements.check');
  });

  test('--check-lane-realtime runs the check lane at SCHED_FIFO, or says why it cannot', async () => {
    const rt = await startServer({ args: ['--check-lane-realtime'] });
    try {
      const c = await createCustomer(rt.stripe);
      const r = await rt.stripe.rawRequest('GET', `/v1/entitlements/check?customer=${c.id}&feature=none`);
      assert.equal(r.reason, 'no_entitlement');
      const task = `/proc/${rt.child.pid}/task`;
      const tids = (await readdir(task)).filter((t) =>
        readFileSync(`${task}/${t}/comm`, 'latin1').trim() === 'tg-checks');
      assert.equal(tids.length, 1, 'one check lane thread');
      const stat = readFileSync(`${task}/${tids[0]}/stat`, 'latin1');
      const policy = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[38]); // field 41
      if (/cannot use SCHED_FIFO/.test(rt.output())) assert.equal(policy, 0, 'SCHED_OTHER when refused');
      else assert.equal(policy, 1, `SCHED_FIFO; log: ${rt.output().slice(-500)}`);
    } finally {
      await rt.close();
    }
  });

  test('the writer after a large batch and the check lane run 10 below the process\'s nice value where allowed; --no-priority-boost keeps both level', async () => {
    const niceOf = async (srv, comm) => {
      const task = `/proc/${srv.child.pid}/task`;
      const tids = (await readdir(task)).filter((t) =>
        readFileSync(`${task}/${t}/comm`, 'latin1').trim() === comm);
      assert.equal(tids.length, 1, `one ${comm} thread`);
      const stat = readFileSync(`${task}/${tids[0]}/stat`, 'latin1');
      return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[16]); // field 19
    };
    const base = os.getPriority(0);
    let mayRaise = true; // whether this process (and so the server) may go 10 below
    try {
      os.setPriority(0, Math.max(base - 10, -20));
      os.setPriority(0, base);
    } catch {
      mayRaise = false;
    }
    const boosted = mayRaise ? Math.max(base - 10, -20) : base;
    for (const args of [[], ['--no-priority-boost']]) {
      const srv = await startServer({ args: [...args, '--max-stream-events', '1000'] });
      try {
        const c = await createCustomer(srv.stripe);
        const r = await srv.stripe.rawRequest('GET', `/v1/entitlements/check?customer=${c.id}&feature=none`);
        assert.equal(r.reason, 'no_entitlement');
        assert.equal(await niceOf(srv, 'tg-checks'), args.length ? base : boosted, `check lane ${args}`);
        assert.equal(await niceOf(srv, 'tg-writer'), base, 'the writer before a large batch');
        const m = await createMeter(srv.stripe);
        const s = await srv.stripe.v2.billing.meterEventSession.create();
        const ts = new Date(nowSec() * 1000).toISOString();
        // Without an Idempotency-Key (the SDK sends one with every v2 request): storing the
        // keyed answer is a one-job batch of its own after the events' batch, and the writer
        // drops back before the answer goes out.
        const res = await rawRequest(srv.port, 'POST', '/v2/billing/meter_event_stream', {
          auth: s.authentication_token,
          body: {
            events: Array.from({ length: 300 }, () => ({
              event_name: m.event_name, identifier: uniq('p'), timestamp: ts,
              payload: { stripe_customer_id: c.id, value: '1' },
            })),
          },
        });
        assert.equal(res.status, 200, res.text);
        assert.equal(await niceOf(srv, 'tg-writer'), args.length ? base : boosted,
          `the writer after a batch of 300 ${args}; log: ${srv.output().slice(-300)}`);
      } finally {
        await srv.close();
      }
    }
  });

  test('a burst of connections, handed from the accepting loop to the others: every one is served', async () => {
    // The accepting loop gives each new connection to the loop with the fewest; hundreds at
    // once queue up for a busy loop (the list they wait on once overflowed the heap).
    const get = (path) => `GET ${path} HTTP/1.1\r\nHost: t\r\n${auth()}\r\n`;
    // one connection keeps a loop busy with 50,000 pipelined requests meanwhile
    const busy = net.connect(srv.port, '127.0.0.1');
    busy.on('error', () => {});
    busy.resume();
    busy.write(get('/healthz').repeat(50000));
    const all = await Promise.all(Array.from({ length: 400 }, (_, i) =>
      onSocket(srv.port, [i % 2 ? get(`/v1/customers/${cus.id}`) : get('/healthz')], { expect: 1 })));
    busy.destroy();
    assert.deepEqual([...new Set(all.map((r) => r.responses[0].status))], [200]);
    assert.equal(all.filter((r, i) => i % 2 && r.responses[0].json.id === cus.id).length, 200);
  });

  test('a request split across many writes, and a chunked body, are read whole', async () => {
    const name = uniq('split');
    const whole = post('/v1/customers', `name=${name}`);
    const parts = [];
    for (let i = 0; i < whole.length; i += 7) parts.push(whole.slice(i, i + 7));
    const r = await onSocket(srv.port, parts, { expect: 1 });
    assert.equal(r.responses.length, 1);
    assert.equal(r.responses[0].status, 200, r.responses[0].body);
    assert.equal(r.responses[0].json.name, name);

    const cname = uniq('chunked');
    const body = `name=${cname}&metadata[k]=v`;
    const chunked = `POST /v1/customers HTTP/1.1\r\nHost: t\r\n${auth()}Transfer-Encoding: chunked\r\n` +
      `Content-Type: application/x-www-form-urlencoded\r\n\r\n` +
      `5\r\n${body.slice(0, 5)}\r\n${(body.length - 5).toString(16)};ext=1\r\n${body.slice(5)}\r\n0\r\nX-T: 1\r\n\r\n`;
    const c = await onSocket(srv.port, [chunked.slice(0, 60), chunked.slice(60)], { expect: 1 });
    assert.equal(c.responses[0].status, 200, c.responses[0].body);
    assert.equal(c.responses[0].json.name, cname);
    assert.deepEqual(c.responses[0].json.metadata, { k: 'v' });
  });

  test('Connection: close and HTTP/1.0 close after the answer', async () => {
    const r = await onSocket(srv.port, `GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\nGET /healthz HTTP/1.1\r\nHost: t\r\n\r\n`);
    assert.equal(r.closed, true);
    assert.equal(r.responses.length, 1, 'nothing after the request that closes');
    assert.equal(r.responses[0].headers.connection, 'close');
    const old = await onSocket(srv.port, 'GET /healthz HTTP/1.0\r\n\r\n');
    assert.equal(old.closed, true);
    assert.equal(old.responses[0].status, 200);
  });

  test('--request-timeout closes a connection whose request never completes, not a slow or idle one', async () => {
    const t = await startServer({ args: ['--request-timeout', '2'] });
    const open = () => {
      const sock = net.connect(t.port, '127.0.0.1');
      const st = { sock, closed: false, data: '' };
      sock.on('data', (c) => { st.data += c.toString('latin1'); });
      sock.on('error', () => {});
      sock.on('close', () => { st.closed = true; });
      return st;
    };
    try {
      const dribble = open(); // a head, one byte every 300 ms: never whole
      const steady = open();  // whole requests every 300 ms
      const idle = open();    // nothing at all
      const head = 'GET /healthz HTTP/1.1\r\nHost: t\r\nX-Pad: ' + 'p'.repeat(40);
      let answered = 0;
      for (let i = 0; i < 20; i++) {
        if (!dribble.closed) dribble.sock.write(head[i % head.length]);
        steady.sock.write('GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n');
        await sleep(300);
      }
      answered = (steady.data.match(/HTTP\/1\.1 200/g) || []).length;
      assert.ok(dribble.closed, 'the never-completing request was cut');
      assert.equal(dribble.data, '', 'and nothing was answered to it');
      assert.ok(!steady.closed, 'a connection sending whole requests stays');
      assert.equal(answered, 20);
      assert.ok(!idle.closed, 'an idle connection stays (until the idle timeout)');
      for (const st of [steady, idle]) st.sock.destroy();
      assert.equal((await t.raw('GET', '/healthz')).status, 200);
    } finally {
      await t.close();
    }
  });

  test('malformed heads get a Stripe error and the connection is closed', async () => {
    const cases = [
      ['GARBAGE\r\n\r\n', 400, 'body_malformed'],
      ['GET / HTTP/2.0\r\n\r\n', 505, 'body_malformed'],
      ['POST /v1/customers HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc', 400, 'body_malformed'],
      ['POST /v1/customers HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\nabc', 400, 'body_malformed'],
      ['POST /v1/customers HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n', 501, 'body_malformed'],
      ['POST /v1/customers HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n', 400, 'body_malformed'],
      ['POST /v1/customers HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n', 400, 'body_malformed'],
      ['GET /healthz HTTP/1.1\r\n\r\n', 400, 'body_malformed'], // no Host
      [`GET /${'a'.repeat(9000)} HTTP/1.1\r\n\r\n`, 414, 'request_too_large'],
      [`GET / HTTP/1.1\r\nX: ${'b'.repeat(70000)}\r\n\r\n`, 431, 'request_too_large'],
    ];
    for (const [bytes, status, code] of cases) {
      const r = await onSocket(srv.port, bytes);
      assert.equal(r.responses.length, 1, `${bytes.slice(0, 40)}: one answer`);
      assert.equal(r.responses[0].status, status, bytes.slice(0, 60));
      assert.equal(r.responses[0].json.error.code, code);
      assert.equal(r.responses[0].json.error.type, 'invalid_request_error');
      assert.equal(r.closed, true, `${bytes.slice(0, 40)}: closed`);
    }
    // and the server is fine
    assert.equal((await srv.raw('GET', '/healthz')).status, 200);
  });

  test('HEAD gets headers only; HTTP/1.0 keep-alive is announced; absolute-form targets', async () => {
    const r = await onSocket(srv.port,
      'HEAD /healthz HTTP/1.1\r\nHost: t\r\n\r\nGET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n' +
      'GET http://localhost HTTP/1.1\r\nHost: t\r\n\r\nGET http://localhost/healthz?x=1 HTTP/1.1\r\nHost: t\r\n\r\n',
      { expect: 4, noBody: [0] });
    // HEAD: a 405 (no HEAD routes) whose Content-Length describes a body that is not sent
    assert.equal(r.responses[0].status, 405);
    assert.ok(Number(r.responses[0].headers['content-length']) > 0);
    assert.equal(r.responses[1].status, 200, 'the next answer starts right after the HEAD headers');
    assert.equal(r.responses[1].headers.connection, 'keep-alive');
    assert.equal(r.responses[2].status, 404);
    assert.equal(r.responses[2].json.error.code, 'unrecognized_request_url');
    assert.equal(r.responses[3].status, 200);
  });

  test('Expect: 100-continue behind a pipelined meter event gets "100 Continue" once that one is answered', async () => {
    // Pipelined meter events run together: the second's head is read while the first waits
    // for its commit, so its "100 Continue" must wait for the first answer, then go out.
    const ids = [uniq('cont'), uniq('cont')];
    const body = (id) => `event_name=${meter.event_name}&identifier=${id}&payload[stripe_customer_id]=${cus.id}&payload[value]=1`;
    const head = (id) => `POST /v1/billing/meter_events HTTP/1.1\r\nHost: t\r\n${auth()}Expect: 100-continue\r\n` +
      `Content-Type: application/x-www-form-urlencoded\r\nContent-Length: ${body(id).length}\r\n\r\n`;
    const sock = net.connect(srv.port, '127.0.0.1');
    let data = '';
    sock.on('error', () => {});
    sock.on('data', (c) => { data += c.toString('latin1'); });
    const seen = (re, ms) => new Promise((res) => {
      const t0 = Date.now();
      const poll = () => (re.test(data) || Date.now() - t0 > ms ? res(re.test(data)) : setTimeout(poll, 10));
      poll();
    });
    // the first whole (its body sent without waiting), the second's head only, at once
    sock.write(head(ids[0]) + body(ids[0]) + head(ids[1]));
    assert.ok(await seen(/HTTP\/1\.1 200[\s\S]*HTTP\/1\.1 100 Continue/, 3000),
      `no 100 Continue after the first answer; got ${JSON.stringify(data.slice(0, 300))}`);
    sock.write(body(ids[1]));
    assert.ok(await seen(/HTTP\/1\.1 200[\s\S]*HTTP\/1\.1 100[\s\S]*HTTP\/1\.1 200/, 3000), data);
    sock.destroy();
    for (const id of ids) assert.ok(data.includes(id), `${id} recorded`);
  });

  test('Expect: 100-continue gets "100 Continue" before the body', async () => {
    const name = uniq('cont');
    const body = `name=${name}`;
    const head = `POST /v1/customers HTTP/1.1\r\nHost: t\r\n${auth()}Expect: 100-continue\r\n` +
      `Content-Type: application/x-www-form-urlencoded\r\nContent-Length: ${body.length}\r\n\r\n`;
    const r = await onSocket(srv.port, [head, body], { expect: 2 });
    assert.deepEqual(r.responses.map((x) => x.status), [100, 200]);
    assert.equal(r.responses[1].json.name, name);
  });
});

describe('idempotency', () => {
  test('same key and body replays the stored response', async () => {
    const key = uniq('idk');
    const body = 'name=idem&email=i@example.com';
    const first = await srv.raw('POST', '/v1/customers', { body, headers: { 'Idempotency-Key': key } });
    assert.equal(first.status, 200, first.text);
    assert.notEqual(first.headers['idempotent-replayed'], 'true');
    const second = await srv.raw('POST', '/v1/customers', { body, headers: { 'Idempotency-Key': key } });
    assert.equal(second.status, 200);
    assert.equal(second.headers['idempotent-replayed'], 'true');
    assert.deepEqual(second.json, first.json);
    assert.notEqual(second.headers['request-id'], first.headers['request-id']);
    const list = await srv.stripe.customers.list({ limit: 100 });
    assert.equal(list.data.filter((c) => c.name === 'idem').length, 1);
  });

  test('same key with a different body is 400 idempotency_error', async () => {
    const key = uniq('idk');
    const first = await srv.raw('POST', '/v1/customers', { body: 'name=one', headers: { 'Idempotency-Key': key } });
    assert.equal(first.status, 200);
    const r = await srv.raw('POST', '/v1/customers', { body: 'name=two', headers: { 'Idempotency-Key': key } });
    expectRawError(r, { status: 400, type: 'idempotency_error', code: 'idempotency_key_mismatch' });
    const r2 = await srv.raw('POST', `/v1/customers/${first.json.id}`, { body: 'name=one', headers: { 'Idempotency-Key': key } });
    expectRawError(r2, { status: 400, type: 'idempotency_error', code: 'idempotency_key_mismatch' });
  });

  test('the query string is part of what a key stands for', async () => {
    const key = uniq('idq');
    const first = await srv.raw('POST', '/v1/customers?name=Alice', { headers: { 'Idempotency-Key': key } });
    assert.equal(first.status, 200, first.text);
    assert.equal(first.json.name, 'Alice');
    const r = await srv.raw('POST', '/v1/customers?name=Bob', { headers: { 'Idempotency-Key': key } });
    expectRawError(r, { status: 400, type: 'idempotency_error', code: 'idempotency_key_mismatch' });
    const again = await srv.raw('POST', '/v1/customers?name=Alice', { headers: { 'Idempotency-Key': key } });
    assert.equal(again.headers['idempotent-replayed'], 'true');
    assert.equal(again.json.id, first.json.id);
  });

  test('keys are per key: the same Idempotency-Key under another API key is independent', async () => {
    const key = uniq('idk');
    const a = await srv.raw('POST', '/v1/customers', { body: 'name=k', headers: { 'Idempotency-Key': key } });
    const b = await srv.raw('POST', '/v1/customers', { body: 'name=k', headers: { 'Idempotency-Key': key }, auth: srv.liveKey });
    assert.equal(a.status, 200);
    assert.equal(b.status, 200, b.text);
    assert.notEqual(b.headers['idempotent-replayed'], 'true');
    assert.equal(b.json.livemode, true);
    assert.notEqual(a.json.id, b.json.id);
  });

  test('an error from the handler is replayed too (meter event refusal)', async () => {
    const key = uniq('idk');
    const body = `event_name=${meter.event_name}&payload[stripe_customer_id]=cus_nope&payload[value]=1`;
    const a = await srv.raw('POST', '/v1/billing/meter_events', { body, headers: { 'Idempotency-Key': key } });
    expectRawError(a, { status: 400, code: 'meter_event_customer_not_found' });
    const b = await srv.raw('POST', '/v1/billing/meter_events', { body, headers: { 'Idempotency-Key': key } });
    assert.equal(b.status, 400);
    assert.deepEqual(b.json, a.json);
  });

  test('requests that fail before the handler are not stored', async () => {
    const key = uniq('idk');
    const bad = await srv.raw('POST', '/v1/customers', { body: 'name=%zz', headers: { 'Idempotency-Key': key } });
    assert.equal(bad.status, 400);
    const unauth = await srv.raw('POST', '/v1/customers', { body: 'name=ok', auth: null, headers: { 'Idempotency-Key': key } });
    assert.equal(unauth.status, 401);
    const good = await srv.raw('POST', '/v1/customers', { body: 'name=ok', headers: { 'Idempotency-Key': key } });
    assert.equal(good.status, 200, good.text);
    assert.notEqual(good.headers['idempotent-replayed'], 'true');
  });

  test('a meter event replay does not count twice', async () => {
    const c = await createCustomer(srv.stripe);
    const key = uniq('idk');
    const ts = Math.floor(nowSec() / 3600) * 3600 - 3600;
    const body = `event_name=${meter.event_name}&payload[stripe_customer_id]=${c.id}&payload[value]=5&timestamp=${ts + 60}`;
    const a = await srv.raw('POST', '/v1/billing/meter_events', { body, headers: { 'Idempotency-Key': key } });
    assert.equal(a.status, 200, a.text);
    const b = await srv.raw('POST', '/v1/billing/meter_events', { body, headers: { 'Idempotency-Key': key } });
    assert.equal(b.status, 200, b.text);
    assert.equal(b.headers['idempotent-replayed'], 'true');
    assert.deepEqual(b.json, a.json);
    const s = await srv.stripe.billing.meters.listEventSummaries(meter.id, {
      customer: c.id, start_time: ts, end_time: ts + 3600,
    });
    assert.equal(s.data[0].aggregated_value, 5);
  });

  test('concurrent use of one key: never two distinct successes', async () => {
    const c = await createCustomer(srv.stripe);
    const agent = new (await import('node:http')).Agent({ keepAlive: true, maxSockets: 8 });
    let inUse = 0;
    let replays = 0;
    try {
      for (let round = 0; round < 25; round++) {
        const key = uniq('race');
        const body = `event_name=${meter.event_name}&payload[stripe_customer_id]=${c.id}&payload[value]=1&identifier=${uniq('ri')}`;
        const rs = await Promise.all([0, 1, 2].map(() => rawRequest(srv.port, 'POST', '/v1/billing/meter_events', {
          body, auth: srv.key, agent, headers: { 'Idempotency-Key': key },
        })));
        const fresh = rs.filter((r) => r.status === 200 && r.headers['idempotent-replayed'] !== 'true');
        assert.equal(fresh.length, 1, `round ${round}: ${rs.map((r) => `${r.status} ${r.text}`).join(' | ')}`);
        for (const r of rs) {
          if (r === fresh[0]) continue;
          if (r.status === 409) {
            expectRawError(r, { status: 409, type: 'idempotency_error', code: 'idempotency_key_in_use' });
            inUse++;
          } else {
            assert.equal(r.status, 200, `round ${round}: ${r.status} ${r.text}`);
            assert.equal(r.headers['idempotent-replayed'], 'true');
            assert.deepEqual(r.json, fresh[0].json);
            replays++;
          }
        }
      }
    } finally {
      agent.destroy();
    }
    assert.equal(inUse + replays, 50);
  });

  test('a stored response survives a restart', async () => {
    const key = uniq('idk');
    const body = 'name=durable-idem';
    const first = await srv.raw('POST', '/v1/customers', { body, headers: { 'Idempotency-Key': key } });
    assert.equal(first.status, 200);
    await srv.restart();
    const second = await srv.raw('POST', '/v1/customers', { body, headers: { 'Idempotency-Key': key } });
    assert.equal(second.status, 200, second.text);
    assert.equal(second.headers['idempotent-replayed'], 'true');
    assert.deepEqual(second.json, first.json);
    const mism = await srv.raw('POST', '/v1/customers', { body: 'name=other', headers: { 'Idempotency-Key': key } });
    expectRawError(mism, { status: 400, type: 'idempotency_error' });
  });

  test('an over-long Idempotency-Key is refused', async () => {
    const r = await srv.raw('POST', '/v1/customers', { body: 'name=x', headers: { 'Idempotency-Key': 'k'.repeat(256) } });
    assert.equal(r.status, 400, r.text);
    assert.ok(r.json && r.json.error);
    const ok = await srv.raw('POST', '/v1/customers', { body: 'name=x', headers: { 'Idempotency-Key': uniq('k').padEnd(255, 'k') } });
    assert.equal(ok.status, 200, ok.text);
  });
});

describe('back-pressure', () => {
  test('a saturated event writer answers 429 rate_limit with Stripe-Should-Retry, and counts nothing for it', async () => {
    const own = await startServer({ args: ['--queue-events', '8', '--batch-events', '1'] });
    const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
    try {
      const m = await createMeter(own.stripe);
      const c = await createCustomer(own.stripe);
      const T = Math.floor(nowSec() / 60) * 60 - 600;
      const body = (i, extra = '') => `event_name=${m.event_name}&identifier=bp-${i}` +
        `&payload[stripe_customer_id]=${c.id}&payload[value]=1&timestamp=${T}${extra}`;
      const rs = await Promise.all(Array.from({ length: 200 }, (_, i) => rawRequest(own.port, 'POST', '/v1/billing/meter_events', {
        auth: own.key, agent, body: body(i), headers: { 'Idempotency-Key': `bp-key-${i}` },
      })));
      const ok = rs.filter((r) => r.status === 200).length;
      const limited = rs.filter((r) => r.status === 429);
      assert.equal(ok + limited.length, 200, rs.filter((r) => r.status !== 200 && r.status !== 429).map((r) => r.text).join('\n'));
      assert.ok(limited.length > 0, 'no 429 with an 8-event queue and 200 concurrent events');
      for (const r of limited) {
        expectRawError(r, { status: 429, type: 'rate_limit_error', code: 'rate_limit', param: null });
        assert.equal(r.headers['stripe-should-retry'], 'true');
        checkCommonHeaders(r);
      }
      const summary = async () => (await own.stripe.billing.meters.listEventSummaries(m.id, {
        customer: c.id, start_time: T, end_time: T + 60,
      })).data[0]?.aggregated_value ?? 0;
      assert.equal(await summary(), ok);
      // A 429 is not stored under its Idempotency-Key: the same request later goes through.
      const i = rs.findIndex((r) => r.status === 429);
      const again = await rawRequest(own.port, 'POST', '/v1/billing/meter_events', {
        auth: own.key, body: body(i), headers: { 'Idempotency-Key': `bp-key-${i}` },
      });
      assert.equal(again.status, 200, again.text);
      assert.notEqual(again.headers['idempotent-replayed'], 'true');
      assert.equal(await summary(), ok + 1);
      // stripe-node retries on Stripe-Should-Retry: true; every event lands exactly once.
      const retrying = stripeClient(own.key, own.port, { maxNetworkRetries: 8 });
      const made = await Promise.all(Array.from({ length: 40 }, (_, j) => retrying.billing.meterEvents.create({
        event_name: m.event_name, identifier: `bp-sdk-${j}`, timestamp: T,
        payload: { stripe_customer_id: c.id, value: '1' },
      })));
      assert.equal(made.length, 40);
      assert.equal(await summary(), ok + 1 + 40);
    } finally {
      agent.destroy();
      await own.close();
    }
  });
  test('the writer backlog is bounded in bytes too: large payloads get 429 before memory runs away', async () => {
    // 4 KiB of queued event memory, events of ~2 KiB payload, one event a transaction: most
    // concurrent requests find the backlog full; what is admitted counts once.
    const own = await startServer({ args: ['--queue-bytes', '4096', '--batch-events', '1'] });
    const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
    try {
      const m = await createMeter(own.stripe);
      const c = await createCustomer(own.stripe);
      const T = Math.floor(nowSec() / 60) * 60 - 600;
      const rs = await Promise.all(Array.from({ length: 100 }, (_, i) => rawRequest(own.port, 'POST', '/v1/billing/meter_events', {
        auth: own.key, agent,
        body: `event_name=${m.event_name}&identifier=bb-${i}&payload[stripe_customer_id]=${c.id}` +
          `&payload[value]=1&timestamp=${T}&payload[note]=${'n'.repeat(2000)}`,
      })));
      const ok = rs.filter((r) => r.status === 200).length;
      const limited = rs.filter((r) => r.status === 429);
      assert.equal(ok + limited.length, 100, rs.filter((r) => r.status !== 200 && r.status !== 429).map((r) => r.text).join('\n'));
      assert.ok(limited.length > 0, 'no 429 with a 4 KiB backlog and 100 concurrent 2 KiB events');
      assert.ok(ok > 0, 'an empty backlog always admits');
      for (const r of limited) assert.equal(r.headers['stripe-should-retry'], 'true');
      const sum = (await own.stripe.billing.meters.listEventSummaries(m.id, {
        customer: c.id, start_time: T, end_time: T + 60,
      })).data[0]?.aggregated_value ?? 0;
      assert.equal(sum, ok);
    } finally {
      agent.destroy();
      await own.close();
    }
  });
});

describe('shutdown', () => {
  test('SIGTERM exits 0 and data survives', async () => {
    const own = await startServer();
    const c = await createCustomer(own.stripe, { name: 'persisted' });
    // an idle keep-alive connection must not block shutdown
    const agent = new (await import('node:http')).Agent({ keepAlive: true });
    await rawRequest(own.port, 'GET', '/healthz', { agent });
    const t0 = Date.now();
    const info = await own.stop();
    agent.destroy();
    assert.deepEqual(info, { code: 0, signal: null }, own.output().slice(-2000));
    assert.ok(Date.now() - t0 < 5000, 'shutdown took too long');
    await own.restart();
    const again = await own.stripe.customers.retrieve(c.id);
    assert.equal(again.name, 'persisted');
    const info2 = await own.stop();
    assert.deepEqual(info2, { code: 0, signal: null });
    await own.close();
    await sleep(10);
  });

  test('SIGTERM during pipelined meter events: every answered event is stored, nothing else', async () => {
    const own = await startServer();
    try {
      const m = await createMeter(own.stripe);
      const c = await createCustomer(own.stripe);
      const t = nowSec() - 60;
      const body = (i) => `event_name=${m.event_name}&identifier=${uniq('term')}-${i}&timestamp=${t}` +
        `&payload[stripe_customer_id]=${c.id}&payload[value]=1`;
      const req = (i) => `POST /v1/billing/meter_events HTTP/1.1\r\nHost: t\r\n` +
        `Authorization: Bearer ${own.key}\r\nContent-Type: application/x-www-form-urlencoded\r\n` +
        `Content-Length: ${body(i).length}\r\n\r\n${body(i)}`;
      const socks = [];
      const texts = [];
      for (let k = 0; k < 4; k++) {
        const sock = net.connect(own.port, '127.0.0.1');
        const chunks = [];
        sock.on('data', (d) => chunks.push(d));
        sock.on('error', () => {});
        texts.push(new Promise((res) => sock.on('close', () => res(Buffer.concat(chunks).toString('latin1')))));
        await new Promise((res) => sock.on('connect', res));
        socks.push(sock);
      }
      // keep writing events until SIGTERM lands
      let writing = true;
      const pump = (async () => {
        for (let i = 0; writing; i++) {
          for (const sock of socks) if (!sock.destroyed) sock.write(Array.from({ length: 20 }, (_, j) => req(i * 20 + j)).join(''));
          await sleep(5);
        }
      })();
      await sleep(300);
      const t0 = Date.now();
      const info = await own.stop();
      writing = false;
      await pump;
      assert.deepEqual(info, { code: 0, signal: null }, own.output().slice(-2000));
      assert.ok(Date.now() - t0 < 8000, `shutdown took ${Date.now() - t0} ms`);
      const answered = (await Promise.all(texts)).map((x) => splitResponses(x));
      const ok = answered.flat().filter((x) => x.status === 200).length;
      assert.ok(ok > 0, 'some events were answered before the stop');
      for (const list of answered) for (const x of list) assert.equal(x.status, 200, x.body);
      await own.restart();
      const start = floorTo(t, 60);
      assert.equal(await usage(own.stripe, m.id, c.id, start, start + 3600), ok);
    } finally {
      await own.close();
    }
  });
});
