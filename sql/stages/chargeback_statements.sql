-- Chargeback statements: one per cost center, billing period and currency, totalling its lines:
-- billed and effective cost, the basis it is charged on, the amount charged, and how much of it
-- came from shared-cost rules rather than the cost center's own tagged charges. Also written as
-- CSV for people (<output>/exports/chargeback_statements.csv). The sum of ChargedAmount over all
-- statements (the 'unallocated' one included) equals the sum of the basis over all charges.
--
-- @stage: chargeback_statements
-- @reads: chargeback_lines, allocated_costs
-- @writes: chargeback_statements
-- @csv: true

WITH shared AS (
  SELECT Target, BillingPeriodStart, BillingCurrency,
    sum(CASE WHEN Method NOT IN ('tag', 'inherited', 'unallocated') THEN AllocatedEffectiveCost
      ELSE CAST(0 AS DECIMAL(38, 18)) END) AS shared_effective
  FROM allocated_costs GROUP BY 1, 2, 3
)
SELECT
  l.CostCenter,
  l.BillingPeriodStart,
  l.BillingCurrency,
  min(l.Basis) AS Basis,
  sum(l.BilledCost) AS BilledCost,
  sum(l.EffectiveCost) AS EffectiveCost,
  sum(l.ChargedAmount) AS ChargedAmount,
  min(s.shared_effective) AS SharedEffectiveCost,
  count(DISTINCT l.ServiceName) AS Services,
  sum(l.AllocatedRows) AS AllocatedRows
FROM chargeback_lines l
JOIN shared s ON s.Target = l.CostCenter AND s.BillingPeriodStart = l.BillingPeriodStart
  AND s.BillingCurrency = l.BillingCurrency
GROUP BY 1, 2, 3
ORDER BY 1, 2, 3
