#!/usr/bin/env python3
"""The DuckDB peer of benches/run.py: runs benches/duckdb_aws_cur.sql on one CUR file.

    python benches/duckdb_peer.py <input.csv|input.parquet|glob> <output.parquet>

Every input column is read as text, as tally reads it (Parquet doubles and timestamps are cast
to VARCHAR first), so both tools parse the same decimal text into DECIMAL(38,18). Legacy CUR
CSV headers are renamed to the CUR 2.0 names the SQL uses, as tally's reader does.
"""
import glob
import os
import sys

import duckdb

src, out = sys.argv[1:3]
here = os.path.dirname(os.path.abspath(__file__))
sql = open(os.path.join(here, "duckdb_aws_cur.sql"), encoding="utf-8").read()
def snake(name):
    """lineItem/UnblendedCost → line_item_unblended_cost (the legacy CUR CSV's headers, renamed
    the way tally's layout renames them; ARN becomes a_r_n as in Athena)."""
    if "/" not in name:
        return name
    out, prev_sep = [], True
    for c in name:
        if c == "/" or c == ":":
            out.append("_")
            prev_sep = True
        elif c.isupper():
            out.append(("" if prev_sep else "_") + c.lower())
            prev_sep = False
        else:
            out.append(c)
            prev_sep = False
    return "".join(out)


if src.endswith(".csv"):
    # A glob of parts (run.py --files) shares one header: read it from the first part.
    with open(sorted(glob.glob(src))[0], encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split(",")
    scan = ("(SELECT " + ", ".join(f'"{c}" AS "{snake(c)}"' for c in header)
            + f" FROM read_csv('{src}', all_varchar = true, header = true))")
else:
    cols = [r[0] for r in duckdb.sql(f"DESCRIBE SELECT * FROM read_parquet('{src}')").fetchall()]
    scan = "(SELECT " + ", ".join(f'CAST("{c}" AS VARCHAR) AS "{c}"' for c in cols) + f" FROM read_parquet('{src}'))"
duckdb.sql(sql.replace("{scan}", scan).replace("{out}", out))
