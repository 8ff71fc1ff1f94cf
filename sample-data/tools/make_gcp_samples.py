#!/usr/bin/env python3
"""Writes the GCP billing-export fixtures under sample-data/gcp/.

    gcp/jsonl/gcp_billing_2024-03.jsonl      BigQuery detailed usage cost export, exported as
                                             newline-delimited JSON (March 2024)
    gcp/parquet/gcp_billing_2024-04.parquet  the same table exported as Parquet (April 2024):
                                             nested STRUCTs and REPEATED records

Built from Google's public schema ("Structure of Detailed data export" in the Cloud Billing
docs): field names, nesting and types as documented; every id, name and amount is made up. No
sample of anyone's export is copied. As BigQuery does, JSON export leaves NULL fields out of a
line, writes FLOAT64 as JSON numbers and TIMESTAMP as "YYYY-MM-DD HH:MM:SS UTC"; `invoice.month`
is "YYYYMM". Amounts are chosen as exact decimals whose shortest float text is the same decimal.

Run with: ~/.cache/tally-validators/venv/bin/python sample-data/tools/make_gcp_samples.py
Needs: Python 3 stdlib (+ pyarrow for the Parquet file). Deterministic.
"""

import json
import os
from decimal import Decimal as D

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(os.path.dirname(HERE), "gcp")
ACCOUNT = "01A2B3-C4D5E6-F7A8B9"


def project(pid, name, team):
    return {
        "id": pid,
        "number": "123456789012" if pid == "shop-prod" else "210987654321",
        "name": name,
        "labels": [{"key": "team", "value": team}],
        "ancestry_numbers": "/123/456/",
    }


def row(month, day, service, sku, usage, cost, *, credits=(), labels=(), tags=(), prj=None,
        location=None, resource=None, price=None, cost_type="regular", cost_at_list=None,
        adjustment=None, hour=0):
    start = f"2024-{month[4:]}-{day:02d} {hour:02d}:00:00 UTC"
    end = f"2024-{month[4:]}-{day:02d} {hour + 1:02d}:00:00 UTC"
    r = {
        "billing_account_id": ACCOUNT,
        "service": {"id": service[0], "description": service[1]},
        "sku": {"id": sku[0], "description": sku[1]},
        "usage_start_time": start,
        "usage_end_time": end,
        "project": prj,
        "labels": [{"key": k, "value": v} for k, v in labels],
        "system_labels": [],
        "location": location,
        "resource": resource,
        "tags": [{"key": k, "value": v, "inherited": False, "namespace": "123"} for k, v in tags],
        "price": price,
        "export_time": f"2024-{month[4:]}-{day:02d} 06:00:00 UTC",
        "cost": D(cost),
        "currency": "USD",
        "currency_conversion_rate": D("1"),
        "usage": usage,
        "credits": [dict(c, amount=D(c["amount"])) for c in credits],
        "invoice": {"month": month, "publisher_type": "GOOGLE"},
        "cost_type": cost_type,
        "adjustment_info": adjustment,
        "cost_at_list": D(cost_at_list) if cost_at_list is not None else D(cost),
        "transaction_type": "GOOGLE",
    }
    return r


def usage(amount, unit, in_pricing, pricing_unit):
    return {"amount": D(amount), "unit": unit, "amount_in_pricing_units": D(in_pricing), "pricing_unit": pricing_unit}


def price(effective, unit):
    return {"effective_price": D(effective), "tier_start_amount": D("0"), "unit": unit, "pricing_unit_quantity": D("1")}


CE = ("6F81-5844-456A", "Compute Engine")
GCS = ("95FF-2EF5-5EA1", "Cloud Storage")
BQ = ("24E6-581D-38E5", "BigQuery")
VX = ("C7E2-9256-1C43", "Vertex AI")
RUN = ("152E-C115-5142", "Cloud Run")
US1 = {"location": "us-central1", "country": "US", "region": "us-central1", "zone": "us-central1-a"}
EU = {"location": "europe-west1", "country": "BE", "region": "europe-west1"}
SHOP = project("shop-prod", "Shop (prod)", "platform")
AI = project("assist-prod", "Assistant (prod)", "ml")
VM = {"name": "web-1", "global_name": "//compute.googleapis.com/projects/shop-prod/zones/us-central1-a/instances/4521"}


