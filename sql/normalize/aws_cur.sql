-- AWS Cost and Usage Report → FOCUS 1.4 CostAndUsage.
--
-- Takes all three AWS layouts through one mapping: the legacy CUR CSV (`lineItem/UnblendedCost`
-- headers), the CUR Parquet/Athena export (`line_item_unblended_cost`, ARNs spelled `_a_r_n`) and
-- CUR 2.0 (same snake_case names, product attributes in a `product` map, tags in `resource_tags`).
-- The reader renames legacy headers to the snake_case spelling, flattens the `product` map into
-- `product_<key>` columns and folds resource tags into one `tags` JSON object (user tags
-- unprefixed, `aws:` tags kept with their prefix), so this file sees one shape.
--
-- Line item types:
--   Usage, DiscountedUsage (RI-covered), SavingsPlanCoveredUsage  → Usage
--   Fee (RI upfront), RIFee (RI monthly), SavingsPlanUpfrontFee,
--   SavingsPlanRecurringFee                                         → Purchase
--   Tax → Tax; Credit, Refund, discounts → Credit
--   SavingsPlanNegation → folded: it cancels the on-demand cost of its covered usage row, whose
--   BilledCost is written as 0 instead (FOCUS: discounts are not separate negative rows). The
--   reconciliation proves each fold balances: Σ source UnblendedCost = Σ BilledCost written.
-- EffectiveCost is AWS's amortized cost: the RI/SP effective cost on covered usage, the unused
-- share on the RI and SP recurring fee rows, 0 on upfront purchases, UnblendedCost elsewhere.
--
-- @format: aws_cur
-- @provider: aws
-- @layout: aws_cur
-- @detect: line_item_unblended_cost, bill_payer_account_id, line_item_line_item_type
-- @text: identity_line_item_id, bill_invoice_id, bill_invoicing_entity, bill_billing_entity, bill_bill_type
-- @text: bill_payer_account_id, bill_payer_account_name, line_item_usage_account_id, line_item_usage_account_name
-- @text: line_item_line_item_type, line_item_product_code, line_item_usage_type, line_item_operation
-- @text: line_item_availability_zone, line_item_currency_code, line_item_line_item_description
-- @text: line_item_resource_id, line_item_tax_type, product_product_name, product_servicename
-- @text: product_servicecode, product_region_code, product_location, product_sku, product_product_family
-- @text: product_instance_type, product_usagetype, pricing_rate_id, pricing_term, pricing_unit
-- @text: reservation_reservation_a_r_n, savings_plan_savings_plan_a_r_n, tags
-- @decimal: line_item_unblended_cost, line_item_unblended_rate, line_item_usage_amount
-- @decimal: line_item_net_unblended_cost, pricing_public_on_demand_cost, pricing_public_on_demand_rate
-- @decimal: reservation_effective_cost, reservation_unused_amortized_upfront_fee_for_billing_period
-- @decimal: reservation_unused_recurring_fee, savings_plan_savings_plan_effective_cost
-- @decimal: savings_plan_total_commitment_to_date, savings_plan_used_commitment
-- @timestamp: bill_billing_period_start_date, bill_billing_period_end_date
-- @timestamp: line_item_usage_start_date, line_item_usage_end_date
-- @source_total: line_item_unblended_cost
-- @source_currency: line_item_currency_code
-- @source_period: bill_billing_period_start_date
-- @source_account: bill_payer_account_id

