#!/usr/bin/env python3
"""Writes an AWS legacy CUR CSV of any size for measurements, from the bundled 1,281-row sample.

    python3 benches/make_cur_csv.py --rows 1000000 --out /tmp/cur-1m.csv

Rows cycle through sample-data/aws/cur1/cur1_sample.csv with a unique identity/LineItemId and
one of 50 linked accounts (leading zeros kept); the billing period and payer stay the sample's,
so the result is one partition. Deterministic: same arguments, same bytes. A stop-gap until the
generator of issue 6 (`tally generate`).
"""
import argparse
import csv
import os
import sys

here = os.path.dirname(os.path.abspath(__file__))
ap = argparse.ArgumentParser()
ap.add_argument("--rows", type=int, required=True)
ap.add_argument("--out", required=True)
a = ap.parse_args()
with open(os.path.join(here, "..", "sample-data/aws/cur1/cur1_sample.csv"), newline="", encoding="utf-8") as f:
    r = csv.reader(f)
    header = next(r)
    rows = list(r)
iid = header.index("identity/LineItemId")
acct = header.index("lineItem/UsageAccountId")
with open(a.out, "w", newline="", encoding="utf-8") as f:
    w = csv.writer(f, lineterminator="\n")
    w.writerow(header)
    for i in range(a.rows):
        row = list(rows[i % len(rows)])
        row[iid] = f"gen{i:012d}"
        row[acct] = f"{(i * 7919) % 50:012d}"
        w.writerow(row)
print(f"wrote {a.rows} rows to {a.out} ({os.path.getsize(a.out)} bytes)", file=sys.stderr)
