-- FOCUS-native exports (FOCUS 1.0, 1.1, 1.2, 1.3 and 1.4) → FOCUS 1.4 CostAndUsage.
--
-- AWS, Azure, GCP and OCI all publish FOCUS exports. This mapping upgrades any of those versions
-- to 1.4; columns a version lacks arrive as NULL (the reader adds them), and:
--   * ServiceProviderName (1.3) ← ProviderName (1.0–1.2): both are defined as "the entity that made
--     the resources or services available for purchase"; HostProviderName (1.3) ← ProviderName
--     too (the 1.2 data does not say who hosts a service; the seller is the best-founded guess);
--     InvoiceIssuerName keeps its value, else ProviderName. ProviderName and PublisherName were
--     removed in 1.4 and are not written (the 1.2 projection derives them back).
--   * PricingCurrency (1.2) ← BillingCurrency when absent, and PricingCurrencyEffectiveCost ←
--     EffectiveCost when both currencies are the same (pricing in the billing currency).
--   * ServiceSubcategory (1.1) ← 'Other (<ServiceCategory>)' when absent.
--   * BillingAccountType and SubAccountType (1.2), which FOCUS requires beside their ids, are
--     'Billing Account' and 'Sub Account' when a 1.0/1.1 export cannot say more.
--   * SkuMeter (1.1) ← Microsoft's x_SkuMeterName, else the ChargeDescription, beside a SkuId.
--   * InvoiceId (1.1) ← x_InvoiceId when absent: Microsoft's Cost Management FOCUS 1.0 export
--     carries the invoice id there. Providers' own custom columns (Microsoft's x_*, OCI's oci_*)
--     are not written; the manifest lists them per file.
-- The literal NULL (as in the FinOps Foundation's FOCUS 1.0 sample) reads as NULL; datetimes
-- with or without 'T'/'Z' are read as UTC. Columns outside FOCUS (such as that sample's `Id`)
-- are not written; the manifest lists them per file.
--
-- @format: focus
-- @provider: focus
-- @layout: plain
-- @detect: BilledCost, BillingPeriodStart, ChargePeriodStart, ChargeCategory
-- @null_values: NULL
-- @text: AllocatedMethodDetails, AllocatedMethodId, AllocatedResourceId, AllocatedResourceName, AllocatedTags
-- @text: AvailabilityZone, BillingAccountId, BillingAccountName, BillingAccountType, BillingCurrency
-- @text: CapacityReservationId, CapacityReservationStatus, ChargeCategory, ChargeClass, ChargeDescription
-- @text: ChargeFrequency, CommitmentDiscountCategory, CommitmentDiscountId, CommitmentDiscountName, CommitmentDiscountStatus
-- @text: CommitmentDiscountType, CommitmentDiscountUnit, CommitmentProgramEligibilityDetails, ConsumedUnit
-- @text: ContractApplied, HostProviderName, InvoiceDetailId, InvoiceId, InvoiceIssuerName, PricingCategory
-- @text: PricingCurrency, PricingUnit, RegionId, RegionName, ResourceId, ResourceName, ResourceType, ServiceCategory
-- @text: ServiceName, ServiceProviderName, ServiceSubcategory, SkuId, SkuMeter, SkuPriceDetails, SkuPriceId
-- @text: SubAccountId, SubAccountName, SubAccountType, Tags, ProviderName, PublisherName
-- @text: x_InvoiceId, x_SkuMeterName
-- @decimal: BilledCost, CommitmentDiscountQuantity, ConsumedQuantity, ContractedCost, ContractedUnitPrice
-- @decimal: EffectiveCost, ListCost, ListUnitPrice, PricingCurrencyContractedUnitPrice, PricingCurrencyEffectiveCost
-- @decimal: PricingCurrencyListUnitPrice, PricingQuantity
-- @timestamp: BillingPeriodEnd, BillingPeriodStart, ChargePeriodEnd, ChargePeriodStart
-- @source_total: BilledCost
-- @source_currency: BillingCurrency
-- @source_period: BillingPeriodStart
-- @source_account: BillingAccountId

SELECT
  x_SourceRow,
  AllocatedMethodDetails,
  AllocatedMethodId,
  AllocatedResourceId,
  AllocatedResourceName,
  AllocatedTags,
  AvailabilityZone,
  BilledCost,
  BillingAccountId,
  BillingAccountName,
  coalesce(BillingAccountType, CASE WHEN BillingAccountId IS NOT NULL THEN 'Billing Account' END)
    AS BillingAccountType,
  BillingCurrency,
  BillingPeriodEnd,
  BillingPeriodStart,
  CapacityReservationId,
  CapacityReservationStatus,
  ChargeCategory,
  ChargeClass,
  ChargeDescription,
  ChargeFrequency,
  ChargePeriodEnd,
  ChargePeriodStart,
  CommitmentDiscountCategory,
  CommitmentDiscountId,
  CommitmentDiscountName,
  CommitmentDiscountQuantity,
  CommitmentDiscountStatus,
  CommitmentDiscountType,
  CommitmentDiscountUnit,
  CommitmentProgramEligibilityDetails,
  ConsumedQuantity,
  ConsumedUnit,
  ContractApplied,
  ContractedCost,
  ContractedUnitPrice,
  EffectiveCost,
  coalesce(HostProviderName, ProviderName) AS HostProviderName,
  InvoiceDetailId,
  coalesce(InvoiceId, x_InvoiceId) AS InvoiceId,
  coalesce(InvoiceIssuerName, ProviderName) AS InvoiceIssuerName,
  ListCost,
  ListUnitPrice,
  PricingCategory,
  coalesce(PricingCurrency, BillingCurrency) AS PricingCurrency,
  PricingCurrencyContractedUnitPrice,
  CASE WHEN PricingCurrency IS NULL OR PricingCurrency = BillingCurrency
    THEN coalesce(PricingCurrencyEffectiveCost, EffectiveCost) ELSE PricingCurrencyEffectiveCost END AS PricingCurrencyEffectiveCost,
  PricingCurrencyListUnitPrice,
  PricingQuantity,
  PricingUnit,
  RegionId,
  RegionName,
  ResourceId,
  ResourceName,
  ResourceType,
  ServiceCategory,
  ServiceName,
  coalesce(ServiceProviderName, ProviderName, PublisherName) AS ServiceProviderName,
  coalesce(ServiceSubcategory, 'Other (' || ServiceCategory || ')') AS ServiceSubcategory,
  SkuId,
  coalesce(SkuMeter, x_SkuMeterName, CASE WHEN SkuId IS NOT NULL THEN ChargeDescription END) AS SkuMeter,
  SkuPriceDetails,
  SkuPriceId,
  SubAccountId,
  SubAccountName,
  coalesce(SubAccountType, CASE WHEN SubAccountId IS NOT NULL THEN 'Sub Account' END) AS SubAccountType,
  Tags
FROM raw
