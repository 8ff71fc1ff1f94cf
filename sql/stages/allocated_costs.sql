-- Cost allocation: every charge's EffectiveCost and BilledCost, assigned to cost centers (or
-- applications, teams: whatever the rules' targets are).
--
-- 1. Tag hygiene. The allocation key is the tag the `tag` rule names (e.g. CostCenter); a charge's
--    Tags are searched for it and for every spelling in tag_aliases (`cost-center`, `costcenter`),
--    keys compared trimmed and case-insensitively, the value trimmed. A charge without the key
--    inherits it from its resource group, else its sub-account (account_tags input, optional:
--    a scope is a SubAccountId, or an id that prefixes ResourceId such as an Azure
--    `/subscriptions/<id>/resourceGroups/<name>`, compared case-insensitively as plain text; the
--    longest matching prefix wins, then the smaller value); the charge's own tag always wins.
-- 2. Shared costs. A charge whose MatchColumn equals a shared rule's MatchValue (support, a shared
--    cluster, commitment purchases, untagged AI platform spend) is split over that rule's targets:
--      even          equal shares
--      proportional  in proportion to each target's own tagged (or inherited) EffectiveCost in the same
--                    billing period and currency
--      fixed         by Percent; a rule whose percentages do not add up to 100 allocates nothing
--                    (its charges stay unallocated, with the rule named)
--      metric        in proportion to the target's usage_metrics Value for the rule's Metric on the
--                    charge's day (e.g. tokens per application per day)
-- 3. Everything else goes to its tag value, or to the explicit target 'unallocated'.
--
-- No row combines charges of two billing periods (proportional weights are per period, metric
-- weights per day), and rows are ordered by period first: a long history runs one period at a
-- time (@by_period).
--
-- Money is conserved to the last digit: each share is amount × weight / Σ weights truncated at
-- the 18th decimal place (tally_share), and what truncation leaves over (under 1e-18 per target)
-- goes to the first target by name (then by weight and method), so the shares of a charge add
-- up to the charge exactly.
-- Σ AllocatedEffectiveCost = Σ EffectiveCost for every billing period and currency (tested).
--
-- @stage: allocated_costs
-- @reads: cost_and_usage
-- @inputs: allocation_rules, tag_aliases
-- @optional_inputs: usage_metrics, account_tags
-- @writes: allocated_costs
-- @by_period: true

