-- Dataset rule: commitment discounts balance (FOCUS 1.4 EffectiveCost, "covering vs covered").
--
-- For every CommitmentDiscountId whose purchase and usage are both in the dataset,
--   Σ EffectiveCost of its Usage rows (Used + Unused) = Σ BilledCost of its Purchase rows,
-- per billing period and currency. Returns one row per commitment that does NOT balance
-- (an empty result means the rule holds). Needs: ChargeCategory, CommitmentDiscountId,
-- BilledCost, EffectiveCost, BillingPeriodStart.
--
-- @rule: commitment-balance
-- @needs: ChargeCategory, CommitmentDiscountId, BilledCost, EffectiveCost, BillingPeriodStart

WITH used AS (
  SELECT CommitmentDiscountId, BillingPeriodStart, sum(EffectiveCost) AS effective_cost
  FROM cost_and_usage
  WHERE ChargeCategory = 'Usage' AND CommitmentDiscountId IS NOT NULL
  GROUP BY CommitmentDiscountId, BillingPeriodStart
),
bought AS (
  SELECT CommitmentDiscountId, BillingPeriodStart, sum(BilledCost) AS billed_cost
  FROM cost_and_usage
  WHERE ChargeCategory = 'Purchase' AND CommitmentDiscountId IS NOT NULL
  GROUP BY CommitmentDiscountId, BillingPeriodStart
)
SELECT
  used.CommitmentDiscountId,
  used.BillingPeriodStart,
  used.effective_cost AS usage_effective_cost,
  bought.billed_cost AS purchase_billed_cost
FROM used
JOIN bought
  ON used.CommitmentDiscountId = bought.CommitmentDiscountId
 AND used.BillingPeriodStart = bought.BillingPeriodStart
WHERE used.effective_cost <> bought.billed_cost
ORDER BY used.CommitmentDiscountId, used.BillingPeriodStart
