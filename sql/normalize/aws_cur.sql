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
-- EffectiveCost is AWS's amortized cost: the RI/SP effective cost on covered usage, 0 on the
-- commitment's own purchase rows, UnblendedCost elsewhere. What a commitment left unused in the
-- period (RIFee: unused amortized upfront + unused recurring fee; SavingsPlanRecurringFee:
-- commitment to date − used commitment) becomes one extra Usage row beside its fee row, with
-- CommitmentDiscountStatus 'Unused', BilledCost 0 and ResourceId = the commitment (FOCUS
-- DiscountHandling), so per commitment Σ EffectiveCost of Used + Unused = Σ BilledCost of the fees.
-- InvoiceIssuerName and the provider names are 'AWS'; the legal invoicing entity
-- (bill/InvoicingEntity, e.g. "Amazon Web Services EMEA SARL") is kept in x_InvoicingEntity.
--
-- @format: aws_cur
-- @provider: aws
-- @layout: aws_cur
-- @detect: line_item_unblended_cost, bill_payer_account_id, line_item_line_item_type
-- @text: bill_invoice_id, bill_invoicing_entity
-- @text: bill_payer_account_id, bill_payer_account_name, line_item_usage_account_id, line_item_usage_account_name
-- @text: line_item_line_item_type, line_item_product_code, line_item_usage_type, line_item_operation
-- @text: line_item_availability_zone, line_item_currency_code, line_item_line_item_description
-- @text: line_item_resource_id, product_product_name, product_servicename
-- @text: product_region_code, product_location, product_sku, product_product_family
-- @text: product_usagetype, product_region, pricing_rate_id, pricing_rate_code
-- @text: pricing_term, pricing_unit
-- @text: reservation_reservation_a_r_n, savings_plan_savings_plan_a_r_n, tags
-- @decimal: line_item_unblended_cost, line_item_unblended_rate, line_item_usage_amount
-- @decimal: pricing_public_on_demand_cost, pricing_public_on_demand_rate
-- @decimal: reservation_effective_cost, reservation_unused_amortized_upfront_fee_for_billing_period
-- @decimal: reservation_unused_recurring_fee, reservation_unused_quantity, savings_plan_savings_plan_effective_cost
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
      WHEN 'SavingsPlanNegation' THEN 'Usage'
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
      ELSE 'Adjustment'
    END AS charge_category,
    CASE
      WHEN reservation_reservation_a_r_n IS NOT NULL
        AND line_item_line_item_type IN ('DiscountedUsage', 'RIFee', 'Fee') THEN 'RI'
      WHEN savings_plan_savings_plan_a_r_n IS NOT NULL
        AND line_item_line_item_type IN ('SavingsPlanCoveredUsage', 'SavingsPlanRecurringFee', 'SavingsPlanUpfrontFee') THEN 'SP'
    END AS commitment,
    CASE
      WHEN line_item_line_item_type = 'RIFee' THEN
        coalesce(reservation_unused_amortized_upfront_fee_for_billing_period, CAST(0 AS DECIMAL(38, 18)))
        + coalesce(reservation_unused_recurring_fee, CAST(0 AS DECIMAL(38, 18)))
      WHEN line_item_line_item_type = 'SavingsPlanRecurringFee' THEN
        coalesce(savings_plan_total_commitment_to_date, CAST(0 AS DECIMAL(38, 18)))
        - coalesce(savings_plan_used_commitment, CAST(0 AS DECIMAL(38, 18)))
    END AS unused_commitment,
    tally_ai_token_class('aws', line_item_usage_type) AS ai_token_class,
    -- AWS pricing units → FOCUS UnitFormat (Bedrock token meters count tokens)
    CASE WHEN tally_ai_token_class('aws', line_item_usage_type) IS NOT NULL THEN 'Tokens'
    ELSE coalesce(CASE pricing_unit
      WHEN 'Hrs' THEN 'Hours'
      WHEN 'hours' THEN 'Hours'
      WHEN 'Hours' THEN 'Hours'
      WHEN 'GB-Mo' THEN 'GB-Months'
      WHEN 'GB-Month' THEN 'GB-Months'
      WHEN 'Obj-Month' THEN 'Objects-Months'
      WHEN 'Request' THEN 'Requests'
      WHEN 'API Request' THEN 'Requests'
      WHEN 'API Requests' THEN 'Requests'
    END, pricing_unit) END AS unit
  FROM raw
),
-- Every source row once ('charge'), plus one 'unused' row per commitment fee with unused capacity.
-- (unnest, not UNION ALL: the raw table is a stream that can be read only once.)
charges AS (
  SELECT
    *,
    unnest(CASE WHEN unused_commitment IS NOT NULL AND unused_commitment <> 0
      THEN make_array('charge', 'unused') ELSE make_array('charge') END) AS row_kind
  FROM typed
),
shaped AS (
  SELECT
    *,
    CASE WHEN row_kind = 'unused' THEN 'Usage' ELSE charge_category END AS category,
    CASE
      WHEN row_kind = 'unused' THEN unused_commitment
      WHEN commitment = 'RI' AND line_item_line_item_type = 'DiscountedUsage' THEN reservation_effective_cost
      WHEN commitment = 'SP' AND line_item_line_item_type = 'SavingsPlanCoveredUsage' THEN savings_plan_savings_plan_effective_cost
      WHEN commitment IS NOT NULL AND charge_category = 'Purchase' THEN CAST(0 AS DECIMAL(38, 18))
      ELSE line_item_unblended_cost
    END AS effective_cost,
    row_kind = 'charge' AND charge_category IN ('Usage', 'Purchase') AND unit IS NOT NULL AS priced,
    -- FOCUS: no pricing quantity on Tax; always one on Usage and Purchase (a fee without a pricing
    -- unit counts its usage amount, or 1, in 'Units'; an Unused RI row counts the reservation's
    -- unused hours, other Unused rows their fee row's quantity).
    CASE
      WHEN charge_category = 'Tax' THEN NULL
      WHEN row_kind = 'unused' AND commitment = 'RI' AND reservation_unused_quantity IS NOT NULL
        THEN reservation_unused_quantity
      WHEN unit IS NOT NULL THEN line_item_usage_amount
      WHEN charge_category IN ('Usage', 'Purchase') THEN coalesce(line_item_usage_amount, CAST(1 AS DECIMAL(38, 18)))
    END AS pricing_quantity
  FROM charges
)
SELECT
  x_SourceRow,
  CASE WHEN line_item_line_item_type = 'SavingsPlanNegation'
    THEN 'SavingsPlanNegation folded into its SavingsPlanCoveredUsage row (written with BilledCost 0)'
  END AS x__fold,
  CASE WHEN row_kind = 'unused'
    THEN 'explicit Unused row for the commitment capacity its fee row did not use'
  END AS x__derived,
  CASE WHEN row_kind = 'charge' THEN line_item_availability_zone END AS AvailabilityZone,
  CASE WHEN row_kind = 'unused' OR line_item_line_item_type = 'SavingsPlanCoveredUsage' THEN CAST(0 AS DECIMAL(38, 18))
       ELSE line_item_unblended_cost END AS BilledCost,
  bill_payer_account_id AS BillingAccountId,
  coalesce(bill_payer_account_name, bill_payer_account_id) AS BillingAccountName,
  'Payer Account' AS BillingAccountType,
  line_item_currency_code AS BillingCurrency,
  bill_billing_period_end_date AS BillingPeriodEnd,
  bill_billing_period_start_date AS BillingPeriodStart,
  category AS ChargeCategory,
  CAST(NULL AS VARCHAR) AS ChargeClass,
  CASE WHEN row_kind = 'unused' THEN 'Unused commitment' ELSE line_item_line_item_description END AS ChargeDescription,
  CASE
    WHEN row_kind = 'unused' THEN 'Usage-Based'
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
  CASE
    WHEN row_kind = 'unused' THEN 'Unused'
    WHEN commitment IS NOT NULL AND charge_category = 'Usage' THEN 'Used'
  END AS CommitmentDiscountStatus,
  CASE WHEN row_kind = 'charge' AND charge_category = 'Usage' AND unit IS NOT NULL THEN line_item_usage_amount END
    AS ConsumedQuantity,
  CASE WHEN row_kind = 'charge' AND charge_category = 'Usage' AND unit IS NOT NULL THEN unit END AS ConsumedUnit,
  CASE WHEN row_kind = 'unused' THEN CAST(0 AS DECIMAL(38, 18))
       ELSE coalesce(line_item_unblended_cost, CAST(0 AS DECIMAL(38, 18))) END AS ContractedCost,
  CASE WHEN priced THEN line_item_unblended_rate END AS ContractedUnitPrice,
  effective_cost AS EffectiveCost,
  'AWS' AS HostProviderName,
  bill_invoice_id AS InvoiceId,
  'AWS' AS InvoiceIssuerName,
  CASE WHEN row_kind = 'unused' THEN CAST(0 AS DECIMAL(38, 18))
       ELSE coalesce(pricing_public_on_demand_cost, line_item_unblended_cost) END AS ListCost,
  CASE WHEN priced THEN pricing_public_on_demand_rate END AS ListUnitPrice,
  CASE
    WHEN row_kind = 'unused' THEN 'Committed'
    WHEN charge_category NOT IN ('Usage', 'Purchase') THEN NULL
    WHEN commitment IS NOT NULL AND charge_category = 'Usage' THEN 'Committed'
    WHEN pricing_term = 'OnDemand' THEN 'Standard'
    WHEN pricing_term = 'Spot' OR line_item_usage_type LIKE '%SpotUsage%' THEN 'Dynamic'
    ELSE 'Other'
  END AS PricingCategory,
  line_item_currency_code AS PricingCurrency,
  CASE WHEN priced THEN line_item_unblended_rate END AS PricingCurrencyContractedUnitPrice,
  effective_cost AS PricingCurrencyEffectiveCost,
  CASE WHEN priced THEN pricing_public_on_demand_rate END AS PricingCurrencyListUnitPrice,
  pricing_quantity AS PricingQuantity,
  CASE
    WHEN pricing_quantity IS NULL THEN NULL
    WHEN row_kind = 'unused' AND commitment = 'RI' AND reservation_unused_quantity IS NOT NULL THEN 'Hours'
    ELSE coalesce(unit, 'Units')
  END AS PricingUnit,
  coalesce(product_region_code, product_region) AS RegionId,
  CASE WHEN coalesce(product_region_code, product_region) IS NOT NULL
    THEN coalesce(product_location, product_region_code, product_region) END AS RegionName,
  CASE
    WHEN row_kind = 'unused' THEN CASE commitment WHEN 'RI' THEN reservation_reservation_a_r_n ELSE savings_plan_savings_plan_a_r_n END
    ELSE line_item_resource_id
  END AS ResourceId,
  -- ResourceType from the id's shape, else the product family (FOCUS: set whenever ResourceId is).
  CASE
    WHEN row_kind = 'unused' THEN CASE commitment WHEN 'RI' THEN 'Reserved Instance' ELSE 'Savings Plan' END
    WHEN line_item_resource_id IS NULL THEN NULL
    WHEN line_item_resource_id LIKE 'i-%' THEN 'Instance'
    WHEN line_item_resource_id LIKE 'vol-%' THEN 'Volume'
    WHEN line_item_resource_id LIKE 'snap-%' THEN 'Snapshot'
    WHEN line_item_resource_id LIKE 'nat-%' THEN 'NAT Gateway'
    WHEN line_item_resource_id LIKE 'eipalloc-%' THEN 'Elastic IP'
    WHEN line_item_resource_id LIKE 'arn:aws:lambda:%:function:%' THEN 'Function'
    WHEN line_item_resource_id LIKE 'arn:aws:rds:%:db:%' THEN 'DB Instance'
    WHEN line_item_product_code = 'AmazonS3' THEN 'Bucket'
    ELSE coalesce(product_product_family, line_item_product_code)
  END AS ResourceType,
  -- One WHEN per product code: a CASE of literals runs as one hash lookup per row, where
  -- `WHEN code IN (...)` branches would each test every row not matched yet.
  CASE line_item_product_code
    WHEN 'AmazonEC2' THEN 'Compute'
    WHEN 'AWSLambda' THEN 'Compute'
    WHEN 'AmazonECS' THEN 'Compute'
    WHEN 'AmazonEKS' THEN 'Compute'
    WHEN 'AmazonLightsail' THEN 'Compute'
    WHEN 'AWSBatch' THEN 'Compute'
    WHEN 'ComputeSavingsPlans' THEN 'Compute'
    WHEN 'AmazonS3' THEN 'Storage'
    WHEN 'AmazonEFS' THEN 'Storage'
    WHEN 'AmazonFSx' THEN 'Storage'
    WHEN 'AWSBackup' THEN 'Storage'
    WHEN 'AmazonGlacier' THEN 'Storage'
    WHEN 'AWSStorageGateway' THEN 'Storage'
    WHEN 'AmazonRDS' THEN 'Databases'
    WHEN 'AmazonDynamoDB' THEN 'Databases'
    WHEN 'AmazonElastiCache' THEN 'Databases'
    WHEN 'AmazonRedshift' THEN 'Databases'
    WHEN 'AmazonDocDB' THEN 'Databases'
    WHEN 'AmazonNeptune' THEN 'Databases'
    WHEN 'AmazonTimestream' THEN 'Databases'
    WHEN 'AmazonVPC' THEN 'Networking'
    WHEN 'AmazonCloudFront' THEN 'Networking'
    WHEN 'AmazonRoute53' THEN 'Networking'
    WHEN 'AWSDataTransfer' THEN 'Networking'
    WHEN 'AWSELB' THEN 'Networking'
    WHEN 'AWSDirectConnect' THEN 'Networking'
    WHEN 'AmazonApiGateway' THEN 'Networking'
    WHEN 'AWSGlue' THEN 'Analytics'
    WHEN 'AmazonAthena' THEN 'Analytics'
    WHEN 'AmazonKinesis' THEN 'Analytics'
    WHEN 'AmazonKinesisFirehose' THEN 'Analytics'
    WHEN 'AmazonES' THEN 'Analytics'
    WHEN 'AmazonQuickSight' THEN 'Analytics'
    WHEN 'ElasticMapReduce' THEN 'Analytics'
    WHEN 'AWSQueueService' THEN 'Integration'
    WHEN 'AmazonSNS' THEN 'Integration'
    WHEN 'AmazonStates' THEN 'Integration'
    WHEN 'AmazonEventBridge' THEN 'Integration'
    WHEN 'AmazonMQ' THEN 'Integration'
    WHEN 'AmazonCloudWatch' THEN 'Management and Governance'
    WHEN 'AWSCloudTrail' THEN 'Management and Governance'
    WHEN 'AWSConfig' THEN 'Management and Governance'
    WHEN 'AWSCostExplorer' THEN 'Management and Governance'
    WHEN 'AWSSupportBusiness' THEN 'Management and Governance'
    WHEN 'AWSSupportEnterprise' THEN 'Management and Governance'
    WHEN 'AWSMigrationHubRefactorSpaces' THEN 'Migration'
    WHEN 'AWSMigrationHub' THEN 'Migration'
    WHEN 'AWSDMS' THEN 'Migration'
    WHEN 'awskms' THEN 'Security'
    WHEN 'AWSSecretsManager' THEN 'Security'
    WHEN 'AmazonGuardDuty' THEN 'Security'
    WHEN 'AWSWAF' THEN 'Security'
    WHEN 'AWSShield' THEN 'Security'
    WHEN 'AWSSecurityHub' THEN 'Security'
    WHEN 'AmazonCognito' THEN 'Identity'
    WHEN 'AWSDirectoryService' THEN 'Identity'
    WHEN 'AmazonBedrock' THEN 'AI and Machine Learning'
    WHEN 'AmazonSageMaker' THEN 'AI and Machine Learning'
    WHEN 'AmazonRekognition' THEN 'AI and Machine Learning'
    WHEN 'AmazonTextract' THEN 'AI and Machine Learning'
    WHEN 'AmazonComprehend' THEN 'AI and Machine Learning'
    WHEN 'AWSIoT' THEN 'Internet of Things'
    WHEN 'AWSCloudShell' THEN 'Developer Tools'
    WHEN 'AWSCodeBuild' THEN 'Developer Tools'
    WHEN 'AWSCodePipeline' THEN 'Developer Tools'
    WHEN 'AWSCodeCommit' THEN 'Developer Tools'
    ELSE 'Other'
  END AS ServiceCategory,
  coalesce(product_product_name, product_servicename, line_item_product_code) AS ServiceName,
  'AWS' AS ServiceProviderName,
  CASE line_item_product_code
    WHEN 'AmazonEC2' THEN 'Virtual Machines'
    WHEN 'AWSLambda' THEN 'Serverless Compute'
    WHEN 'AmazonECS' THEN 'Containers'
    WHEN 'AmazonEKS' THEN 'Containers'
    WHEN 'AWSBatch' THEN 'Other (Compute)'
    WHEN 'ComputeSavingsPlans' THEN 'Other (Compute)'
    WHEN 'AmazonLightsail' THEN 'Virtual Machines'
    WHEN 'AmazonS3' THEN 'Object Storage'
    WHEN 'AmazonGlacier' THEN 'Object Storage'
    WHEN 'AmazonEFS' THEN 'File Storage'
    WHEN 'AmazonFSx' THEN 'File Storage'
    WHEN 'AWSBackup' THEN 'Backup Storage'
    WHEN 'AWSStorageGateway' THEN 'Storage Platforms'
    WHEN 'AmazonRDS' THEN 'Relational Databases'
    WHEN 'AmazonDynamoDB' THEN 'NoSQL Databases'
    WHEN 'AmazonDocDB' THEN 'NoSQL Databases'
    WHEN 'AmazonNeptune' THEN 'NoSQL Databases'
    WHEN 'AmazonElastiCache' THEN 'Caching'
    WHEN 'AmazonRedshift' THEN 'Data Warehouses'
    WHEN 'AmazonTimestream' THEN 'Time Series Databases'
    WHEN 'AmazonCloudFront' THEN 'Content Delivery'
    WHEN 'AmazonVPC' THEN 'Network Connectivity'
    WHEN 'AWSDataTransfer' THEN 'Network Connectivity'
    WHEN 'AWSDirectConnect' THEN 'Network Connectivity'
    WHEN 'AmazonRoute53' THEN 'Network Routing'
    WHEN 'AWSELB' THEN 'Application Networking'
    WHEN 'AmazonApiGateway' THEN 'API Management'
    WHEN 'AWSGlue' THEN 'Data Processing'
    WHEN 'ElasticMapReduce' THEN 'Data Processing'
    WHEN 'AmazonAthena' THEN 'Analytics Platforms'
    WHEN 'AmazonKinesis' THEN 'Streaming Analytics'
    WHEN 'AmazonKinesisFirehose' THEN 'Streaming Analytics'
    WHEN 'AmazonES' THEN 'Search'
    WHEN 'AmazonQuickSight' THEN 'Business Intelligence'
    WHEN 'AWSQueueService' THEN 'Messaging'
    WHEN 'AmazonSNS' THEN 'Messaging'
    WHEN 'AmazonMQ' THEN 'Messaging'
    WHEN 'AmazonEventBridge' THEN 'Messaging'
    WHEN 'AmazonStates' THEN 'Workflow Orchestration'
    WHEN 'AmazonCloudWatch' THEN 'Observability'
    WHEN 'AWSCloudTrail' THEN 'Observability'
    WHEN 'AWSConfig' THEN 'Compliance'
    WHEN 'AWSCostExplorer' THEN 'Cost Management'
    WHEN 'AWSSupportBusiness' THEN 'Support'
    WHEN 'AWSSupportEnterprise' THEN 'Support'
    WHEN 'AWSMigrationHubRefactorSpaces' THEN 'Resource Migration'
    WHEN 'AWSMigrationHub' THEN 'Resource Migration'
    WHEN 'AWSDMS' THEN 'Data Migration'
    WHEN 'AWSSecretsManager' THEN 'Secret Management'
    WHEN 'awskms' THEN 'Secret Management'
    WHEN 'AmazonGuardDuty' THEN 'Threat Detection and Response'
    WHEN 'AWSSecurityHub' THEN 'Threat Detection and Response'
    WHEN 'AWSWAF' THEN 'Network Security'
    WHEN 'AWSShield' THEN 'Network Security'
    WHEN 'AmazonCognito' THEN 'Identity and Access Management'
    WHEN 'AWSDirectoryService' THEN 'Identity and Access Management'
    WHEN 'AmazonBedrock' THEN 'Generative AI'
    WHEN 'AmazonSageMaker' THEN 'Machine Learning'
    WHEN 'AmazonRekognition' THEN 'Natural Language Processing'
    WHEN 'AmazonTextract' THEN 'Natural Language Processing'
    WHEN 'AmazonComprehend' THEN 'Natural Language Processing'
    WHEN 'AWSIoT' THEN 'IoT Platforms'
    WHEN 'AWSCloudShell' THEN 'Development Environments'
    WHEN 'AWSCodeBuild' THEN 'Continuous Integration and Deployment'
    WHEN 'AWSCodePipeline' THEN 'Continuous Integration and Deployment'
    WHEN 'AWSCodeCommit' THEN 'Source Code Management'
    ELSE 'Other (Other)'
  END AS ServiceSubcategory,
  product_sku AS SkuId,
  CASE WHEN product_sku IS NOT NULL THEN product_usagetype END AS SkuMeter,
  -- RateCode (<sku>.<offer term>.<rate>) names one price of one SKU; RateId alone is shared across SKUs.
  CASE WHEN product_sku IS NOT NULL THEN coalesce(pricing_rate_code, pricing_rate_id) END AS SkuPriceId,
  line_item_usage_account_id AS SubAccountId,
  CASE WHEN line_item_usage_account_id IS NOT NULL
    THEN coalesce(line_item_usage_account_name, line_item_usage_account_id) END AS SubAccountName,
  CASE WHEN line_item_usage_account_id IS NOT NULL THEN 'Linked Account' END AS SubAccountType,
  tags AS Tags,
  bill_invoicing_entity AS x_InvoicingEntity,
  line_item_line_item_type AS x_SourceChargeType,
  line_item_usage_type AS x_UsageType,
  line_item_operation AS x_Operation,
  -- AI services billed by tokens: model and token kind live only in the usage type
  -- (USE1-Claude4.6Sonnet-input-tokens); the patterns are data in schemas/ai_token_meters.psv.
  CASE WHEN row_kind = 'charge' AND category = 'Usage' THEN tally_ai_model('aws', line_item_usage_type) END AS x_AiModel,
  CASE WHEN row_kind = 'charge' AND category = 'Usage' THEN ai_token_class END AS x_AiTokenClass,
  CASE WHEN row_kind = 'charge' AND category = 'Usage' AND ai_token_class IS NOT NULL THEN line_item_usage_amount END
    AS x_AiTokenCount,
  CASE WHEN row_kind = 'charge' AND category = 'Usage' THEN tally_ai_tier('aws', line_item_usage_type) END
    AS x_AiServiceTier
FROM shaped
