-- Unit economics: allocated cost per unit of what a target delivers, per billing period.
--
-- Business metrics come from the usage_metrics input (Date, Target, Metric, Value: orders,
-- requests, active users, tokens served, revenue). For each target, period and metric other than
-- 'revenue': Cost (the target's allocated EffectiveCost), Units (Σ Value), CostPerUnit and
-- CostPer1KUnits; Revenue and ReturnOnSpend (revenue / cost) where a 'revenue' metric is given.
-- For AI, from the billing data itself: per target and model, the tokens its allocated share of
-- each token charge carries (tokens × allocated / charge cost), their cost and CostPer1KUnits.
-- Divisions are exact decimals truncated at the 18th place (tally_share); NULL when dividing by 0.
--
-- @stage: unit_costs
-- @reads: allocated_costs, cost_and_usage
-- @inputs: usage_metrics
-- @writes: unit_costs

WITH cost AS (
  SELECT Target, BillingPeriodStart, BillingCurrency, sum(AllocatedEffectiveCost) AS cost
  FROM allocated_costs GROUP BY 1, 2, 3
),
units AS (
  SELECT Target, date_trunc('month', Date) AS period, Metric, sum(Value) AS units
  FROM usage_metrics GROUP BY 1, 2, 3
),
business AS (
  SELECT
    c.Target, c.BillingPeriodStart, c.BillingCurrency, u.Metric, CAST(NULL AS VARCHAR) AS Model,
    c.cost AS Cost, u.units AS Units,
    tally_share(c.cost, CAST(1 AS DECIMAL(38, 18)), u.units) AS CostPerUnit,
    tally_share(c.cost, CAST(1000 AS DECIMAL(38, 18)), u.units) AS CostPer1KUnits,
    r.units AS Revenue,
    tally_share(r.units, CAST(1 AS DECIMAL(38, 18)), c.cost) AS ReturnOnSpend
  FROM cost c
  JOIN units u ON u.Target = c.Target AND u.period = c.BillingPeriodStart AND u.Metric <> 'revenue'
  LEFT JOIN units r ON r.Target = c.Target AND r.period = c.BillingPeriodStart AND r.Metric = 'revenue'
),
ai AS (
  SELECT
    a.Target, a.BillingPeriodStart, a.BillingCurrency, 'tokens' AS Metric, u.x_AiModel AS Model,
    sum(a.AllocatedEffectiveCost) AS Cost,
    sum(tally_share(u.x_AiTokenCount, a.AllocatedEffectiveCost, u.EffectiveCost)) AS Units
  -- (the token charges first: DataFusion holds them in memory and streams the allocations past)
  FROM cost_and_usage u
  JOIN allocated_costs a ON u.x_SourceFile = a.x_SourceFile AND u.x_SourceRow = a.x_SourceRow
  WHERE u.x_AiTokenCount IS NOT NULL AND u.x_AiModel IS NOT NULL AND u.EffectiveCost <> CAST(0 AS DECIMAL(38, 18))
  GROUP BY 1, 2, 3, 4, 5
)
SELECT * FROM business
UNION ALL
SELECT Target, BillingPeriodStart, BillingCurrency, Metric, Model, Cost, Units,
  tally_share(Cost, CAST(1 AS DECIMAL(38, 18)), Units),
  tally_share(Cost, CAST(1000 AS DECIMAL(38, 18)), Units),
  CAST(NULL AS DECIMAL(38, 18)), CAST(NULL AS DECIMAL(38, 18))
FROM ai
ORDER BY 1, 2, 3, 4, 5