def march():
    m = "202403"
    return [
        row(m, 1, CE, ("CP-COMPUTEENGINE-N2-CORE", "N2 Instance Core running in Americas"),
            usage("3600", "seconds", "1", "hour"), "0.031611", prj=SHOP, location=US1, resource=VM,
            price=price("0.031611", "hour"), labels=[("env", "prod"), ("app", "web")],
            credits=[{"name": "Sustained Usage Discount", "amount": "-0.006322", "full_name": "", "id": "", "type": "SUSTAINED_USAGE_DISCOUNT"}]),
        row(m, 1, GCS, ("E5F0-6A5D-7BAD", "Standard Storage Europe Multi-region"),
            usage("2500000000000000", "byte-seconds", "0.9313225746", "gibibyte month"), "0.018626451492",
            prj=SHOP, location=EU, resource={"name": "shop-assets", "global_name": "//storage.googleapis.com/projects/_/buckets/shop-assets"},
            price=price("0.02", "gibibyte month"), tags=[("env", "production")], labels=[("app", "assets")]),
        row(m, 2, BQ, ("3362-E469-6BEF", "Analysis"),
            usage("1099511627776", "bytes", "1", "tebibyte"), "6.25", prj=SHOP, location=US1,
            price=price("6.25", "tebibyte"),
            credits=[{"name": "Free tier", "amount": "-6.25", "full_name": "", "id": "", "type": "FREE_TIER"}]),
        row(m, 3, VX, ("FC2E-1A2B-3C4D", "Gemini 2.0 Flash Text Input - Predictions"),
            usage("1250000", "count", "1.25", "1 million tokens"), "0.1875", prj=AI, location=US1,
            price=price("0.15", "1 million tokens"), labels=[("app", "assistant")]),
        row(m, 3, VX, ("FC2E-1A2B-3C4E", "Gemini 2.0 Flash Text Output - Predictions"),
            usage("300000", "count", "0.3", "1 million tokens"), "0.18", prj=AI, location=US1,
            price=price("0.6", "1 million tokens"), labels=[("app", "assistant")]),
        row(m, 3, VX, ("FC2E-1A2B-3C4F", "Gemini 3 Flash Text Input Caching"),
            usage("2000000", "count", "2", "1 million tokens"), "0.075", prj=AI, location=US1,
            price=price("0.0375", "1 million tokens"), labels=[("app", "assistant")]),
        # A Vertex SKU no rule knows: its AI columns stay NULL and it is counted.
        row(m, 4, VX, ("FC2E-1A2B-3C50", "Gemini 2.0 Flash Image Output"),
            usage("12", "count", "12", "count"), "0.48", prj=AI, location=US1, price=price("0.04", "count")),
        row(m, 5, RUN, ("9B1E-AB31-0AE0", "CPU Allocation Time"),
            usage("40000", "vCPU-seconds", "40000", "vCPU-seconds"), "0.96", prj=SHOP, location=US1,
            price=price("0.000024", "vCPU-seconds"),
            credits=[{"name": "Startup credits", "amount": "-0.96", "full_name": "", "id": "promo-1", "type": "PROMOTION"}]),
        # A float sum the way BigQuery prints it: 17 significant digits, kept exactly.
        row(m, 6, CE, ("CP-COMPUTEENGINE-N2-RAM", "N2 Instance Ram running in Americas"),
            usage("32212254720", "byte-seconds", "0.008333333333", "gibibyte hour"), "0.30000000000000004",
            prj=SHOP, location=US1, resource=VM, labels=[("env", "prod"), ("app", "web")]),
        row(m, 31, CE, ("TAX-US-CA", "Tax"), None, "0.52", cost_type="tax"),
        row(m, 20, CE, ("ADJ-0001", "Compute Engine adjustment"), None, "-1.1", cost_type="adjustment",
            prj=SHOP, adjustment={"id": "adj-2024-03-0001", "description": "Billing correction for Feb overcharge", "mode": "MANUAL_ADJUSTMENT", "type": "GENERAL_ADJUSTMENT"}),
        row(m, 31, CE, ("RND-0001", "Rounding error"), None, "0.000001", cost_type="rounding_error"),
    ]


def april():
    m = "202404"
    return [
        row(m, 1, CE, ("CP-COMPUTEENGINE-N2-CORE", "N2 Instance Core running in Americas"),
            usage("7200", "seconds", "2", "hour"), "0.063222", prj=SHOP, location=US1, resource=VM,
            price=price("0.031611", "hour"), labels=[("env", "prod"), ("app", "web")],
            credits=[{"name": "Sustained Usage Discount", "amount": "-0.012644", "full_name": "", "id": "", "type": "SUSTAINED_USAGE_DISCOUNT"},
                     {"name": "Committed use discount", "amount": "-0.01", "full_name": "", "id": "cud-1", "type": "COMMITTED_USAGE_DISCOUNT"}]),
        row(m, 2, VX, ("FC2E-1A2B-3C4D", "Gemini 2.0 Flash Text Input - Predictions"),
            usage("4000000", "count", "4", "1 million tokens"), "0.6", prj=AI, location=US1,
            price=price("0.15", "1 million tokens"), labels=[("app", "assistant")]),
        row(m, 30, CE, ("TAX-US-CA", "Tax"), None, "0.04", cost_type="tax"),
    ]


