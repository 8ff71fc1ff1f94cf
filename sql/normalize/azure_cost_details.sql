-- Azure cost details (EA and MCA; actual or amortized) → FOCUS 1.4 CostAndUsage.
--
-- Column names differ between EA, MCA and export versions (`Cost` / `CostInBillingCurrency` /
-- `costInBillingCurrency`, `BillingCurrency` / `BillingCurrencyCode`, `Product` / `ProductName`).
-- The reader turns every header into snake_case and renames the older spellings listed in
-- `@alias` below, so this file sees one shape. Dates are US `MM/DD/YYYY`; Azure's billing period
-- end is the last *day* of the period (inclusive), so BillingPeriodEnd is the day after it.
--
-- Cost views. Azure writes the same month twice: the *actual* file (what the invoice charges:
-- commitment purchases at full price, usage they cover at 0) and the *amortized* file (each
-- commitment's price spread over the usage it covered, plus UnusedReservation/UnusedSavingsPlan
-- rows for what it left unused; no purchase rows). A source says which it reads with
-- `params = { cost_view = "..." }`:
--   actual            BilledCost = Cost. EffectiveCost = Cost, except commitment purchases (0, as
--                     FOCUS requires); usage they covered shows EffectiveCost 0 because the actual
--                     file does not carry the amortization. Reconciled on BilledCost.
--   amortized         EffectiveCost = Cost. BilledCost = Cost, except usage covered by a commitment
--                     and unused commitment rows (0: the purchase is what is billed, and the
--                     amortized file has no purchase rows). Reconciled on EffectiveCost.
--   actual_purchases  for an actual file read *beside* the amortized file of the same months: only
--                     its commitment purchases and refunds are written (BilledCost = Cost,
--                     EffectiveCost 0); every other row is folded, because the amortized file
--                     already carries it. Reconciled on BilledCost: Σ actual Cost must equal the
--                     BilledCost written from both files, which proves nothing counted twice.
-- Both files together give FOCUS's full picture: BilledCost from the invoice, EffectiveCost
-- amortized. Quantities are in blocks of the unit of measure (`10K`, `1 Hour`, `1M`):
-- ConsumedQuantity multiplies by the block size from Microsoft's table
-- (`schemas/lookups/azure_pricing_units.csv`); PricingQuantity stays in blocks with the block in
-- PricingUnit (`10000 Units`), so unit prices stay Azure's own. Regions and services come from
-- Microsoft's two other tables beside it; a unit of measure, location or resource type they do
-- not list is kept as Azure wrote it (unit) or left NULL (region), never guessed. Refunds are
-- Purchase corrections; tax is Tax. PayGPrice is 0 on reservation-covered usage in Azure's
-- exports, so the list price falls back to UnitPrice there (as Microsoft's own FOCUS export does).
-- MCA unit prices are in the pricing currency: they fill the PricingCurrency* columns, and the
-- billing-currency unit prices are them times exchangeRatePricingToBilling (exact product).
-- ServiceName comes from the resource type (Microsoft's table), else the meter category; its
-- category and subcategory from the table by that name, so each name has exactly one of each.
--
-- @format: azure_cost_details
-- @provider: azure
-- @layout: azure
-- @param: cost_view = actual, amortized, actual_purchases
-- @source_measure: BilledCost, EffectiveCost when cost_view = amortized
-- @detect: meter_category, meter_id, unit_of_measure, charge_type, billing_period_start_date
-- @alias: cost_in_billing_currency=cost, cost_in_billing_currency=pre_tax_cost
-- @alias: billing_currency_code=billing_currency, billing_currency_code=currency
-- @alias: product_name=product, resource_id=instance_name, date=usage_date
-- @alias: pay_g_price=payg_price
-- @text: billing_account_id, billing_account_name, billing_profile_id, billing_profile_name
-- @text: invoice_id, partner_name
-- @text: subscription_id, subscription_name, resource_location, resource_id, resource_name
-- @text: product_name, product_id, part_number, meter_id, meter_name, meter_category, meter_sub_category
-- @text: unit_of_measure, consumed_service, charge_type, frequency, pricing_model
-- @text: reservation_id, reservation_name, benefit_id, benefit_name
-- @text: product_order_id, availability_zone, tags, billing_currency_code, pricing_currency
-- @decimal: cost_in_billing_currency, cost_in_pricing_currency, payg_cost_in_billing_currency
-- @decimal: quantity, unit_price, pay_g_price, exchange_rate_pricing_to_billing
-- @timestamp: date, billing_period_start_date, billing_period_end_date
-- @source_total: cost_in_billing_currency
-- @source_currency: billing_currency_code
-- @source_period: billing_period_start_date
-- @source_account: billing_account_id

WITH typed AS (
  SELECT
    *,
    cost_in_billing_currency AS cost,
    pricing_model IN ('Reservation', 'SavingsPlan') AS commitment,
    charge_type IN ('Purchase', 'Refund') AS buying,
    charge_type IN ('UnusedReservation', 'UnusedSavingsPlan') AS unused,
    CASE charge_type
      WHEN 'Usage' THEN 'Usage'
      WHEN 'UnusedReservation' THEN 'Usage'
      WHEN 'UnusedSavingsPlan' THEN 'Usage'
      WHEN 'Purchase' THEN 'Purchase'
      WHEN 'Refund' THEN 'Purchase'
      WHEN 'Tax' THEN 'Tax'
      WHEN 'Credit' THEN 'Credit'
      WHEN 'RoundingAdjustment' THEN 'Adjustment'
      WHEN 'Adjustment' THEN 'Adjustment'
    END AS category,
    CAST(tally_lookup('azure_pricing_units', 'PricingBlockSize', 'UnitOfMeasure', unit_of_measure)
      AS DECIMAL(38, 18)) AS block,
    tally_lookup('azure_pricing_units', 'DistinctUnits', 'UnitOfMeasure', unit_of_measure) AS distinct_unit,
    tally_ai_token_class('azure', meter_name) AS ai_class,
    -- ARM resource type from the id: /providers/<ns>/<type>/<name>[/<type>/<name>] → ns/type[/type]
    CASE WHEN resource_id LIKE '%/providers/%' THEN
      regexp_replace(lower(resource_id),
        '^.*?/providers/([^/]+)/([^/]+)(?:/[^/]*(?:/([^/]+))?)?.*$', '\1/\2/\3')
    END AS arm_type_raw,
    tally_lookup('azure_regions', 'RegionId', 'OriginalValue', resource_location) AS region_id,
    tally_lookup('azure_regions', 'RegionName', 'OriginalValue', resource_location) AS region_name,
    (pricing_currency IS NULL OR pricing_currency = billing_currency_code) AS same_currency
  FROM raw
),
classed AS (
  SELECT
    *,
    rtrim(arm_type_raw, '/') AS arm_type,
    commitment AND buying AS commitment_purchase,
    commitment AND NOT buying AS commitment_usage,
    -- A refund is a correction of a purchase: no unit prices or pricing quantity of its own.
    category IN ('Usage', 'Purchase') AND charge_type <> 'Refund' AS priced,
    CASE WHEN pay_g_price > 0 THEN pay_g_price ELSE unit_price END AS list_price,
    -- Unit prices in the billing currency: MCA's are in the pricing currency, times its rate.
    CASE WHEN same_currency THEN CASE WHEN pay_g_price > 0 THEN pay_g_price ELSE unit_price END
      ELSE tally_mul(CASE WHEN pay_g_price > 0 THEN pay_g_price ELSE unit_price END, exchange_rate_pricing_to_billing)
    END AS list_price_billing,
    CASE WHEN same_currency THEN unit_price ELSE tally_mul(unit_price, exchange_rate_pricing_to_billing) END
      AS unit_price_billing,
    CASE WHEN ai_class IS NOT NULL THEN 'Tokens' ELSE distinct_unit END AS unit_name
  FROM typed
),
costed AS (
  SELECT
    *,
    CASE
      WHEN '{{cost_view}}' = 'actual_purchases' AND NOT commitment_purchase
        THEN 'row of the actual file: the amortized file of the same month carries it'
    END AS fold,
    CASE
      WHEN '{{cost_view}}' = 'amortized' AND (commitment_usage OR unused) THEN CAST(0 AS DECIMAL(38, 18))
      ELSE cost
    END AS billed,
    CASE
      WHEN '{{cost_view}}' <> 'amortized' AND commitment_purchase THEN CAST(0 AS DECIMAL(38, 18))
      ELSE cost
    END AS effective,
    coalesce(tally_lookup2('azure_services', 'ServiceName', 'ConsumedService', consumed_service, 'ResourceType', arm_type),
             tally_lookup('azure_services', 'ServiceName', 'ResourceType', arm_type),
             meter_category, consumed_service, 'Unknown') AS svc_name,
    CASE WHEN commitment THEN coalesce(benefit_id,
      CASE WHEN reservation_id IS NOT NULL THEN
        '/providers/Microsoft.Capacity/reservationOrders/' || coalesce(product_order_id, '') || '/reservations/' || reservation_id
      END) END AS commitment_id
  FROM classed
),
serviced AS (
  SELECT
    *,
    -- Category and subcategory follow from the service name alone, so a name always has one.
    tally_lookup('azure_services', 'ServiceCategory', 'ServiceName', svc_name) AS svc_category,
    tally_lookup('azure_services', 'ServiceSubcategory', 'ServiceName', svc_name) AS svc_subcategory
  FROM costed
)
SELECT
  x_SourceRow,
  fold AS x__fold,
  availability_zone AS AvailabilityZone,
  billed AS BilledCost,
  coalesce(billing_profile_id, billing_account_id) AS BillingAccountId,
  coalesce(billing_profile_name, billing_account_name, billing_profile_id, billing_account_id) AS BillingAccountName,
  CASE WHEN billing_profile_id IS NULL OR billing_profile_id = billing_account_id
    THEN 'Billing Account' ELSE 'Billing Profile' END AS BillingAccountType,
  billing_currency_code AS BillingCurrency,
  billing_period_end_date + INTERVAL '1 day' AS BillingPeriodEnd,
  billing_period_start_date AS BillingPeriodStart,
  category AS ChargeCategory,
  CASE WHEN charge_type = 'Refund' THEN 'Correction' END AS ChargeClass,
  product_name AS ChargeDescription,
  CASE frequency
    WHEN 'OneTime' THEN 'One-Time'
    WHEN 'Recurring' THEN 'Recurring'
    WHEN 'UsageBased' THEN 'Usage-Based'
  END AS ChargeFrequency,
  date + INTERVAL '1 day' AS ChargePeriodEnd,
  date AS ChargePeriodStart,
  CASE WHEN commitment_id IS NOT NULL THEN
    CASE pricing_model WHEN 'Reservation' THEN 'Usage' ELSE 'Spend' END END AS CommitmentDiscountCategory,
  commitment_id AS CommitmentDiscountId,
  CASE WHEN commitment_id IS NOT NULL THEN coalesce(benefit_name, reservation_name) END AS CommitmentDiscountName,
  CASE WHEN commitment_id IS NOT NULL AND category = 'Usage' THEN
    CASE WHEN unused THEN 'Unused' ELSE 'Used' END END AS CommitmentDiscountStatus,
  CASE WHEN commitment_id IS NOT NULL THEN
    CASE pricing_model WHEN 'Reservation' THEN 'Reservation' ELSE 'Savings Plan' END END AS CommitmentDiscountType,
  CASE WHEN category = 'Usage' AND NOT unused AND block IS NOT NULL THEN tally_mul(quantity, block) END
    AS ConsumedQuantity,
  CASE WHEN category = 'Usage' AND NOT unused AND block IS NOT NULL THEN unit_name END AS ConsumedUnit,
  CASE WHEN priced AND unit_price_billing IS NOT NULL AND quantity IS NOT NULL
    THEN tally_mul(unit_price_billing, quantity) ELSE cost END AS ContractedCost,
  CASE WHEN priced THEN unit_price_billing END AS ContractedUnitPrice,
  effective AS EffectiveCost,
  'Microsoft' AS HostProviderName,
  invoice_id AS InvoiceId,
  coalesce(partner_name, 'Microsoft') AS InvoiceIssuerName,
  coalesce(payg_cost_in_billing_currency,
    CASE WHEN priced AND list_price_billing IS NOT NULL AND quantity IS NOT NULL
      THEN tally_mul(list_price_billing, quantity) END,
    cost) AS ListCost,
  CASE WHEN priced THEN list_price_billing END AS ListUnitPrice,
  CASE
    WHEN category = 'Purchase' THEN 'Standard'
    WHEN category <> 'Usage' THEN NULL
    WHEN commitment THEN 'Committed'
    WHEN pricing_model = 'OnDemand' THEN 'Standard'
    WHEN pricing_model = 'Spot' THEN 'Dynamic'
    ELSE 'Other'
  END AS PricingCategory,
  CASE WHEN same_currency OR cost_in_pricing_currency IS NULL THEN billing_currency_code ELSE pricing_currency END
    AS PricingCurrency,
  CASE WHEN priced AND (same_currency OR cost_in_pricing_currency IS NOT NULL) THEN unit_price END
    AS PricingCurrencyContractedUnitPrice,
  CASE
    WHEN effective = 0 THEN CAST(0 AS DECIMAL(38, 18))
    WHEN same_currency THEN effective
    ELSE coalesce(cost_in_pricing_currency, effective)
  END AS PricingCurrencyEffectiveCost,
  CASE WHEN priced AND (same_currency OR cost_in_pricing_currency IS NOT NULL) THEN list_price END
    AS PricingCurrencyListUnitPrice,
  CASE WHEN priced THEN quantity END AS PricingQuantity,
  CASE
    WHEN NOT priced OR quantity IS NULL THEN NULL
    WHEN block IS NULL THEN unit_of_measure
    WHEN block = 1 THEN unit_name
    ELSE CAST(CAST(block AS BIGINT) AS VARCHAR) || ' ' || unit_name
  END AS PricingUnit,
  region_id AS RegionId,
  CASE WHEN region_id IS NOT NULL THEN region_name END AS RegionName,
  resource_id AS ResourceId,
  CASE WHEN resource_id IS NOT NULL THEN coalesce(resource_name, resource_id) END AS ResourceName,
  CASE WHEN resource_id IS NOT NULL THEN coalesce(arm_type, 'unknown') END AS ResourceType,
  coalesce(svc_category, 'Other') AS ServiceCategory,
  svc_name AS ServiceName,
  -- Marketplace charges too: Microsoft sells and invoices them (the publisher is in ChargeDescription).
  'Microsoft' AS ServiceProviderName,
  CASE WHEN svc_category IS NOT NULL THEN svc_subcategory ELSE 'Other (Other)' END AS ServiceSubcategory,
  coalesce(product_id, part_number) AS SkuId,
  CASE WHEN coalesce(product_id, part_number) IS NOT NULL THEN meter_name END AS SkuMeter,
  -- A meter is priced per SKU: the price id names both, so it has one parent SkuId.
  CASE WHEN coalesce(product_id, part_number) IS NOT NULL AND meter_id IS NOT NULL
    THEN coalesce(product_id, part_number) || '/' || meter_id END AS SkuPriceId,
  subscription_id AS SubAccountId,
  CASE WHEN subscription_id IS NOT NULL THEN coalesce(subscription_name, subscription_id) END AS SubAccountName,
  CASE WHEN subscription_id IS NOT NULL THEN 'Subscription' END AS SubAccountType,
  -- EA writes tags without the braces of a JSON object; MCA with them.
  CASE
    WHEN tags IS NULL OR trim(tags) = '' THEN NULL
    WHEN left(trim(tags), 1) = '{' THEN trim(tags)
    ELSE '{' || trim(tags) || '}'
  END AS Tags,
  charge_type AS x_SourceChargeType,
  meter_sub_category AS x_UsageType,
  CASE WHEN category = 'Usage' AND NOT unused THEN tally_ai_model('azure', meter_name) END AS x_AiModel,
  CASE WHEN category = 'Usage' AND NOT unused THEN ai_class END AS x_AiTokenClass,
  CASE WHEN category = 'Usage' AND NOT unused AND ai_class IS NOT NULL AND block IS NOT NULL
    THEN tally_mul(quantity, block) END AS x_AiTokenCount,
  CASE WHEN category = 'Usage' AND NOT unused THEN tally_ai_tier('azure', meter_name) END AS x_AiServiceTier
FROM serviced
