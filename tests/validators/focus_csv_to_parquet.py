#!/usr/bin/env python3
"""Convert a FOCUS CSV (e.g. focus-data-toolkit's 1.2/1.3 output) to typed Parquet.

Run with the validators venv python (needs pyarrow). Types follow the FOCUS data model:
  Decimal   -> decimal128(38, SCALE)   (default scale 17, like focus-data-toolkit's main costs)
  Date/Time -> timestamp[us, tz=UTC]
  everything else (ids, names, JSON) -> string
Nothing is type-inferred, so numeric-looking ids (BillingAccountId, SubAccountId...) stay strings.
Empty cells become NULL.

  focus_csv_to_parquet.py IN.csv OUT.parquet [--scale 17] [--float]
"""
import argparse
import sys

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

DECIMAL_COLUMNS = {
    "BilledCost", "EffectiveCost", "ListCost", "ContractedCost",
    "ListUnitPrice", "ContractedUnitPrice",
    "PricingQuantity", "ConsumedQuantity", "CommitmentDiscountQuantity",
    "PricingCurrencyContractedUnitPrice", "PricingCurrencyEffectiveCost",
    "PricingCurrencyListUnitPrice",
    "ContractCommitmentCost", "ContractCommitmentQuantity",
    "ContractCommitmentDiscountPercentage", "ContractCommitmentPaymentUpfrontPercentage",
    "PricingCurrencyContractCommitmentCost", "PaymentCurrencyBilledCost",
}
DATETIME_COLUMNS = {
    "BillingPeriodStart", "BillingPeriodEnd", "ChargePeriodStart", "ChargePeriodEnd",
    "ContractPeriodStart", "ContractPeriodEnd",
    "ContractCommitmentPeriodStart", "ContractCommitmentPeriodEnd",
    "InvoiceIssueDate", "PaymentDueDate",
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--scale", type=int, default=17, help="decimal scale (precision is 38)")
    ap.add_argument("--float", action="store_true", help="write Decimal columns as float64 instead")
    a = ap.parse_args()

    with open(a.src, newline="", encoding="utf-8") as f:
        header = f.readline().rstrip("\r\n").lstrip("\ufeff").split(",")
    # Read every column as a string first: no inference at all.
    raw = pacsv.read_csv(
        a.src,
        convert_options=pacsv.ConvertOptions(
            column_types={c: pa.string() for c in header},
            strings_can_be_null=True,
            null_values=[""],
        ),
    )
    dec = pa.float64() if a.float else pa.decimal128(38, a.scale)
    ts = pa.timestamp("us", tz="UTC")
    cols, fields = [], []
    for name in raw.column_names:
        col = raw.column(name)
        if name in DECIMAL_COLUMNS:
            # string -> decimal cast is exact; values with more fractional digits than
            # the scale would raise rather than silently round.
            col = pc.cast(col, dec)
        elif name in DATETIME_COLUMNS:
            col = pc.cast(col, ts)
        cols.append(col)
        fields.append(pa.field(name, col.type))
    table = pa.Table.from_arrays(cols, schema=pa.schema(fields))
    pq.write_table(table, a.dst)
    print(f"{a.dst}: {table.num_rows} rows, {table.num_columns} columns", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
