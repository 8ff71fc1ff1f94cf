-- Chargeback lines: per cost center and billing period, the allocated cost by service category,
-- service and sub-account, billed beside effective, and the amount charged on the cost center's
-- basis (chargeback_basis input: effective, the default, or billed). People get it as CSV too
-- (<output>/exports/chargeback_lines.csv).
--
-- @stage: chargeback_lines
-- @reads: allocated_costs
-- @optional_inputs: chargeback_basis
-- @writes: chargeback_lines
-- @csv: true

SELECT
  a.Target AS CostCenter,
  a.BillingPeriodStart,
  a.BillingCurrency,
  coalesce(a.ServiceCategory, 'Other') AS ServiceCategory,
  a.ServiceName,
  a.SubAccountId,
  sum(a.AllocatedBilledCost) AS BilledCost,
  sum(a.AllocatedEffectiveCost) AS EffectiveCost,
  coalesce(min(b.Basis), 'effective') AS Basis,
  CASE WHEN coalesce(min(b.Basis), 'effective') = 'billed'
    THEN sum(a.AllocatedBilledCost) ELSE sum(a.AllocatedEffectiveCost) END AS ChargedAmount,
  count(*) AS AllocatedRows
-- (the small table first: DataFusion holds it in memory and streams the allocations past it)
FROM chargeback_basis b
RIGHT JOIN allocated_costs a ON b.Target = a.Target
GROUP BY 1, 2, 3, 4, 5, 6
ORDER BY 1, 2, 3, 4, 5, 6
