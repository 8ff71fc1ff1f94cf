-- Oracle Cloud Infrastructure cost report → FOCUS 1.4 CostAndUsage.
--
-- OCI's cost reports (CSV, `lineItem/...`, `product/...`, `usage/...`, `cost/...`, `tags/...`
-- columns) have one row per resource and hour. The reader renames the headers to snake_case
-- (`cost/myCost` → `cost_my_cost`) and folds the `tags/<namespace>.<key>` columns into one
-- `tags` JSON object with OCI's own keys.
--
-- The report carries no billing period: OCI bills by calendar month, so BillingPeriodStart is
-- the first of the month of lineItem/intervalUsageStart (and the reconciliation groups the
-- source's Σ cost/myCost the same way). The tenancy is the billing account and the compartment
-- the sub-account. cost/unitPrice is the customer's own price: it gives ContractedUnitPrice;
-- the report has no list price, so ListCost = BilledCost, ListUnitPrice and SkuPriceId are NULL. Rows with
-- lineItem/isCorrection = true are Corrections. Units follow cost/billingUnitReadable
-- ("1000000 NONE NONE DATAPOINTS" → "1000000 Datapoints", "1 GiB MONTHS STORAGE_SIZE" → "GiB-Months").
--
-- @format: oci_cost
-- @provider: oci
-- @layout: oci_cost
-- @detect: line_item_reference_no, line_item_tenant_id, cost_my_cost
-- @text: line_item_tenant_id, line_item_is_correction
-- @text: product_service, product_compartment_id, product_compartment_name, product_region
-- @text: product_availability_domain, product_resource_id, product_description
-- @text: cost_product_sku, cost_currency_code, cost_billing_unit_readable, cost_sku_unit_description
-- @text: tags
-- @decimal: usage_billed_quantity, cost_unit_price
-- @decimal: cost_my_cost
-- @timestamp: line_item_interval_usage_start, line_item_interval_usage_end
-- @source_total: cost_my_cost
-- @source_currency: cost_currency_code
-- @source_period: line_item_interval_usage_start
-- @source_period_grain: month
-- @source_account: line_item_tenant_id

WITH typed AS (
  SELECT
    *,
    date_trunc('month', line_item_interval_usage_start) AS period_start,
    CASE cost_billing_unit_readable
      WHEN '1000000 NONE NONE DATAPOINTS' THEN '1000000 Datapoints'
      WHEN '1 GiB MONTHS STORAGE_SIZE' THEN 'GiB-Months'
      WHEN '1 TiB MONTHS STORAGE_SIZE' THEN 'TiB-Months'
      WHEN '1 GiB MONTHS PERFORMANCE_UNITS' THEN 'GiB-Months'
      WHEN '1 NONE HOURS INSTANCE' THEN 'Hours'
      WHEN '1 NONE HOURS OCPUS' THEN 'OCPU-Hours'
      WHEN '1 GiB HOURS MEMORY' THEN 'GiB-Hours'
      WHEN '1 GiB HOURS STORAGE_SIZE' THEN 'GiB-Hours'
      WHEN '1 GiB HOURS DATA_TRANSFERRED' THEN 'GiB-Hours'
      WHEN '1 GiB NONE DATA_TRANSFERRED' THEN 'GiB'
      ELSE cost_sku_unit_description
    END AS unit,
    line_item_is_correction = 'true' AS correction
  FROM raw
)
SELECT
  x_SourceRow,
  product_availability_domain AS AvailabilityZone,
  cost_my_cost AS BilledCost,
  line_item_tenant_id AS BillingAccountId,
  line_item_tenant_id AS BillingAccountName,
  'Tenancy' AS BillingAccountType,
  cost_currency_code AS BillingCurrency,
  period_start + INTERVAL '1 month' AS BillingPeriodEnd,
  period_start AS BillingPeriodStart,
  CASE WHEN cost_my_cost < 0 AND NOT correction THEN 'Credit' ELSE 'Usage' END AS ChargeCategory,
  CASE WHEN correction THEN 'Correction' END AS ChargeClass,
  product_description AS ChargeDescription,
  'Usage-Based' AS ChargeFrequency,
  line_item_interval_usage_end AS ChargePeriodEnd,
  line_item_interval_usage_start AS ChargePeriodStart,
  CASE WHEN unit IS NOT NULL AND cost_my_cost >= 0 THEN usage_billed_quantity END AS ConsumedQuantity,
  CASE WHEN unit IS NOT NULL AND cost_my_cost >= 0 THEN unit END AS ConsumedUnit,
  cost_my_cost AS ContractedCost,
  CASE WHEN unit IS NOT NULL AND cost_my_cost >= 0 THEN cost_unit_price END AS ContractedUnitPrice,
  cost_my_cost AS EffectiveCost,
  'Oracle' AS HostProviderName,
  'Oracle' AS InvoiceIssuerName,
  cost_my_cost AS ListCost,
  CASE WHEN cost_my_cost >= 0 THEN 'Standard' END AS PricingCategory,
  cost_currency_code AS PricingCurrency,
  CASE WHEN unit IS NOT NULL AND cost_my_cost >= 0 THEN cost_unit_price END AS PricingCurrencyContractedUnitPrice,
  cost_my_cost AS PricingCurrencyEffectiveCost,
  CASE WHEN unit IS NOT NULL THEN usage_billed_quantity END AS PricingQuantity,
  unit AS PricingUnit,
  product_region AS RegionId,
  product_region AS RegionName,
  product_resource_id AS ResourceId,
  -- An OCID names its resource type: ocid1.<type>.<realm>...
  CASE
    WHEN product_resource_id IS NULL THEN NULL
    WHEN product_resource_id LIKE 'ocid1.%' THEN split_part(product_resource_id, '.', 2)
    ELSE lower(product_service)
  END AS ResourceType,
  CASE product_service
    WHEN 'COMPUTE' THEN 'Compute'
    WHEN 'BLOCK_STORAGE' THEN 'Storage'
    WHEN 'OBJECTSTORE' THEN 'Storage'
    WHEN 'FILE_STORAGE' THEN 'Storage'
    WHEN 'DATABASE' THEN 'Databases'
    WHEN 'MYSQL' THEN 'Databases'
    WHEN 'NETWORK' THEN 'Networking'
    WHEN 'TELEMETRY' THEN 'Management and Governance'
    WHEN 'ORACLE_STREAMING_SERVICE' THEN 'Analytics'
    WHEN 'GENERATIVE_AI' THEN 'AI and Machine Learning'
    ELSE 'Other'
  END AS ServiceCategory,
  CASE product_service
    WHEN 'COMPUTE' THEN 'Compute'
    WHEN 'BLOCK_STORAGE' THEN 'Block Volume'
    WHEN 'OBJECTSTORE' THEN 'Object Storage'
    WHEN 'FILE_STORAGE' THEN 'File Storage'
    WHEN 'DATABASE' THEN 'Database'
    WHEN 'MYSQL' THEN 'MySQL HeatWave'
    WHEN 'NETWORK' THEN 'Networking'
    WHEN 'TELEMETRY' THEN 'Monitoring'
    WHEN 'ORACLE_STREAMING_SERVICE' THEN 'Streaming'
    WHEN 'GENERATIVE_AI' THEN 'Generative AI'
    ELSE coalesce(product_service, 'Unknown')
  END AS ServiceName,
  'Oracle' AS ServiceProviderName,
  CASE product_service
    WHEN 'COMPUTE' THEN 'Virtual Machines'
    WHEN 'BLOCK_STORAGE' THEN 'Block Storage'
    WHEN 'OBJECTSTORE' THEN 'Object Storage'
    WHEN 'FILE_STORAGE' THEN 'File Storage'
    WHEN 'DATABASE' THEN 'Relational Databases'
    WHEN 'MYSQL' THEN 'Relational Databases'
    WHEN 'NETWORK' THEN 'Network Connectivity'
    WHEN 'TELEMETRY' THEN 'Observability'
    WHEN 'ORACLE_STREAMING_SERVICE' THEN 'Streaming Analytics'
    WHEN 'GENERATIVE_AI' THEN 'Generative AI'
    ELSE 'Other (Other)'
  END AS ServiceSubcategory,
  cost_product_sku AS SkuId,
  CASE WHEN cost_product_sku IS NOT NULL THEN cost_sku_unit_description END AS SkuMeter,
  -- No SkuPriceId: the report has no list price, and FOCUS asks for ListUnitPrice wherever a
  -- SkuPriceId points at a price list entry.
  CAST(NULL AS VARCHAR) AS SkuPriceId,
  product_compartment_id AS SubAccountId,
  CASE WHEN product_compartment_id IS NOT NULL
    THEN coalesce(product_compartment_name, product_compartment_id) END AS SubAccountName,
  CASE WHEN product_compartment_id IS NOT NULL THEN 'Compartment' END AS SubAccountType,
  tags AS Tags,
  product_description AS x_UsageType
FROM typed
