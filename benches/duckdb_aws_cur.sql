-- The DuckDB peer for benches/run.py: AWS CUR (CUR 2.0 column names) → FOCUS columns in Parquet,
-- one COPY statement, every input column read as text (as tally does), money cast to
-- DECIMAL(38,18). It maps the same FOCUS columns tally writes from these inputs, with the same
-- charge categories and commitment handling (SavingsPlanNegation rows are folded away), so the
-- two produce the same rows and BilledCost/EffectiveCost totals. {scan} (the input, every
-- column as text) and {out} are filled in by benches/duckdb_peer.py.
COPY (
  WITH raw AS (SELECT * FROM {scan}),
  m AS (
    SELECT
      *,
      CASE line_item_line_item_type
        WHEN 'Tax' THEN 'Tax'
        WHEN 'Credit' THEN 'Credit'
        WHEN 'Refund' THEN 'Adjustment'
        WHEN 'EdpDiscount' THEN 'Adjustment'
        WHEN 'RIFee' THEN 'Purchase'
        WHEN 'SavingsPlanRecurringFee' THEN 'Purchase'
        ELSE 'Usage'
      END AS charge_category,
      CAST(NULLIF(line_item_unblended_cost, '') AS DECIMAL(38, 18)) AS unblended,
      CAST(NULLIF(pricing_public_on_demand_cost, '') AS DECIMAL(38, 18)) AS list_cost,
      CAST(NULLIF(reservation_effective_cost, '') AS DECIMAL(38, 18)) AS ri_effective,
      CAST(NULLIF(savings_plan_savings_plan_effective_cost, '') AS DECIMAL(38, 18)) AS sp_effective,
      CAST(NULLIF(line_item_usage_amount, '') AS DECIMAL(38, 18)) AS usage_amount
    FROM raw
    WHERE line_item_line_item_type <> 'SavingsPlanNegation'
  )
  SELECT
    'AWS' AS ServiceProviderName,
    'AWS' AS HostProviderName,
    bill_invoicing_entity AS InvoiceIssuerName,
    bill_payer_account_id AS BillingAccountId,
    line_item_usage_account_id AS SubAccountId,
    bill_invoice_id AS InvoiceId,
    line_item_currency_code AS BillingCurrency,
    CAST(bill_billing_period_start_date AS TIMESTAMPTZ) AS BillingPeriodStart,
    CAST(bill_billing_period_end_date AS TIMESTAMPTZ) AS BillingPeriodEnd,
    CAST(line_item_usage_start_date AS TIMESTAMPTZ) AS ChargePeriodStart,
    CAST(line_item_usage_end_date AS TIMESTAMPTZ) AS ChargePeriodEnd,
    charge_category AS ChargeCategory,
    CASE WHEN line_item_line_item_type IN ('RIFee', 'SavingsPlanRecurringFee') THEN 'Recurring'
         WHEN charge_category = 'Usage' THEN 'Usage-Based' ELSE 'One-Time' END AS ChargeFrequency,
    line_item_line_item_description AS ChargeDescription,
    -- tally writes covered usage at BilledCost 0 and folds its SavingsPlanNegation away.
    CASE WHEN line_item_line_item_type = 'SavingsPlanCoveredUsage' THEN 0 ELSE unblended END AS BilledCost,
    CASE WHEN line_item_line_item_type = 'DiscountedUsage' THEN ri_effective
         WHEN line_item_line_item_type = 'SavingsPlanCoveredUsage' THEN sp_effective
         WHEN line_item_line_item_type IN ('RIFee', 'SavingsPlanRecurringFee') THEN 0
         ELSE unblended END AS EffectiveCost,
    COALESCE(list_cost, unblended) AS ListCost,
    unblended AS ContractedCost,
    CAST(NULLIF(line_item_unblended_rate, '') AS DECIMAL(38, 18)) AS ContractedUnitPrice,
    CAST(NULLIF(pricing_public_on_demand_rate, '') AS DECIMAL(38, 18)) AS ListUnitPrice,
    usage_amount AS ConsumedQuantity,
    pricing_unit AS ConsumedUnit,
    usage_amount AS PricingQuantity,
    pricing_unit AS PricingUnit,
    CASE WHEN pricing_term = 'Spot' THEN 'Dynamic'
         WHEN line_item_line_item_type IN ('DiscountedUsage', 'SavingsPlanCoveredUsage') THEN 'Committed'
         ELSE 'Standard' END AS PricingCategory,
    NULLIF(COALESCE(NULLIF(reservation_reservation_a_r_n, ''), savings_plan_savings_plan_a_r_n), '') AS CommitmentDiscountId,
    CASE WHEN reservation_reservation_a_r_n <> '' THEN 'Reserved Instance'
         WHEN savings_plan_savings_plan_a_r_n <> '' THEN 'Savings Plan' END AS CommitmentDiscountType,
    line_item_product_code AS ServiceName,
    CASE WHEN line_item_product_code IN ('AmazonEC2', 'AWSLambda') THEN 'Compute'
         WHEN line_item_product_code = 'AmazonS3' THEN 'Storage'
         WHEN line_item_product_code = 'AmazonRDS' THEN 'Databases'
         WHEN line_item_product_code = 'AmazonBedrock' THEN 'AI and Machine Learning'
         WHEN line_item_product_code = 'AWSDataTransfer' THEN 'Networking'
         ELSE 'Other' END AS ServiceCategory,
    NULLIF(line_item_resource_id, '') AS ResourceId,
    product_region_code AS RegionId,
    product_location AS RegionName,
    NULLIF(line_item_availability_zone, '') AS AvailabilityZone,
    product_sku AS SkuId,
    line_item_usage_type AS x_UsageType,
    line_item_operation AS x_Operation,
    to_json(map_from_entries(list_filter([
      struct_pack(k := 'user:cost_center', v := resource_tags_user_cost_center),
      struct_pack(k := 'user:environment', v := resource_tags_user_environment)
    ], lambda e: e.v IS NOT NULL AND e.v <> ''))) AS Tags,
    identity_line_item_id AS x_SourceLineItemId,
    strftime(CAST(bill_billing_period_start_date AS TIMESTAMP), '%Y-%m') AS x_BillingPeriod
  FROM m
) TO '{out}' (FORMAT parquet, COMPRESSION snappy);
