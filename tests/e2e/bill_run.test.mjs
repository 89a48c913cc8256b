// `tollgate bill run` closes due periods offline, like the server's scheduler, and running it
// twice never bills a period twice; it refuses to run beside a server on the same data.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startServer, runCli, nowSec, sleep, createCustomer, eventually } from './helpers.mjs';

let srv;
after(async () => { await srv?.close(); });

async function dailyPrice(stripe) {
  return stripe.prices.create({
    currency: 'usd', unit_amount: 1000, recurring: { interval: 'day' },
    product_data: { name: 'Daily plan' },
  });
}

test('bill run closes a due trial end once; a second run finds nothing', async () => {
  srv = await startServer();
  const stripe = srv.stripe;
  const price = await dailyPrice(stripe);
  const customer = await createCustomer(stripe, {
    invoice_settings: { default_payment_method: 'pm_out_of_band' },
  });
  const trialEnd = nowSec() + 3;
  const sub = await stripe.subscriptions.create({
    customer: customer.id, items: [{ price: price.id }], trial_end: trialEnd,
  });
  assert.equal(sub.status, 'trialing');
  await srv.stop(); // the server's scheduler must not run the trial end: the CLI does
  while (nowSec() <= trialEnd) await sleep(250);

  const first = await runCli(['bill', 'run', '--data', srv.dir]);
  assert.equal(first.code, 0, first.stderr);
  assert.match(first.stdout, /^[1-9]\d* billing steps? run/);
  const second = await runCli(['bill', 'run', '--data', srv.dir]);
  assert.equal(second.code, 0, second.stderr);
  assert.match(second.stdout, /^0 billing steps run/);

  await srv.restart();
  const after = await srv.stripe.subscriptions.retrieve(sub.id);
  assert.equal(after.status, 'active');
  assert.equal(after.items.data[0].current_period_start, trialEnd);
  assert.equal(after.items.data[0].current_period_end, trialEnd + 86400);
  const invoices = await srv.stripe.invoices.list({ subscription: sub.id });
  const reasons = invoices.data.map((i) => i.billing_reason).sort();
  assert.deepEqual(reasons, ['subscription_create', 'subscription_cycle']);
  const cycle = invoices.data.find((i) => i.billing_reason === 'subscription_cycle');
  assert.equal(cycle.status, 'draft');
  assert.equal(cycle.total, 1000);
  assert.equal(cycle.automatically_finalizes_at, trialEnd + 3600);
});

test('bill run refuses to start while a server holds the data directory, and runs once it stops', async () => {
  const s = await startServer();
  try {
    const beside = await runCli(['bill', 'run', '--data', s.dir]);
    assert.equal(beside.code, 1);
    assert.match(beside.stderr, /in use by another tollgate process/);
    await s.stop();
    const alone = await runCli(['bill', 'run', '--data', s.dir]);
    assert.equal(alone.code, 0, alone.stderr);
  } finally {
    await s.close();
  }
});

test('bill run refuses bad options', async () => {
  const r = await runCli(['bill', 'run', '--invoice-grace', '999999']);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /usage/);
});

test('serve refuses bad sizes and addresses before it touches the data directory', async () => {
  for (const args of [['--max-body', ' -1'], ['--max-stream-events', '-5'], ['--max-body', '+7'], ['--listen', ':34200'], ['--listen', '127.0.0.1:99999'],
    ['--identifier-days', '35'], ['--identifier-days', '0'], ['--identifier-days', '36501'], ['--identifier-days', 'never'], ['--identifier-days', '-1']]) {
    const dir = await mkdtemp(join(tmpdir(), 'tg-badarg-'));
    try {
      const r = await runCli(['serve', '--data', dir, ...args]);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.doesNotMatch(r.stderr, /recovered/, 'refused before the store was opened');
      assert.deepEqual(await readdir(dir), [], 'nothing written');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }
});

test('the server finalizes drafts by itself after --invoice-grace', async () => {
  await srv.restart();
  await srv.stop();
  const { dir } = srv;
  const s2 = await startServer({ dir, args: ['--invoice-grace', '1'] });
  try {
    const stripe = s2.stripe;
    const price = await dailyPrice(stripe);
    const customer = await createCustomer(stripe, {
      invoice_settings: { default_payment_method: 'pm_out_of_band' },
    });
    const trialEnd = nowSec() + 2;
    const sub = await stripe.subscriptions.create({
      customer: customer.id, items: [{ price: price.id }], trial_end: trialEnd,
    });
    // Nobody calls: the scheduler ends the trial, creates the draft, finalizes it a second
    // later.
    await eventually(async () => {
      const list = await stripe.invoices.list({ subscription: sub.id, status: 'open' });
      return list.data.map((i) => [i.billing_reason, i.total]);
    }, [['subscription_cycle', 1000]], { timeout: 10000, interval: 250 });
  } finally {
    await s2.stop();
  }
});
