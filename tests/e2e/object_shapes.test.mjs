// Every object Tollgate answers with has every field the official client's type definitions
// say it always has (a field not marked optional), with null only where the type allows it.
// Typed code (TypeScript against stripe-node) reads these fields without checking for them.
// The types are read from the installed stripe package (tests/e2e/node_modules/stripe), the
// version package-lock.json pins.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { startServer, createCustomer, createMeter, nowSec, floorTo, HOUR, uniq } from './helpers.mjs';

const TYPES = fileURLToPath(new URL('./node_modules/stripe/esm/resources/', import.meta.url));

/** The fields of `export interface NAME` in file, or of NS.NAME (`interface NAME` in
 * `export declare namespace NS`): {name: {optional, type}}. */
function fieldsOf(file, name) {
  const lines = readFileSync(TYPES + file, 'utf8').split('\n');
  const [ns, inner] = name.includes('.') ? name.split('.') : [null, name];
  const from = ns ? lines.indexOf(`export declare namespace ${ns} {`) : 0;
  const indent = ns ? '    ' : '';
  const start = lines.indexOf(`${indent}${ns ? '' : 'export '}interface ${inner} {`, from);
  assert.ok(from >= 0 && start >= 0, `no interface ${name} in ${file}`);
  const field = new RegExp(`^${indent} {4}([a-z_0-9]+)(\\??): (.*);$`);
  const out = {};
  for (let i = start + 1; i < lines.length && lines[i] !== `${indent}}`; i++) {
    const m = lines[i].match(field);
    if (m) out[m[1]] = { optional: m[2] === '?', type: m[3] };
  }
  assert.ok(Object.keys(out).length > 0, `no fields read for ${name}`);
  return out;
}

/** What obj lacks, or has null against, of the interface's always-present fields. */
function shapeProblems(obj, file, name) {
  const problems = [];
  for (const [k, { optional, type }] of Object.entries(fieldsOf(file, name))) {
    if (optional) continue;
    if (!(k in obj)) problems.push(`missing ${k}: ${type}`);
    else if (obj[k] === null && !/\bnull\b/.test(type)) problems.push(`null ${k}: ${type}`);
  }
  return problems;
}

let srv, stripe;
before(async () => { srv = await startServer(); stripe = srv.stripe; });
after(async () => { await srv?.close(); });