WITH
tag_rule AS (
  SELECT min(MatchValue) AS tag_key FROM allocation_rules WHERE Method = 'tag'
),
tag_names AS (
  SELECT t.tag_key || coalesce('|' || string_agg(a.Alias, '|' ORDER BY a.Alias), '') AS names
  FROM tag_rule t LEFT JOIN tag_aliases a ON lower(trim(a.Key)) = lower(trim(t.tag_key))
  GROUP BY t.tag_key
),
key_spellings AS (
  SELECT lower(trim(tag_key)) AS k FROM tag_rule
  UNION
  SELECT lower(trim(a.Alias)) FROM tag_aliases a JOIN tag_rule t ON lower(trim(a.Key)) = lower(trim(t.tag_key))
),
inherited AS (
  SELECT SubAccountId AS scope, min(trim(Value)) AS value
  FROM account_tags
  WHERE lower(trim(Key)) IN (SELECT k FROM key_spellings) AND trim(Value) <> ''
  GROUP BY 1
),
-- The most specific scope that prefixes a ResourceId (a resource group; compared as plain text,
-- case-insensitively: `_` and `%` in a group's name are not wildcards), per resource: it
-- depends on the ResourceId alone, and resources are far fewer than charges. Two scopes that
-- differ only in case are equally specific: the smaller value wins, whatever order they come in.
by_resource AS (
  SELECT r.ResourceId, first_value(i.value ORDER BY length(lower(i.scope)) DESC, i.value) AS value
  FROM (SELECT DISTINCT ResourceId FROM cost_and_usage WHERE ResourceId IS NOT NULL) r
  JOIN inherited i ON starts_with(lower(r.ResourceId), lower(i.scope) || '/')
  GROUP BY 1
),
costs AS (
  SELECT
    c.x_SourceFile, c.x_SourceRow, c.x_SourceProvider, c.BillingAccountId, c.x_BillingPeriod,
    c.BillingPeriodStart, c.BillingCurrency, c.ChargePeriodStart, c.ChargeCategory,
    c.ServiceCategory, c.ServiceSubcategory, c.ServiceName, c.SubAccountId, c.ResourceId, c.x_AiModel,
    c.SubAccountName, c.ResourceType, c.RegionId, c.SkuId, c.ServiceProviderName, c.ChargeDescription,
    c.CommitmentDiscountId, c.x_AiTokenClass,
    c.EffectiveCost, c.BilledCost,
    -- The charge within its source row: an AWS commitment fee with unused capacity is two
    -- charges of one source row (the fee, and its 'Unused' part), allocated separately.
    c.x_SourceRow * 2 + CASE WHEN c.CommitmentDiscountStatus = 'Unused' THEN 1 ELSE 0 END AS charge_key,
    tally_tag(c.Tags, n.names) AS own_tag,
    coalesce(r.value, i.value) AS inherited_tag
  FROM cost_and_usage c CROSS JOIN tag_names n
  LEFT JOIN by_resource r ON r.ResourceId = c.ResourceId
  LEFT JOIN inherited i ON i.scope = c.SubAccountId
),
shared_rules AS (
  SELECT DISTINCT Rule, Method, MatchColumn, MatchValue FROM allocation_rules WHERE Method <> 'tag'
),
-- Each charge's shared rule, if one matches: the first by name.
matched AS (
  SELECT c.x_SourceFile, c.charge_key, min(r.Rule) AS rule
  FROM costs c
  JOIN shared_rules r ON r.MatchValue = CASE r.MatchColumn
      WHEN 'ServiceName' THEN c.ServiceName
      WHEN 'ServiceCategory' THEN c.ServiceCategory
      WHEN 'ServiceSubcategory' THEN c.ServiceSubcategory
      WHEN 'SubAccountId' THEN c.SubAccountId
      WHEN 'ChargeCategory' THEN c.ChargeCategory
      WHEN 'ResourceId' THEN c.ResourceId
      WHEN 'x_AiModel' THEN c.x_AiModel
      WHEN 'SubAccountName' THEN c.SubAccountName
      WHEN 'BillingAccountId' THEN c.BillingAccountId
      WHEN 'ResourceType' THEN c.ResourceType
      WHEN 'RegionId' THEN c.RegionId
      WHEN 'SkuId' THEN c.SkuId
      WHEN 'ServiceProviderName' THEN c.ServiceProviderName
      WHEN 'ChargeDescription' THEN c.ChargeDescription
      WHEN 'CommitmentDiscountId' THEN c.CommitmentDiscountId
      WHEN 'x_AiTokenClass' THEN c.x_AiTokenClass
      WHEN 'x_SourceProvider' THEN c.x_SourceProvider
    END
  GROUP BY 1, 2
),
-- (Joins to the charges are written with the small side first, `small RIGHT JOIN charges`: the
-- first side of a join is the one held in memory, the charges stream past it.)
classified AS (
  SELECT c.*, m.rule
  FROM matched m RIGHT JOIN costs c ON m.x_SourceFile = c.x_SourceFile AND m.charge_key = c.charge_key
),
direct AS (
  SELECT
    x_SourceFile, x_SourceRow, x_SourceProvider, BillingAccountId, x_BillingPeriod, BillingPeriodStart,
    BillingCurrency, ChargePeriodStart, ServiceCategory, ServiceName, SubAccountId,
    coalesce(own_tag, inherited_tag, 'unallocated') AS Target,
    CASE WHEN own_tag IS NOT NULL THEN 'tag' WHEN inherited_tag IS NOT NULL THEN 'inherited'
      ELSE 'unallocated' END AS Method,
    CAST(NULL AS VARCHAR) AS Rule,
    EffectiveCost AS AllocatedEffectiveCost,
    BilledCost AS AllocatedBilledCost
  FROM classified
  WHERE rule IS NULL
),
own_cost AS (
  SELECT BillingPeriodStart, BillingCurrency, Target, sum(AllocatedEffectiveCost) AS own
  FROM direct WHERE Method IN ('tag', 'inherited')
  GROUP BY 1, 2, 3
),
fixed_ok AS (
  SELECT Rule FROM allocation_rules WHERE Method = 'fixed' GROUP BY Rule
  HAVING sum(coalesce(Percent, CAST(0 AS DECIMAL(38, 18)))) = CAST(100 AS DECIMAL(38, 18))
),
metric_day AS (
  SELECT date_trunc('day', Date) AS day, Target, Metric, sum(Value) AS value
  FROM usage_metrics GROUP BY 1, 2, 3
),
-- Each target of a shared charge's rule, then what its weight depends on, one join at a time
-- with the small side first: a `charges LEFT JOIN small` would hold every shared charge in
-- memory instead.
targets AS (
  SELECT c.x_SourceFile, c.charge_key, c.ChargePeriodStart, c.BillingPeriodStart, c.BillingCurrency,
    r.Rule, r.Method, r.Target, r.Percent, r.Metric
  FROM allocation_rules r
  JOIN classified c ON r.Rule = c.rule AND r.Target IS NOT NULL
),
fixed_targets AS (
  SELECT t.*, f.Rule IS NOT NULL AS adds_up
  FROM fixed_ok f RIGHT JOIN targets t ON f.Rule = t.Rule
),
own_targets AS (
  SELECT t.*, o.own
  FROM own_cost o
  RIGHT JOIN fixed_targets t ON t.Method = 'proportional' AND o.Target = t.Target
    AND o.BillingPeriodStart = t.BillingPeriodStart AND o.BillingCurrency = t.BillingCurrency
),
weights AS (
  SELECT t.x_SourceFile, t.charge_key, t.Rule, t.Method, t.Target,
    CASE t.Method
      WHEN 'even' THEN CAST(1 AS DECIMAL(38, 18))
      WHEN 'fixed' THEN CASE WHEN t.adds_up THEN t.Percent END
      WHEN 'proportional' THEN t.own
      WHEN 'metric' THEN md.value
    END AS weight
  FROM metric_day md
  RIGHT JOIN own_targets t ON t.Method = 'metric' AND md.Target = t.Target AND md.Metric = t.Metric
    AND md.day = date_trunc('day', t.ChargePeriodStart)
),
positive AS (
  SELECT * FROM weights WHERE weight > CAST(0 AS DECIMAL(38, 18))
),
totals AS (
  SELECT x_SourceFile, charge_key, sum(weight) AS total FROM positive GROUP BY 1, 2
),
shares AS (
  SELECT
    c.x_SourceFile, c.x_SourceRow, c.x_SourceProvider, c.BillingAccountId, c.x_BillingPeriod,
    c.BillingPeriodStart, c.BillingCurrency, c.ChargePeriodStart, c.ServiceCategory, c.ServiceName,
    c.SubAccountId, p.Target, p.Method, p.Rule, c.EffectiveCost, c.BilledCost, c.charge_key, p.weight,
    tally_share(c.EffectiveCost, p.weight, t.total) AS eff,
    tally_share(c.BilledCost, p.weight, t.total) AS billed
  FROM totals t
  JOIN positive p ON t.x_SourceFile = p.x_SourceFile AND t.charge_key = p.charge_key
  JOIN classified c ON c.x_SourceFile = p.x_SourceFile AND c.charge_key = p.charge_key
),
-- What truncating the shares leaves over goes to the first target by name (then by weight and
-- method: a target a rule names twice), the last of a charge's rows in this order, once the
-- shares before it are summed. (These windows hold one charge's rows at a time; a sum over a
-- whole partition would hold every shared charge in memory, outside the stage's memory pool.)
running AS (
  SELECT *,
    sum(eff) OVER (
      PARTITION BY x_SourceFile, charge_key ORDER BY Target DESC, weight DESC, Method DESC
      ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS eff_so_far,
    sum(billed) OVER (
      PARTITION BY x_SourceFile, charge_key ORDER BY Target DESC, weight DESC, Method DESC
      ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS billed_so_far,
    lead(1, 1, 0) OVER (
      PARTITION BY x_SourceFile, charge_key ORDER BY Target DESC, weight DESC, Method DESC) AS more
  FROM shares
),
split AS (
  SELECT
    x_SourceFile, x_SourceRow, x_SourceProvider, BillingAccountId, x_BillingPeriod, BillingPeriodStart,
    BillingCurrency, ChargePeriodStart, ServiceCategory, ServiceName, SubAccountId, Target, Method, Rule,
    eff + CASE WHEN more = 0 THEN EffectiveCost - eff_so_far
      ELSE CAST(0 AS DECIMAL(38, 18)) END AS AllocatedEffectiveCost,
    billed + CASE WHEN more = 0 THEN BilledCost - billed_so_far
      ELSE CAST(0 AS DECIMAL(38, 18)) END AS AllocatedBilledCost
  FROM running
),
-- A shared charge no target could take (no positive weight: no usage that day, no own cost,
-- percentages not adding up to 100) stays visible as unallocated, with its rule named.
stranded AS (
  SELECT
    c.x_SourceFile, c.x_SourceRow, c.x_SourceProvider, c.BillingAccountId, c.x_BillingPeriod,
    c.BillingPeriodStart, c.BillingCurrency, c.ChargePeriodStart, c.ServiceCategory, c.ServiceName,
    c.SubAccountId, 'unallocated' AS Target, 'unallocated' AS Method, c.rule AS Rule,
    c.EffectiveCost AS AllocatedEffectiveCost, c.BilledCost AS AllocatedBilledCost
  FROM totals t
  RIGHT JOIN classified c ON t.x_SourceFile = c.x_SourceFile AND t.charge_key = c.charge_key
  WHERE c.rule IS NOT NULL AND t.x_SourceFile IS NULL
)
SELECT * FROM direct
UNION ALL SELECT * FROM split
UNION ALL SELECT * FROM stranded
-- Every column that can tell two rows apart: a commitment fee's source row can be two charges
-- (the fee and its unused part), with the same lineage and target.
ORDER BY x_BillingPeriod, x_SourceFile, x_SourceRow, Target, Method, Rule,
  AllocatedEffectiveCost, AllocatedBilledCost
