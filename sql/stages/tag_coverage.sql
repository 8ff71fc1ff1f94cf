-- Tag coverage: per billing period and currency, how the EffectiveCost was allocated — by the
-- charges' own allocation tag (the tag the `tag` rule names, or an alias), by a tag inherited from
-- the sub-account, by a shared-cost rule, or not at all — and TagCoverage = tagged / total as a decimal ratio (truncated at the 18th
-- place; NULL when the total is 0). The amounts are exact and add up to the total.
--
-- @stage: tag_coverage
-- @reads: allocated_costs
-- @writes: tag_coverage

SELECT
  BillingPeriodStart,
  BillingCurrency,
  sum(AllocatedEffectiveCost) AS TotalEffectiveCost,
  sum(CASE WHEN Method = 'tag' THEN AllocatedEffectiveCost ELSE CAST(0 AS DECIMAL(38, 18)) END)
    AS TaggedEffectiveCost,
  sum(CASE WHEN Method = 'inherited' THEN AllocatedEffectiveCost ELSE CAST(0 AS DECIMAL(38, 18)) END)
    AS InheritedEffectiveCost,
  sum(CASE WHEN Method NOT IN ('tag', 'inherited', 'unallocated') THEN AllocatedEffectiveCost ELSE CAST(0 AS DECIMAL(38, 18)) END)
    AS SharedEffectiveCost,
  sum(CASE WHEN Method = 'unallocated' THEN AllocatedEffectiveCost ELSE CAST(0 AS DECIMAL(38, 18)) END)
    AS UnallocatedEffectiveCost,
  tally_share(
    sum(CASE WHEN Method = 'tag' THEN AllocatedEffectiveCost ELSE CAST(0 AS DECIMAL(38, 18)) END),
    CAST(1 AS DECIMAL(38, 18)),
    sum(AllocatedEffectiveCost)
  ) AS TagCoverage
FROM allocated_costs
GROUP BY 1, 2
ORDER BY 1, 2