WITH typed AS (
  SELECT
    *,
    CASE line_item_line_item_type
      WHEN 'Usage' THEN 'Usage'
      WHEN 'DiscountedUsage' THEN 'Usage'
      WHEN 'SavingsPlanCoveredUsage' THEN 'Usage'
      WHEN 'Fee' THEN 'Purchase'
      WHEN 'RIFee' THEN 'Purchase'
      WHEN 'SavingsPlanUpfrontFee' THEN 'Purchase'
      WHEN 'SavingsPlanRecurringFee' THEN 'Purchase'
      WHEN 'Tax' THEN 'Tax'
      WHEN 'Credit' THEN 'Credit'
      WHEN 'Refund' THEN 'Credit'
      WHEN 'BundledDiscount' THEN 'Credit'
      WHEN 'Discount' THEN 'Credit'
      WHEN 'EdpDiscount' THEN 'Credit'
      WHEN 'PrivateRateDiscount' THEN 'Credit'
      WHEN 'SavingsPlanNegation' THEN 'Usage'
      ELSE 'Adjustment'
    END AS charge_category,
    CASE
      WHEN reservation_reservation_a_r_n IS NOT NULL
        AND line_item_line_item_type IN ('DiscountedUsage', 'RIFee', 'Fee') THEN 'RI'
      WHEN savings_plan_savings_plan_a_r_n IS NOT NULL
        AND line_item_line_item_type IN ('SavingsPlanCoveredUsage', 'SavingsPlanRecurringFee', 'SavingsPlanUpfrontFee') THEN 'SP'
    END AS commitment,
    -- AWS pricing units → FOCUS UnitFormat
    CASE pricing_unit
      WHEN 'Hrs' THEN 'Hours'
      WHEN 'hours' THEN 'Hours'
      WHEN 'Hours' THEN 'Hours'
      WHEN 'GB-Mo' THEN 'GB-Months'
      WHEN 'GB-Month' THEN 'GB-Months'
      WHEN 'Obj-Month' THEN 'Objects-Months'
      WHEN 'GB' THEN 'GB'
      WHEN 'Request' THEN 'Requests'
      WHEN 'Requests' THEN 'Requests'
      WHEN 'API Request' THEN 'Requests'
      WHEN 'API Requests' THEN 'Requests'
      WHEN 'Dashboards' THEN 'Dashboards'
      WHEN 'Keys' THEN 'Keys'
      WHEN 'Events' THEN 'Events'
      WHEN 'Secrets' THEN 'Secrets'
      WHEN 'Count' THEN 'Count'
      ELSE pricing_unit
    END AS unit
  FROM raw
)
SELECT
  x_SourceRow,
  CASE WHEN line_item_line_item_type = 'SavingsPlanNegation'
    THEN 'SavingsPlanNegation folded into its SavingsPlanCoveredUsage row (written with BilledCost 0)'
  END AS x__fold,
  line_item_availability_zone AS AvailabilityZone,
  CASE WHEN line_item_line_item_type = 'SavingsPlanCoveredUsage' THEN CAST(0 AS DECIMAL(38, 18))
       ELSE line_item_unblended_cost END AS BilledCost,
  bill_payer_account_id AS BillingAccountId,
  coalesce(bill_payer_account_name, bill_payer_account_id) AS BillingAccountName,
  'Payer Account' AS BillingAccountType,
  line_item_currency_code AS BillingCurrency,
  bill_billing_period_end_date AS BillingPeriodEnd,
  bill_billing_period_start_date AS BillingPeriodStart,
  charge_category AS ChargeCategory,
  CAST(NULL AS VARCHAR) AS ChargeClass,
  line_item_line_item_description AS ChargeDescription,
  CASE
    WHEN line_item_line_item_type IN ('Fee', 'SavingsPlanUpfrontFee') THEN 'One-Time'
    WHEN line_item_line_item_type IN ('RIFee', 'SavingsPlanRecurringFee') THEN 'Recurring'
    WHEN charge_category = 'Usage' THEN 'Usage-Based'
    ELSE 'One-Time'
  END AS ChargeFrequency,
  line_item_usage_end_date AS ChargePeriodEnd,
  line_item_usage_start_date AS ChargePeriodStart,
  CASE commitment WHEN 'RI' THEN 'Usage' WHEN 'SP' THEN 'Spend' END AS CommitmentDiscountCategory,
  CASE commitment WHEN 'RI' THEN reservation_reservation_a_r_n WHEN 'SP' THEN savings_plan_savings_plan_a_r_n END
    AS CommitmentDiscountId,
  CASE commitment WHEN 'RI' THEN 'Reserved Instance' WHEN 'SP' THEN 'Savings Plan' END AS CommitmentDiscountType,
  CASE WHEN commitment IS NOT NULL AND charge_category = 'Usage' THEN 'Used' END AS CommitmentDiscountStatus,
  CASE WHEN charge_category = 'Usage' AND unit IS NOT NULL THEN line_item_usage_amount END AS ConsumedQuantity,
  CASE WHEN charge_category = 'Usage' AND unit IS NOT NULL THEN unit END AS ConsumedUnit,
  coalesce(line_item_unblended_cost, CAST(0 AS DECIMAL(38, 18))) AS ContractedCost,
  CASE WHEN charge_category IN ('Usage', 'Purchase') AND unit IS NOT NULL THEN line_item_unblended_rate END
    AS ContractedUnitPrice,
  CASE
    WHEN commitment = 'RI' AND line_item_line_item_type = 'DiscountedUsage' THEN reservation_effective_cost
    WHEN commitment = 'SP' AND line_item_line_item_type = 'SavingsPlanCoveredUsage' THEN savings_plan_savings_plan_effective_cost
    WHEN line_item_line_item_type = 'RIFee' THEN
      coalesce(reservation_unused_amortized_upfront_fee_for_billing_period, CAST(0 AS DECIMAL(38, 18)))
      + coalesce(reservation_unused_recurring_fee, CAST(0 AS DECIMAL(38, 18)))
    WHEN line_item_line_item_type = 'SavingsPlanRecurringFee' THEN
      coalesce(savings_plan_total_commitment_to_date, CAST(0 AS DECIMAL(38, 18)))
      - coalesce(savings_plan_used_commitment, CAST(0 AS DECIMAL(38, 18)))
    WHEN line_item_line_item_type IN ('Fee', 'SavingsPlanUpfrontFee') AND commitment IS NOT NULL
      THEN CAST(0 AS DECIMAL(38, 18))
    ELSE line_item_unblended_cost
  END AS EffectiveCost,
  'AWS' AS HostProviderName,
  bill_invoice_id AS InvoiceId,
  coalesce(bill_invoicing_entity, 'AWS') AS InvoiceIssuerName,
  coalesce(pricing_public_on_demand_cost, line_item_unblended_cost) AS ListCost,
  CASE WHEN charge_category IN ('Usage', 'Purchase') AND unit IS NOT NULL THEN pricing_public_on_demand_rate END
    AS ListUnitPrice,
  CASE
    WHEN charge_category NOT IN ('Usage', 'Purchase') THEN NULL
    WHEN commitment IS NOT NULL AND charge_category = 'Usage' THEN 'Committed'
    WHEN pricing_term = 'OnDemand' THEN 'Standard'
    WHEN pricing_term = 'Spot' OR line_item_usage_type LIKE '%SpotUsage%' THEN 'Dynamic'
    ELSE 'Other'
  END AS PricingCategory,
  line_item_currency_code AS PricingCurrency,
  CASE WHEN charge_category IN ('Usage', 'Purchase') AND unit IS NOT NULL THEN line_item_unblended_rate END
    AS PricingCurrencyContractedUnitPrice,
  CASE
    WHEN commitment = 'RI' AND line_item_line_item_type = 'DiscountedUsage' THEN reservation_effective_cost
    WHEN commitment = 'SP' AND line_item_line_item_type = 'SavingsPlanCoveredUsage' THEN savings_plan_savings_plan_effective_cost
    WHEN line_item_line_item_type = 'RIFee' THEN
      coalesce(reservation_unused_amortized_upfront_fee_for_billing_period, CAST(0 AS DECIMAL(38, 18)))
      + coalesce(reservation_unused_recurring_fee, CAST(0 AS DECIMAL(38, 18)))
    WHEN line_item_line_item_type = 'SavingsPlanRecurringFee' THEN
      coalesce(savings_plan_total_commitment_to_date, CAST(0 AS DECIMAL(38, 18)))
      - coalesce(savings_plan_used_commitment, CAST(0 AS DECIMAL(38, 18)))
    WHEN line_item_line_item_type IN ('Fee', 'SavingsPlanUpfrontFee') AND commitment IS NOT NULL
      THEN CAST(0 AS DECIMAL(38, 18))
    ELSE line_item_unblended_cost
  END AS PricingCurrencyEffectiveCost,
  CASE WHEN charge_category IN ('Usage', 'Purchase') AND unit IS NOT NULL THEN pricing_public_on_demand_rate END
    AS PricingCurrencyListUnitPrice,
  CASE WHEN unit IS NOT NULL THEN line_item_usage_amount END AS PricingQuantity,
  unit AS PricingUnit,
  product_region_code AS RegionId,
  CASE WHEN product_region_code IS NOT NULL THEN coalesce(product_location, product_region_code) END AS RegionName,
  line_item_resource_id AS ResourceId,
  CASE
    WHEN line_item_product_code IN ('AmazonEC2', 'AWSLambda', 'AmazonECS', 'AmazonEKS', 'AmazonLightsail', 'AWSBatch') THEN 'Compute'
    WHEN line_item_product_code IN ('AmazonS3', 'AmazonEFS', 'AmazonFSx', 'AWSBackup', 'AmazonGlacier', 'AWSStorageGateway') THEN 'Storage'
    WHEN line_item_product_code IN ('AmazonRDS', 'AmazonDynamoDB', 'AmazonElastiCache', 'AmazonRedshift', 'AmazonDocDB', 'AmazonNeptune', 'AmazonTimestream') THEN 'Databases'
    WHEN line_item_product_code IN ('AmazonVPC', 'AmazonCloudFront', 'AmazonRoute53', 'AWSDataTransfer', 'AWSELB', 'AWSDirectConnect', 'AmazonApiGateway') THEN 'Networking'
    WHEN line_item_product_code IN ('AWSGlue', 'AmazonAthena', 'AmazonKinesis', 'AmazonKinesisFirehose', 'AmazonES', 'AmazonQuickSight', 'ElasticMapReduce') THEN 'Analytics'
    WHEN line_item_product_code IN ('AWSQueueService', 'AmazonSNS', 'AmazonStates', 'AmazonEventBridge', 'AmazonMQ') THEN 'Integration'
    WHEN line_item_product_code IN ('AmazonCloudWatch', 'AWSCloudTrail', 'AWSConfig', 'AWSCostExplorer', 'AWSSupportBusiness', 'AWSSupportEnterprise') THEN 'Management and Governance'
    WHEN line_item_product_code IN ('AWSMigrationHubRefactorSpaces', 'AWSMigrationHub', 'AWSDMS') THEN 'Migration'
    WHEN line_item_product_code IN ('awskms', 'AWSSecretsManager', 'AmazonGuardDuty', 'AWSWAF', 'AWSShield', 'AWSSecurityHub') THEN 'Security'
    WHEN line_item_product_code IN ('AmazonCognito', 'AWSDirectoryService') THEN 'Identity'
    WHEN line_item_product_code IN ('AmazonBedrock', 'AmazonSageMaker', 'AmazonRekognition', 'AmazonTextract', 'AmazonComprehend') THEN 'AI and Machine Learning'
    WHEN line_item_product_code IN ('AWSIoT') THEN 'Internet of Things'
    WHEN line_item_product_code IN ('AWSCloudShell', 'AWSCodeBuild', 'AWSCodePipeline', 'AWSCodeCommit') THEN 'Developer Tools'
    ELSE 'Other'
  END AS ServiceCategory,
  coalesce(product_product_name, product_servicename, line_item_product_code) AS ServiceName,
  'AWS' AS ServiceProviderName,
  CASE
    WHEN line_item_product_code = 'AmazonEC2' THEN 'Virtual Machines'
    WHEN line_item_product_code = 'AWSLambda' THEN 'Serverless Compute'
    WHEN line_item_product_code IN ('AmazonECS', 'AmazonEKS') THEN 'Containers'
    WHEN line_item_product_code IN ('AmazonS3', 'AmazonGlacier') THEN 'Object Storage'
    WHEN line_item_product_code IN ('AmazonEFS', 'AmazonFSx') THEN 'File Storage'
    WHEN line_item_product_code = 'AWSBackup' THEN 'Backup Storage'
    WHEN line_item_product_code IN ('AmazonRDS') THEN 'Relational Databases'
    WHEN line_item_product_code IN ('AmazonDynamoDB', 'AmazonDocDB') THEN 'NoSQL Databases'
    WHEN line_item_product_code = 'AmazonElastiCache' THEN 'Caching'
    WHEN line_item_product_code = 'AmazonRedshift' THEN 'Data Warehouses'
    WHEN line_item_product_code = 'AmazonCloudFront' THEN 'Content Delivery'
    WHEN line_item_product_code IN ('AmazonVPC', 'AWSDataTransfer', 'AWSDirectConnect') THEN 'Network Connectivity'
    WHEN line_item_product_code = 'AmazonRoute53' THEN 'Network Routing'
    WHEN line_item_product_code = 'AWSELB' THEN 'Application Networking'
    WHEN line_item_product_code = 'AmazonApiGateway' THEN 'API Management'
    WHEN line_item_product_code IN ('AWSGlue', 'ElasticMapReduce') THEN 'Data Processing'
    WHEN line_item_product_code = 'AmazonAthena' THEN 'Analytics Platforms'
    WHEN line_item_product_code IN ('AmazonKinesis', 'AmazonKinesisFirehose') THEN 'Streaming Analytics'
    WHEN line_item_product_code = 'AmazonES' THEN 'Search'
    WHEN line_item_product_code = 'AmazonQuickSight' THEN 'Business Intelligence'
    WHEN line_item_product_code IN ('AWSQueueService', 'AmazonSNS', 'AmazonMQ', 'AmazonEventBridge') THEN 'Messaging'
    WHEN line_item_product_code = 'AmazonStates' THEN 'Workflow Orchestration'
    WHEN line_item_product_code IN ('AmazonCloudWatch', 'AWSCloudTrail') THEN 'Observability'
    WHEN line_item_product_code = 'AWSConfig' THEN 'Compliance'
    WHEN line_item_product_code = 'AWSCostExplorer' THEN 'Cost Management'
    WHEN line_item_product_code IN ('AWSSupportBusiness', 'AWSSupportEnterprise') THEN 'Support'
    WHEN line_item_product_code = 'AWSMigrationHubRefactorSpaces' THEN 'Resource Migration'
    WHEN line_item_product_code = 'AWSSecretsManager' THEN 'Secret Management'
    WHEN line_item_product_code = 'awskms' THEN 'Secret Management'
    WHEN line_item_product_code IN ('AmazonGuardDuty', 'AWSSecurityHub') THEN 'Threat Detection and Response'
    WHEN line_item_product_code IN ('AWSWAF', 'AWSShield') THEN 'Network Security'
    WHEN line_item_product_code IN ('AmazonCognito', 'AWSDirectoryService') THEN 'Identity and Access Management'
    WHEN line_item_product_code = 'AmazonBedrock' THEN 'Generative AI'
    WHEN line_item_product_code = 'AmazonSageMaker' THEN 'Machine Learning'
    WHEN line_item_product_code IN ('AmazonRekognition', 'AmazonTextract', 'AmazonComprehend') THEN 'Natural Language Processing'
    WHEN line_item_product_code = 'AWSIoT' THEN 'IoT Platforms'
    WHEN line_item_product_code = 'AWSCloudShell' THEN 'Development Environments'
    WHEN line_item_product_code IN ('AWSCodeBuild', 'AWSCodePipeline') THEN 'Continuous Integration and Deployment'
    WHEN line_item_product_code = 'AWSCodeCommit' THEN 'Source Code Management'
    WHEN line_item_product_code = 'AmazonLightsail' THEN 'Virtual Machines'
    WHEN line_item_product_code = 'AWSBatch' THEN 'Other (Compute)'
    WHEN line_item_product_code = 'AWSStorageGateway' THEN 'Storage Platforms'
    WHEN line_item_product_code = 'AmazonNeptune' THEN 'NoSQL Databases'
    WHEN line_item_product_code = 'AmazonTimestream' THEN 'Time Series Databases'
    ELSE 'Other (Other)'
  END AS ServiceSubcategory,
  product_sku AS SkuId,
  product_usagetype AS SkuMeter,
  pricing_rate_id AS SkuPriceId,
  line_item_usage_account_id AS SubAccountId,
  CASE WHEN line_item_usage_account_id IS NOT NULL
    THEN coalesce(line_item_usage_account_name, line_item_usage_account_id) END AS SubAccountName,
  CASE WHEN line_item_usage_account_id IS NOT NULL THEN 'Linked Account' END AS SubAccountType,
  tags AS Tags,
  line_item_line_item_type AS x_SourceChargeType,
  line_item_usage_type AS x_UsageType,
  line_item_operation AS x_Operation
FROM typed
