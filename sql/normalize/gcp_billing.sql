-- Google Cloud billing export (BigQuery standard or detailed usage cost export, written out as
-- JSON lines, Parquet, or CSV with flattened `service.description`-style headers) → FOCUS 1.4.
--
-- The export nests records: `service`, `sku`, `project`, `location`, `resource`, `usage`,
-- `price`, `invoice`, `adjustment_info`, and the repeated `credits[]`, `labels[]`, `tags[]`. The
-- reader keeps each record as JSON text whose leaves are the exact text written (never a float),
-- and takes the fields this file declares out of them (`usage_amount` = `usage.amount`).
--
-- Money: BilledCost = `cost` (what the invoice charges before credits, GCP's own `cost` column,
-- which is what the run reconciles). Credits (sustained-use and committed-use discounts,
-- promotions, free tier, ...) are summed exactly into EffectiveCost = cost + Σ credits[].amount,
-- as FOCUS defines the amortized, after-discount cost. ListCost = `cost_at_list` (cost when the
-- export predates it). ContractedCost = cost, with `price.effective_price` as its unit price
-- where GCP prices by one pricing unit. The export has no list unit price, so ListUnitPrice and
-- SkuPriceId stay NULL (FOCUS asks for a list price wherever a SkuPriceId is given).
-- Billing period = `invoice.month` (`YYYYMM`; the end is exclusive, the next month's start).
-- Tags = project labels, overridden by resource-manager tags, overridden by the charge's own
-- labels. Units follow FOCUS UnitFormat through `schemas/lookups/gcp_units.csv`; a unit not
-- listed stays as GCP writes it. Vertex AI / Gemini SKUs (`Gemini 2.0 Flash Text Input -
-- Predictions`) fill the x_Ai* columns. cost_type `tax` → Tax, `adjustment` → a Credit
-- correction (ChargeClass Correction), `rounding_error` → Adjustment.
--
-- @format: gcp_billing
-- @provider: gcp
-- @layout: nested
-- @detect: billing_account_id, usage_start_time, usage_end_time, cost_type, currency, cost
-- @record: service, sku, project, location, resource, usage, price, invoice, adjustment_info
-- @record: credits, labels, tags, subscription
-- @text: billing_account_id, currency, cost_type, transaction_type, seller_name
-- @text: service_description, sku_id, sku_description, project_id, project_name
-- @text: project_labels, location_region, location_zone, resource_name
-- @text: resource_global_name, usage_unit, usage_pricing_unit
-- @text: adjustment_info_description, credits, labels, tags
-- @decimal: cost, cost_at_list, usage_amount, usage_amount_in_pricing_units
-- @decimal: price_effective_price, price_pricing_unit_quantity
-- @timestamp: usage_start_time, usage_end_time, invoice_month
-- @source_total: cost
-- @source_currency: currency
-- @source_period: invoice_month
-- @source_account: billing_account_id

WITH typed AS (
  SELECT
    *,
    CASE cost_type
      WHEN 'regular' THEN 'Usage'
      WHEN 'tax' THEN 'Tax'
      WHEN 'adjustment' THEN 'Credit'
      WHEN 'rounding_error' THEN 'Adjustment'
    END AS category,
    tally_json_sum(credits, 'amount') AS credit_total,
    tally_lookup('gcp_units', 'FocusUnit', 'Unit', usage_unit) AS consumed_unit,
    tally_lookup('gcp_units', 'FocusUnit', 'Unit', usage_pricing_unit) AS pricing_unit,
    tally_lookup('gcp_services', 'ServiceCategory', 'ServiceName', service_description) AS svc_category,
    tally_lookup('gcp_services', 'ServiceSubcategory', 'ServiceName', service_description) AS svc_subcategory,
    tally_ai_token_class('gcp', sku_description) AS ai_class
  FROM raw
),
shaped AS (
  SELECT
    *,
    category = 'Usage' AND usage_amount_in_pricing_units IS NOT NULL AND usage_pricing_unit IS NOT NULL AS priced
  FROM typed
)
SELECT
  x_SourceRow,
  location_zone AS AvailabilityZone,
  cost AS BilledCost,
  billing_account_id AS BillingAccountId,
  billing_account_id AS BillingAccountName,
  'Billing Account' AS BillingAccountType,
  currency AS BillingCurrency,
  invoice_month + INTERVAL '1 month' AS BillingPeriodEnd,
  invoice_month AS BillingPeriodStart,
  category AS ChargeCategory,
  CASE WHEN cost_type = 'adjustment' THEN 'Correction' END AS ChargeClass,
  coalesce(adjustment_info_description, sku_description) AS ChargeDescription,
  CASE WHEN cost_type = 'regular' THEN 'Usage-Based' ELSE 'One-Time' END AS ChargeFrequency,
  usage_end_time AS ChargePeriodEnd,
  usage_start_time AS ChargePeriodStart,
  CASE WHEN category = 'Usage' AND usage_amount IS NOT NULL THEN usage_amount END AS ConsumedQuantity,
  CASE WHEN category = 'Usage' AND usage_amount IS NOT NULL THEN
    CASE WHEN ai_class IS NOT NULL THEN 'Tokens' ELSE coalesce(consumed_unit, usage_unit) END
  END AS ConsumedUnit,
  cost AS ContractedCost,
  CASE WHEN priced AND coalesce(price_pricing_unit_quantity, 1) = 1 THEN price_effective_price END
    AS ContractedUnitPrice,
  cost + credit_total AS EffectiveCost,
  'Google Cloud' AS HostProviderName,
  CASE WHEN transaction_type = 'THIRD_PARTY_RESELLER' THEN coalesce(seller_name, 'Google Cloud')
    ELSE 'Google Cloud' END AS InvoiceIssuerName,
  coalesce(cost_at_list, cost) AS ListCost,
  CASE WHEN category = 'Usage' THEN 'Standard' END AS PricingCategory,
  currency AS PricingCurrency,
  CASE WHEN priced AND coalesce(price_pricing_unit_quantity, 1) = 1 THEN price_effective_price END
    AS PricingCurrencyContractedUnitPrice,
  cost + credit_total AS PricingCurrencyEffectiveCost,
  CASE WHEN priced THEN usage_amount_in_pricing_units END AS PricingQuantity,
  CASE WHEN priced THEN coalesce(pricing_unit, usage_pricing_unit) END AS PricingUnit,
  location_region AS RegionId,
  location_region AS RegionName,
  coalesce(resource_global_name, resource_name) AS ResourceId,
  CASE WHEN coalesce(resource_global_name, resource_name) IS NOT NULL
    THEN coalesce(resource_name, resource_global_name) END AS ResourceName,
  -- //compute.googleapis.com/projects/p/zones/z/instances/123 → compute.googleapis.com/instances
  CASE
    WHEN resource_global_name LIKE '//%/%/%' THEN
      regexp_replace(resource_global_name, '^//([^/]+)/(?:.*/)?([^/]+)/[^/]+$', '\1/\2')
    WHEN resource_name IS NOT NULL THEN service_description
  END AS ResourceType,
  coalesce(svc_category, 'Other') AS ServiceCategory,
  coalesce(service_description, 'Unknown') AS ServiceName,
  'Google Cloud' AS ServiceProviderName,
  CASE WHEN svc_category IS NOT NULL THEN svc_subcategory ELSE 'Other (Other)' END AS ServiceSubcategory,
  CASE WHEN category <> 'Tax' THEN sku_id END AS SkuId,
  CASE WHEN category <> 'Tax' AND sku_id IS NOT NULL THEN sku_description END AS SkuMeter,
  CAST(NULL AS VARCHAR) AS SkuPriceId,
  project_id AS SubAccountId,
  CASE WHEN project_id IS NOT NULL THEN coalesce(project_name, project_id) END AS SubAccountName,
  CASE WHEN project_id IS NOT NULL THEN 'Project' END AS SubAccountType,
  tally_json_merge(tally_json_merge(tally_kv_object(project_labels), tally_kv_object(tags)), tally_kv_object(labels))
    AS Tags,
  cost_type AS x_SourceChargeType,
  sku_description AS x_UsageType,
  CASE WHEN category = 'Usage' THEN tally_ai_model('gcp', sku_description) END AS x_AiModel,
  CASE WHEN category = 'Usage' THEN ai_class END AS x_AiTokenClass,
  CASE WHEN category = 'Usage' AND ai_class IS NOT NULL THEN usage_amount END AS x_AiTokenCount,
  CASE WHEN category = 'Usage' THEN tally_ai_tier('gcp', sku_description) END AS x_AiServiceTier
FROM shaped