def prune(v):
    """BigQuery's JSON export leaves NULL fields out."""
    if isinstance(v, dict):
        return {k: prune(x) for k, x in v.items() if x is not None}
    if isinstance(v, list):
        return [prune(x) for x in v]
    return v


def dumps(v):
    # Decimals as JSON numbers with their exact text.
    if isinstance(v, D):
        return str(v)
    if isinstance(v, dict):
        return "{" + ",".join(json.dumps(k) + ":" + dumps(x) for k, x in v.items()) + "}"
    if isinstance(v, list):
        return "[" + ",".join(dumps(x) for x in v) + "]"
    return json.dumps(v)


def write_jsonl():
    path = os.path.join(OUT, "jsonl", "gcp_billing_2024-03.jsonl")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", newline="\n") as f:
        for r in march():
            f.write(dumps(prune(r)) + "\n")
    return sum(D(r["cost"]) for r in march())


def write_parquet():
    import pyarrow as pa
    import pyarrow.parquet as pq

    kv = pa.list_(pa.struct([("key", pa.string()), ("value", pa.string())]))
    schema = pa.schema([
        ("billing_account_id", pa.string()),
        ("service", pa.struct([("id", pa.string()), ("description", pa.string())])),
        ("sku", pa.struct([("id", pa.string()), ("description", pa.string())])),
        ("usage_start_time", pa.timestamp("us", tz="UTC")),
        ("usage_end_time", pa.timestamp("us", tz="UTC")),
        ("project", pa.struct([("id", pa.string()), ("number", pa.string()), ("name", pa.string()),
                               ("labels", kv), ("ancestry_numbers", pa.string())])),
        ("labels", kv),
        ("location", pa.struct([("location", pa.string()), ("country", pa.string()),
                                ("region", pa.string()), ("zone", pa.string())])),
        ("resource", pa.struct([("name", pa.string()), ("global_name", pa.string())])),
        ("price", pa.struct([("effective_price", pa.decimal128(38, 9)), ("tier_start_amount", pa.decimal128(38, 9)),
                             ("unit", pa.string()), ("pricing_unit_quantity", pa.decimal128(38, 9))])),
        ("cost", pa.float64()),
        ("currency", pa.string()),
        ("usage", pa.struct([("amount", pa.float64()), ("unit", pa.string()),
                             ("amount_in_pricing_units", pa.float64()), ("pricing_unit", pa.string())])),
        ("credits", pa.list_(pa.struct([("name", pa.string()), ("amount", pa.float64()), ("full_name", pa.string()),
                                        ("id", pa.string()), ("type", pa.string())]))),
        ("invoice", pa.struct([("month", pa.string()), ("publisher_type", pa.string())])),
        ("cost_type", pa.string()),
        ("cost_at_list", pa.float64()),
        ("transaction_type", pa.string()),
    ])
    from datetime import datetime, timezone

    def ts(s):
        return datetime.strptime(s, "%Y-%m-%d %H:%M:%S UTC").replace(tzinfo=timezone.utc)

    def fl(d):
        f = float(d)
        assert repr(f) == str(d).lower() or D(repr(f)) == d, (d, repr(f))
        return f

    rows = []
    for r in april():
        rows.append({
            "billing_account_id": r["billing_account_id"], "service": r["service"], "sku": r["sku"],
            "usage_start_time": ts(r["usage_start_time"]), "usage_end_time": ts(r["usage_end_time"]),
            "project": r["project"], "labels": r["labels"], "location": r["location"], "resource": r["resource"],
            "price": r["price"], "cost": fl(r["cost"]), "currency": r["currency"],
            "usage": None if r["usage"] is None else {**r["usage"], "amount": fl(r["usage"]["amount"]),
                                                     "amount_in_pricing_units": fl(r["usage"]["amount_in_pricing_units"])},
            "credits": [{**c, "amount": fl(c["amount"])} for c in r["credits"]],
            "invoice": r["invoice"], "cost_type": r["cost_type"], "cost_at_list": fl(r["cost_at_list"]),
            "transaction_type": r["transaction_type"],
        })
    table = pa.Table.from_pylist(rows, schema=schema)
    path = os.path.join(OUT, "parquet", "gcp_billing_2024-04.parquet")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(table, path, compression="zstd")
    return sum(D(r["cost"]) for r in april())


if __name__ == "__main__":
    print("jsonl   Σ cost", write_jsonl())
    print("parquet Σ cost", write_parquet())