test('objects have every field their stripe-node types always have', async () => {
  const clock = await stripe.testHelpers.testClocks.create({ frozen_time: nowSec() });
  const cus = await createCustomer(stripe, { email: 'shape@example.test', invoice_settings: { default_payment_method: 'pm_x' } });
  const meter = await createMeter(stripe);
  const prod = await stripe.products.create({ name: 'Shapes' });
  const seat = await stripe.prices.create({ product: prod.id, currency: 'usd', unit_amount: 1000, recurring: { interval: 'month' } });
  const metered = await stripe.prices.create({
    product: prod.id, currency: 'usd', billing_scheme: 'tiered', tiers_mode: 'graduated',
    tiers: [{ up_to: 100, unit_amount: 2 }, { up_to: 'inf', unit_amount: 1 }], expand: ['tiers'],
    recurring: { interval: 'month', usage_type: 'metered', meter: meter.id },
  });
  const sub = await stripe.subscriptions.create({ customer: cus.id, items: [{ price: seat.id, quantity: 2 }, { price: metered.id }] });
  const inv = await stripe.invoices.retrieve(sub.latest_invoice);
  const sched = await stripe.subscriptionSchedules.create({ from_subscription: sub.id });
  const event = (await stripe.events.list({ limit: 1 })).data[0];
  const feature = await stripe.entitlements.features.create({ name: 'Shapes', lookup_key: uniq('shape') });
  const pf = await stripe.products.createFeature(prod.id, { entitlement_feature: feature.id });
  const ent = (await stripe.entitlements.activeEntitlements.list({ customer: cus.id })).data[0];
  await stripe.billing.meterEvents.create({ event_name: meter.event_name, payload: { stripe_customer_id: cus.id, value: '3' } });
  const t = floorTo(nowSec(), HOUR);
  const summary = (await stripe.billing.meters.listEventSummaries(meter.id, { customer: cus.id, start_time: t - HOUR, end_time: t + HOUR })).data[0];

  const objects = [
    [cus, 'Customers.d.ts', 'Customer'],
    [meter, 'Billing/Meters.d.ts', 'Meter'],
    [summary, 'Billing/MeterEventSummaries.d.ts', 'MeterEventSummary'],
    [prod, 'Products.d.ts', 'Product'],
    [seat, 'Prices.d.ts', 'Price'],
    [metered, 'Prices.d.ts', 'Price'],
    [sub, 'Subscriptions.d.ts', 'Subscription'],
    [sub.items.data[0], 'SubscriptionItems.d.ts', 'SubscriptionItem'],
    [inv, 'Invoices.d.ts', 'Invoice'],
    [inv.lines.data[0], 'InvoiceLineItems.d.ts', 'InvoiceLineItem'],
    [sched, 'SubscriptionSchedules.d.ts', 'SubscriptionSchedule'],
    [clock, 'TestHelpers/TestClocks.d.ts', 'TestClock'],
    [event, 'Events.d.ts', 'EventBase'],
    [feature, 'Entitlements/Features.d.ts', 'Feature'],
    [pf, 'ProductFeatures.d.ts', 'ProductFeature'],
    [ent, 'Entitlements/ActiveEntitlements.d.ts', 'ActiveEntitlement'],
    // nested objects that typed code reads into
    [sub.items.data[0].plan, 'Plans.d.ts', 'Plan'],
    [sub.automatic_tax, 'Subscriptions.d.ts', 'Subscription.AutomaticTax'],
    [sub.billing_mode, 'Subscriptions.d.ts', 'Subscription.BillingMode'],
    [sub.invoice_settings, 'Subscriptions.d.ts', 'Subscription.InvoiceSettings'],
    [sub.trial_settings, 'Subscriptions.d.ts', 'Subscription.TrialSettings'],
    [inv.automatic_tax, 'Invoices.d.ts', 'Invoice.AutomaticTax'],
    [inv.issuer, 'Invoices.d.ts', 'Invoice.Issuer'],
    [inv.payment_settings, 'Invoices.d.ts', 'Invoice.PaymentSettings'],
    [inv.status_transitions, 'Invoices.d.ts', 'Invoice.StatusTransitions'],
    [inv.parent, 'Invoices.d.ts', 'Invoice.Parent'],
    [inv.lines.data[0].pricing, 'InvoiceLineItems.d.ts', 'InvoiceLineItem.Pricing'],
    [inv.lines.data[0].parent, 'InvoiceLineItems.d.ts', 'InvoiceLineItem.Parent'],
    [sched.default_settings, 'SubscriptionSchedules.d.ts', 'SubscriptionSchedule.DefaultSettings'],
    [sched.current_phase, 'SubscriptionSchedules.d.ts', 'SubscriptionSchedule.CurrentPhase'],
    [sched.phases[0], 'SubscriptionSchedules.d.ts', 'SubscriptionSchedule.Phase'],
    [meter.default_aggregation, 'Billing/Meters.d.ts', 'Meter.DefaultAggregation'],
    [meter.customer_mapping, 'Billing/Meters.d.ts', 'Meter.CustomerMapping'],
    [meter.value_settings, 'Billing/Meters.d.ts', 'Meter.ValueSettings'],
    [metered.recurring, 'Prices.d.ts', 'Price.Recurring'],
    [metered.tiers[0], 'Prices.d.ts', 'Price.Tier'],
    [cus.invoice_settings, 'Customers.d.ts', 'Customer.InvoiceSettings'],
  ];
  // Events say the version whose shapes they carry: the one answered when none is asked.
  const plain = await srv.raw('GET', '/v1/events?limit=1');
  assert.equal(plain.json.data[0].api_version, plain.headers['stripe-version']);
  assert.match(plain.headers['stripe-version'], /^\d{4}-\d{2}-\d{2}\.[a-z]+$/);

  const report = [];
  for (const [obj, file, name] of objects) {
    assert.ok(obj, `no ${name} to check`);
    for (const p of shapeProblems(obj, file, name)) report.push(`${name}: ${p}`);
  }
  assert.deepEqual(report, []);
});
