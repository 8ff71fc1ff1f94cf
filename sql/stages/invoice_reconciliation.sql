-- Invoice reconciliation: Σ BilledCost per invoice key, compared with the invoices a job names:
-- a CSV of invoice totals (`invoices`), a FOCUS 1.4 InvoiceDetail dataset (`invoice_detail`, its
-- lines' BilledCost summed per key), or both (their amounts add up per key).
--
-- Key: InvoiceId, InvoiceIssuerName, BillingAccountId, BillingPeriodStart, BillingPeriodEnd,
-- BillingCurrency. Every key on either side gets one row: what the invoice says (expected), what
-- the billing data adds up to (actual, Σ BilledCost of its rows, exact), the difference
-- (actual − expected) and a status:
--   match                    both sides, equal to the last digit
--   mismatch                 both sides, different
--   missing in billing data  on an invoice, but no billing row carries that key
--   missing on invoice       billing rows carry an InvoiceId no invoice row has
-- Billing rows without an InvoiceId (not invoiced yet) are left out. Ordered by the key, so the
-- table is the same bytes for the same inputs.
--
-- @stage: invoice_reconciliation
-- @reads: cost_and_usage
-- @any_inputs: invoices, invoice_detail
-- @writes: invoice_reconciliation

WITH billed AS (
  SELECT
    InvoiceId, InvoiceIssuerName, BillingAccountId, BillingPeriodStart, BillingPeriodEnd,
    BillingCurrency,
    sum(BilledCost) AS actual,
    count(*) AS billing_rows
  FROM cost_and_usage
  WHERE InvoiceId IS NOT NULL
  GROUP BY 1, 2, 3, 4, 5, 6
),
invoiced AS (
  SELECT
    InvoiceId, InvoiceIssuerName, BillingAccountId, BillingPeriodStart, BillingPeriodEnd,
    BillingCurrency,
    sum(amount) AS expected
  FROM (
    SELECT InvoiceId, InvoiceIssuerName, BillingAccountId, BillingPeriodStart, BillingPeriodEnd,
      BillingCurrency, InvoiceTotal AS amount
    FROM invoices
    UNION ALL
    SELECT InvoiceId, InvoiceIssuerName, BillingAccountId, BillingPeriodStart, BillingPeriodEnd,
      BillingCurrency, BilledCost AS amount
    FROM invoice_detail
  ) AS lines
  GROUP BY 1, 2, 3, 4, 5, 6
)
SELECT
  coalesce(i.InvoiceId, b.InvoiceId) AS InvoiceId,
  coalesce(i.InvoiceIssuerName, b.InvoiceIssuerName) AS InvoiceIssuerName,
  coalesce(i.BillingAccountId, b.BillingAccountId) AS BillingAccountId,
  coalesce(i.BillingPeriodStart, b.BillingPeriodStart) AS BillingPeriodStart,
  coalesce(i.BillingPeriodEnd, b.BillingPeriodEnd) AS BillingPeriodEnd,
  coalesce(i.BillingCurrency, b.BillingCurrency) AS BillingCurrency,
  i.expected AS ExpectedTotal,
  b.actual AS ActualTotal,
  coalesce(b.actual, CAST(0 AS DECIMAL(38, 18))) - coalesce(i.expected, CAST(0 AS DECIMAL(38, 18)))
    AS Difference,
  coalesce(b.billing_rows, 0) AS BillingRows,
  CASE
    WHEN b.InvoiceId IS NULL THEN 'missing in billing data'
    WHEN i.InvoiceId IS NULL THEN 'missing on invoice'
    WHEN b.actual = i.expected THEN 'match'
    ELSE 'mismatch'
  END AS Status
FROM invoiced i
FULL OUTER JOIN billed b
  ON i.InvoiceId = b.InvoiceId
  AND i.InvoiceIssuerName = b.InvoiceIssuerName
  AND i.BillingAccountId = b.BillingAccountId
  AND i.BillingPeriodStart = b.BillingPeriodStart
  AND i.BillingPeriodEnd = b.BillingPeriodEnd
  AND i.BillingCurrency = b.BillingCurrency
ORDER BY 1, 2, 3, 4, 5, 6
