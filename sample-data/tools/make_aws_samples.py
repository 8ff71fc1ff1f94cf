#!/usr/bin/env python3
"""Writes the two hand-made AWS Cost and Usage Report fixtures under sample-data/aws/.

    sample-data/aws/cur-athena/cur_athena_2023-12.parquet   legacy CUR, Parquet/Athena layout
    sample-data/aws/cur2/cur2_2024-01.parquet               CUR 2.0 (AWS Data Exports) layout

Every value is fixed in this file: no randomness, no clock. Running it twice writes the same
bytes (for a given pyarrow version). Column names and types follow the public AWS column
dictionaries (legacy CUR "Line item details"/Athena integration, and the Data Exports CUR 2.0
table dictionary); account ids, ARNs, resource ids and prices are made up.

Amounts are chosen as exact decimals (Decimal) and written as DOUBLE where AWS writes DOUBLE
(costs, usage amounts, reservation/savings-plan amounts) and as STRING where AWS writes STRING
(line_item_unblended_rate, line_item_blended_rate, pricing_public_on_demand_rate). Each double
is checked to print back, shortest round-trip, as the very decimal chosen, so a reader that
turns doubles into shortest text sees exact values. The script asserts the cost identities
and commitment balances before writing and prints Σ line_item_unblended_cost per file.

Run with: ~/.cache/tally-validators/venv/bin/python sample-data/tools/make_aws_samples.py
Needs: Python 3 stdlib + pyarrow.
"""

import base64
import hashlib
import os
import sys
from datetime import datetime
from decimal import Decimal as D

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "aws"))

PAYER = "012345678901"  # leading zero: must stay text
LINKED = "000987654321"

STR, DBL, TS = pa.string(), pa.float64(), pa.timestamp("ms")  # Athena TIMESTAMP: tz-naive
MAP = pa.map_(pa.string(), pa.string())

USAGE_TYPES = ("Usage", "DiscountedUsage", "SavingsPlanCoveredUsage")


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------

def ts(s):
    return datetime.strptime(s, "%Y-%m-%d %H:%M")


def line_item_id(tag, i):
    """A stable 52-character id in the style of identity/LineItemId."""
    h = hashlib.sha256(f"{tag}-{i}".encode()).digest()
    return base64.b32encode(h).decode().lower().rstrip("=")[:52]


def rate_text(d, fixed):
    """A rate as AWS writes it in a STRING column ('' or None when there is no rate)."""
    if d is None:
        return None
    return f"{d:.10f}" if fixed else format(d.normalize(), "f")


def exact_double(name, d):
    """The double for decimal d; refuses values whose shortest text is not d itself."""
    f = float(d)
    if D(repr(f)) != d:
        sys.exit(f"{name}: {d} does not survive double -> shortest text ({repr(f)})")
    return f


def decimals(d):
    return max(0, -d.normalize().as_tuple().exponent)


def check_rows(label, rows):
    """Asserts the identities the fixtures promise; returns Σ line_item_unblended_cost."""
    total = D(0)
    for r in rows:
        t = r["line_item_line_item_type"]
        cost = r["line_item_unblended_cost"]
        total += cost
        assert decimals(cost) <= 10, (label, r["identity_line_item_id"], cost)
        if r.get("pricing_unit"):
            qty = r["line_item_usage_amount"]
            assert cost == r["line_item_unblended_rate"] * qty, (label, t, cost)
            if r.get("pricing_public_on_demand_cost") is not None:
                assert r["pricing_public_on_demand_cost"] == r["pricing_public_on_demand_rate"] * qty, (label, t)
        if t == "DiscountedUsage":
            assert cost == 0 and r["line_item_unblended_rate"] == 0
        if t == "Tax":
            assert not r.get("pricing_unit")
    # RI: one RIFee per ARN equals Σ reservation_effective_cost of its DiscountedUsage rows
    for arn in {r["reservation_reservation_a_r_n"] for r in rows if r.get("reservation_reservation_a_r_n")}:
        used = sum((r["reservation_effective_cost"] for r in rows
                    if r["line_item_line_item_type"] == "DiscountedUsage"
                    and r["reservation_reservation_a_r_n"] == arn), D(0))
        fee = [r for r in rows if r["line_item_line_item_type"] == "RIFee"
               and r["reservation_reservation_a_r_n"] == arn]
        assert len(fee) == 1 and fee[0]["line_item_unblended_cost"] == used, (label, arn)
        assert fee[0]["reservation_unused_recurring_fee"] == 0
        assert fee[0]["reservation_unused_amortized_upfront_fee_for_billing_period"] == 0
    # SP: each covered row has a negation of exactly −cost; the recurring fee equals Σ effective
    for arn in {r["savings_plan_savings_plan_a_r_n"] for r in rows if r.get("savings_plan_savings_plan_a_r_n")}:
        cov = [r for r in rows if r["line_item_line_item_type"] == "SavingsPlanCoveredUsage"
               and r["savings_plan_savings_plan_a_r_n"] == arn]
        neg = [r for r in rows if r["line_item_line_item_type"] == "SavingsPlanNegation"
               and r["savings_plan_savings_plan_a_r_n"] == arn]
        assert sorted(-r["line_item_unblended_cost"] for r in neg) == sorted(r["line_item_unblended_cost"] for r in cov)
        used = sum((r["savings_plan_savings_plan_effective_cost"] for r in cov), D(0))
        fee = [r for r in rows if r["line_item_line_item_type"] == "SavingsPlanRecurringFee"
               and r["savings_plan_savings_plan_a_r_n"] == arn]
        assert len(fee) == 1 and fee[0]["line_item_unblended_cost"] == used, (label, arn, used)
        assert fee[0]["savings_plan_total_commitment_to_date"] == used == fee[0]["savings_plan_used_commitment"]
    return total


def write(path, columns, rows, fixed_rates):
    """Writes rows (dicts; absent keys are null) with the given (name, type) columns."""
    arrays = []
    for name, typ in columns:
        vals = []
        for r in rows:
            v = r.get(name)
            if v is None:
                vals.append(None)
            elif typ == DBL:
                vals.append(exact_double(f"{name} of {r['identity_line_item_id']}", v))
            elif typ == STR and isinstance(v, D):
                vals.append(rate_text(v, fixed_rates))
            elif typ == MAP:
                vals.append(list(v.items()))
            else:
                vals.append(v)
        arrays.append(pa.array(vals, type=typ))
    table = pa.Table.from_arrays(arrays, schema=pa.schema([pa.field(n, t) for n, t in columns]))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(table, path, compression="snappy")


def usage(qty, rate, od_rate=None):
    """Cost fields of a priced row: unblended = rate × qty, public on-demand = od_rate × qty."""
    od_rate = rate if od_rate is None else od_rate
    return {
        "line_item_usage_amount": qty,
        "line_item_unblended_rate": rate,
        "line_item_unblended_cost": rate * qty,
        "line_item_blended_rate": rate,
        "line_item_blended_cost": rate * qty,
        "pricing_public_on_demand_rate": od_rate,
        "pricing_public_on_demand_cost": od_rate * qty,
    }


# --------------------------------------------------------------------------------------------
# 1. legacy CUR, Parquet/Athena layout — December 2023
# --------------------------------------------------------------------------------------------

ATHENA_COLUMNS = [
    ("identity_line_item_id", STR), ("identity_time_interval", STR),
    ("bill_invoice_id", STR), ("bill_invoicing_entity", STR), ("bill_billing_entity", STR),
    ("bill_bill_type", STR), ("bill_payer_account_id", STR),
    ("bill_billing_period_start_date", TS), ("bill_billing_period_end_date", TS),
    ("line_item_usage_account_id", STR), ("line_item_line_item_type", STR),
    ("line_item_usage_start_date", TS), ("line_item_usage_end_date", TS),
    ("line_item_product_code", STR), ("line_item_usage_type", STR), ("line_item_operation", STR),
    ("line_item_availability_zone", STR), ("line_item_resource_id", STR),
    ("line_item_usage_amount", DBL), ("line_item_currency_code", STR),
    ("line_item_unblended_rate", STR), ("line_item_unblended_cost", DBL),
    ("line_item_blended_rate", STR), ("line_item_blended_cost", DBL),
    ("line_item_line_item_description", STR), ("line_item_tax_type", STR),
    ("line_item_legal_entity", STR),
    ("product_product_name", STR), ("product_servicename", STR), ("product_servicecode", STR),
    ("product_product_family", STR), ("product_instance_type", STR),
    ("product_region", STR), ("product_region_code", STR), ("product_location", STR),
    ("product_sku", STR), ("product_usagetype", STR), ("product_operation", STR),
    ("pricing_public_on_demand_cost", DBL), ("pricing_public_on_demand_rate", STR),
    ("pricing_term", STR), ("pricing_unit", STR), ("pricing_purchase_option", STR),
    ("pricing_lease_contract_length", STR), ("pricing_offering_class", STR),
    ("reservation_reservation_a_r_n", STR), ("reservation_effective_cost", DBL),
    ("reservation_recurring_fee_for_usage", DBL), ("reservation_amortized_upfront_cost_for_usage", DBL),
    ("reservation_amortized_upfront_fee_for_billing_period", DBL),
    ("reservation_unused_amortized_upfront_fee_for_billing_period", DBL),
    ("reservation_unused_recurring_fee", DBL), ("reservation_unused_quantity", DBL),
    ("reservation_total_reserved_units", STR), ("reservation_number_of_reservations", STR),
    ("reservation_start_time", STR), ("reservation_end_time", STR),
    ("savings_plan_savings_plan_a_r_n", STR), ("savings_plan_savings_plan_rate", DBL),
    ("savings_plan_savings_plan_effective_cost", DBL),
    ("savings_plan_total_commitment_to_date", DBL), ("savings_plan_used_commitment", DBL),
    ("savings_plan_recurring_commitment_for_billing_period", DBL),
    ("savings_plan_amortized_upfront_commitment_for_billing_period", DBL),
    ("savings_plan_offering_type", STR), ("savings_plan_payment_option", STR),
    ("savings_plan_purchase_term", STR), ("savings_plan_region", STR),
    ("savings_plan_start_time", STR), ("savings_plan_end_time", STR),
    ("resource_tags_user_cost_center", STR), ("resource_tags_user_environment", STR),
    ("resource_tags_aws_created_by", STR),
]

EC2 = {"line_item_product_code": "AmazonEC2", "product_product_name": "Amazon Elastic Compute Cloud",
       "product_servicename": "Amazon Elastic Compute Cloud", "product_servicecode": "AmazonEC2"}
S3 = {"line_item_product_code": "AmazonS3", "product_product_name": "Amazon Simple Storage Service",
      "product_servicename": "Amazon Simple Storage Service", "product_servicecode": "AmazonS3"}
FRA = {"product_region": "eu-central-1", "product_region_code": "eu-central-1",
       "product_location": "EU (Frankfurt)"}

RI_ARN = "arn:aws:ec2:eu-central-1:012345678901:reserved-instances/4b7a1f2e-6c3d-4e5f-8a9b-0c1d2e3f4a5b"
SP_ARN = "arn:aws:savingsplans::012345678901:savingsplan/9d8c7b6a-5f4e-4d3c-b2a1-0f9e8d7c6b5a"
SP2_ARN = "arn:aws:savingsplans::012345678901:savingsplan/1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d"


def athena_rows():
    p0, p1 = ts("2023-12-01 00:00"), ts("2024-01-01 00:00")
    base = {
        "identity_time_interval": "2023-12-01T00:00:00Z/2024-01-01T00:00:00Z",
        "bill_invoice_id": "EUINDE23-2401001", "bill_invoicing_entity": "Amazon Web Services EMEA SARL",
        "bill_billing_entity": "AWS", "bill_bill_type": "Anniversary", "bill_payer_account_id": PAYER,
        "bill_billing_period_start_date": p0, "bill_billing_period_end_date": p1,
        "line_item_currency_code": "USD", "line_item_legal_entity": "Amazon Web Services EMEA SARL",
        "line_item_usage_start_date": p0, "line_item_usage_end_date": p1,
    }
    tags_prod = {"resource_tags_user_cost_center": "cc-100", "resource_tags_user_environment": "prod",
                 "resource_tags_aws_created_by": "AssumedRole:AROAEXAMPLEROLEID0001:deploy"}
    tags_dev = {"resource_tags_user_environment": "dev"}
    od = {"pricing_term": "OnDemand"}
    rows = []

    def add(**kw):
        r = dict(base)
        for k, v in kw.items():
            if isinstance(v, dict):
                r.update(v)
            else:
                r[k] = v
        rows.append(r)

    # ---- plain OnDemand usage (13 rows) ----
    add(a=EC2, b=FRA, c=od, d=tags_prod, e=usage(D(744), D("0.048")),
        line_item_usage_account_id=PAYER, line_item_line_item_type="Usage",
        line_item_usage_type="EUC1-BoxUsage:t3.medium", line_item_operation="RunInstances",
        line_item_availability_zone="eu-central-1a", line_item_resource_id="i-0a1b2c3d4e5f60001",
        line_item_line_item_description="$0.048 per On Demand Linux t3.medium Instance Hour",
        product_product_family="Compute Instance", product_instance_type="t3.medium",
        product_sku="7W6DNQ55YG9FCPXZ", product_usagetype="EUC1-BoxUsage:t3.medium",
        product_operation="RunInstances", pricing_unit="Hrs")
    add(a=EC2, b=FRA, c=od, d=tags_dev, e=usage(D(312), D("0.115")),
        line_item_usage_account_id=LINKED, line_item_line_item_type="Usage",
        line_item_usage_type="EUC1-BoxUsage:m5.large", line_item_operation="RunInstances",
        line_item_availability_zone="eu-central-1b", line_item_resource_id="i-0a1b2c3d4e5f60002",
        line_item_line_item_description="$0.115 per On Demand Linux m5.large Instance Hour",
        product_product_family="Compute Instance", product_instance_type="m5.large",
        product_sku="8KTQAHWA58GUHDGC", product_usagetype="EUC1-BoxUsage:m5.large",
        product_operation="RunInstances", pricing_unit="Hrs")
    for day in (4, 5, 6):  # three daily rows: 0.0464 × 24 = 1.1136
        add(a=EC2, b=FRA, c=od, e=usage(D(24), D("0.0464")),
            line_item_usage_start_date=ts(f"2023-12-{day:02d} 00:00"),
            line_item_usage_end_date=ts(f"2023-12-{day + 1:02d} 00:00"),
            line_item_usage_account_id=LINKED, line_item_line_item_type="Usage",
            line_item_usage_type="EUC1-BoxUsage:t3a.large", line_item_operation="RunInstances",
            line_item_availability_zone="eu-central-1c", line_item_resource_id="i-0a1b2c3d4e5f60003",
            line_item_line_item_description="$0.0464 per On Demand Linux t3a.large Instance Hour",
            product_product_family="Compute Instance", product_instance_type="t3a.large",
            product_sku="Q4QTSF7H37JFW9ER", product_usagetype="EUC1-BoxUsage:t3a.large",
            product_operation="RunInstances", pricing_unit="Hrs")
    add(a=EC2, b=FRA, c=od, d=tags_prod, e=usage(D(100), D("0.0952")),
        line_item_usage_account_id=PAYER, line_item_line_item_type="Usage",
        line_item_usage_type="EUC1-EBS:VolumeUsage.gp3", line_item_operation="CreateVolume-Gp3",
        line_item_availability_zone="eu-central-1a", line_item_resource_id="vol-0f1e2d3c4b5a60001",
        line_item_line_item_description="$0.0952 per GB-month of General Purpose (gp3) provisioned storage - EU (Frankfurt)",
        product_product_family="Storage", product_sku="HY3BZPP2B6K8MSJF",
        product_usagetype="EUC1-EBS:VolumeUsage.gp3", product_operation="CreateVolume-Gp3",
        pricing_unit="GB-Mo")
    add(a=S3, b=FRA, c=od, d=tags_prod, e=usage(D("512.5"), D("0.0245")),
        line_item_usage_account_id=PAYER, line_item_line_item_type="Usage",
        line_item_usage_type="EUC1-TimedStorage-ByteHrs", line_item_operation="StandardStorage",
        line_item_resource_id="example-prod-artifacts",
        line_item_line_item_description="$0.0245 per GB - first 50 TB / month of storage used",
        product_product_family="Storage", product_sku="YUFXQWQSCRQC9VVM",
        product_usagetype="EUC1-TimedStorage-ByteHrs", product_operation="", pricing_unit="GB-Mo")
    add(a=S3, b=FRA, c=od, d=tags_prod, e=usage(D(250000), D("0.0000054")),
        line_item_usage_account_id=PAYER, line_item_line_item_type="Usage",
        line_item_usage_type="EUC1-Requests-Tier1", line_item_operation="PutObject",
        line_item_resource_id="example-prod-artifacts",
        line_item_line_item_description="$0.0054 per 1,000 PUT, COPY, POST, or LIST requests",
        product_product_family="API Request", product_sku="BGE3BSCAMJXKWPYF",
        product_usagetype="EUC1-Requests-Tier1", pricing_unit="Requests")
    add(a=S3, b=FRA, c=od, d=tags_prod, e=usage(D(1200000), D("0.00000043")),
        line_item_usage_account_id=PAYER, line_item_line_item_type="Usage",
        line_item_usage_type="EUC1-Requests-Tier2", line_item_operation="GetObject",
        line_item_resource_id="example-prod-artifacts",
        line_item_line_item_description="$0.00043 per 1,000 GET and all other requests",
        product_product_family="API Request", product_sku="5D5QCN9MN7TJX8GE",
        product_usagetype="EUC1-Requests-Tier2", pricing_unit="Requests")
    add(b=FRA, c=od, d=tags_prod, e=usage(D("120.5"), D("0.09")),
        line_item_product_code="AWSDataTransfer", product_product_name="AWS Data Transfer",
        product_servicename="AWS Data Transfer", product_servicecode="AWSDataTransfer",
        line_item_usage_account_id=PAYER, line_item_line_item_type="Usage",
        line_item_usage_type="EUC1-DataTransfer-Out-Bytes", line_item_operation="RunInstances",
        line_item_resource_id="i-0a1b2c3d4e5f60001",
        line_item_line_item_description="$0.090 per GB - first 10 TB / month data transfer out beyond the global free tier",
        product_product_family="Data Transfer", product_sku="AA8ZSAGCS5ZDG6QH",
        product_usagetype="EUC1-DataTransfer-Out-Bytes", pricing_unit="GB")
    add(b=FRA, c=od, d=tags_dev, e=usage(D("340.25"), D("0.01")),
        line_item_product_code="AWSDataTransfer", product_product_name="AWS Data Transfer",
        product_servicename="AWS Data Transfer", product_servicecode="AWSDataTransfer",
        line_item_usage_account_id=LINKED, line_item_line_item_type="Usage",
        line_item_usage_type="EUC1-DataTransfer-Regional-Bytes", line_item_operation="InterZone-In",
        line_item_resource_id="i-0a1b2c3d4e5f60002",
        line_item_line_item_description="$0.010 per GB - regional data transfer - in/out/between EC2 AZs or using elastic IPs or ELB",
        product_product_family="Data Transfer", product_sku="6QZ4AC2KXTSKBFZT",
        product_usagetype="EUC1-DataTransfer-Regional-Bytes", pricing_unit="GB")
    add(b=FRA, c=od, d=tags_dev, e=usage(D(3000000), D("0.0000002")),
        line_item_product_code="AWSLambda", product_product_name="AWS Lambda",
        product_servicename="AWS Lambda", product_servicecode="AWSLambda",
        line_item_usage_account_id=LINKED, line_item_line_item_type="Usage",
        line_item_usage_type="EUC1-Request", line_item_operation="Invoke",
        line_item_resource_id="arn:aws:lambda:eu-central-1:000987654321:function:example-ingest",
        line_item_line_item_description="AWS Lambda - Requests Free Tier - 1,000,000 Requests used; $0.20 per 1M requests",
        product_product_family="Serverless", product_sku="Z6DSHW3NTXUX9Y4W",
        product_usagetype="EUC1-Request", pricing_unit="Requests")
    add(b=FRA, c=od, d=tags_prod, e=usage(D(744), D("0.021")),
        line_item_product_code="AmazonRDS", product_product_name="Amazon Relational Database Service",
        product_servicename="Amazon Relational Database Service", product_servicecode="AmazonRDS",
        line_item_usage_account_id=PAYER, line_item_line_item_type="Usage",
        line_item_usage_type="EUC1-InstanceUsage:db.t4g.micro", line_item_operation="CreateDBInstance:0014",
        line_item_availability_zone="eu-central-1a",
        line_item_resource_id="arn:aws:rds:eu-central-1:012345678901:db:example-prod-db",
        line_item_line_item_description="$0.021 per RDS db.t4g.micro instance hour (or partial hour) running PostgreSQL",
        product_product_family="Database Instance", product_instance_type="db.t4g.micro",
        product_sku="3XZD9Q8NNVJQ5MCS", product_usagetype="EUC1-InstanceUsage:db.t4g.micro",
        pricing_unit="Hrs")

    # ---- Reserved Instance, m5.large No Upfront, fully used: 5 DiscountedUsage + 1 RIFee ----
    ri_rate, ri_od = D("0.071"), D("0.115")
    ri_common = dict(
        line_item_product_code="AmazonEC2", line_item_usage_type="EUC1-BoxUsage:m5.large",
        line_item_operation="RunInstances", product_product_family="Compute Instance",
        product_instance_type="m5.large", product_sku="8KTQAHWA58GUHDGC",
        product_usagetype="EUC1-BoxUsage:m5.large", pricing_term="Reserved",
        pricing_purchase_option="No Upfront", pricing_lease_contract_length="1yr",
        pricing_offering_class="standard", reservation_reservation_a_r_n=RI_ARN,
    )
    weeks = [("2023-12-01", "2023-12-08", 168, PAYER), ("2023-12-08", "2023-12-15", 168, PAYER),
             ("2023-12-15", "2023-12-22", 168, LINKED), ("2023-12-22", "2023-12-29", 168, LINKED),
             ("2023-12-29", "2024-01-01", 72, LINKED)]
    for start, end, hrs, acct in weeks:
        qty = D(hrs)
        add(a=EC2, b=FRA, c=ri_common, e=usage(qty, D(0), ri_od),
            d=(tags_prod if acct == PAYER else tags_dev),
            line_item_usage_start_date=ts(f"{start} 00:00"), line_item_usage_end_date=ts(f"{end} 00:00"),
            line_item_usage_account_id=acct, line_item_line_item_type="DiscountedUsage",
            line_item_availability_zone="eu-central-1a", line_item_resource_id="i-0a1b2c3d4e5f60004",
            line_item_line_item_description="Linux/UNIX (Amazon VPC), m5.large reserved instance applied",
            pricing_unit="Hrs", reservation_effective_cost=ri_rate * qty,
            reservation_recurring_fee_for_usage=ri_rate * qty,
            reservation_amortized_upfront_cost_for_usage=D(0))
    add(a=EC2, b=FRA, c=ri_common, e=usage(D(744), ri_rate),
        line_item_usage_account_id=PAYER, line_item_line_item_type="RIFee",
        line_item_line_item_description="USD 0.071 hourly fee per Linux/UNIX (Amazon VPC), m5.large instance",
        pricing_unit="Hrs", reservation_amortized_upfront_fee_for_billing_period=D(0),
        reservation_unused_amortized_upfront_fee_for_billing_period=D(0),
        reservation_unused_recurring_fee=D(0), reservation_unused_quantity=D(0),
        reservation_total_reserved_units="744", reservation_number_of_reservations="1",
        reservation_start_time="2023-06-01T00:00:00.000Z", reservation_end_time="2024-05-31T23:59:59.000Z")

    # ---- Compute Savings Plan, No Upfront, $0.25/h, 100% used ----
    sp_rate, c5_od, sp_hourly = D("0.125"), D("0.194"), D("0.25")
    sp_common = dict(
        line_item_product_code="AmazonEC2", line_item_usage_type="EUC1-BoxUsage:c5.xlarge",
        line_item_operation="RunInstances", line_item_availability_zone="eu-central-1b",
        product_product_family="Compute Instance", product_instance_type="c5.xlarge",
        product_sku="ZAZVA8H9PPR8HXQM", product_usagetype="EUC1-BoxUsage:c5.xlarge",
        savings_plan_savings_plan_a_r_n=SP_ARN,
    )
    halves = [("i-0c5c5c5c5c5c50001", "2023-12-01", "2023-12-16", 360),
              ("i-0c5c5c5c5c5c50001", "2023-12-16", "2024-01-01", 384),
              ("i-0c5c5c5c5c5c50002", "2023-12-01", "2023-12-16", 360),
              ("i-0c5c5c5c5c5c50002", "2023-12-16", "2024-01-01", 384)]
    for rid, start, end, hrs in halves:
        qty = D(hrs)
        when = dict(line_item_usage_start_date=ts(f"{start} 00:00"),
                    line_item_usage_end_date=ts(f"{end} 00:00"), line_item_resource_id=rid)
        add(a=EC2, b=FRA, c=sp_common, d=tags_prod, e=usage(qty, c5_od), f=when,
            line_item_usage_account_id=PAYER, line_item_line_item_type="SavingsPlanCoveredUsage",
            line_item_line_item_description="$0.194 per On Demand Linux c5.xlarge Instance Hour",
            pricing_term="OnDemand", pricing_unit="Hrs",
            savings_plan_savings_plan_rate=sp_rate,
            savings_plan_savings_plan_effective_cost=sp_rate * qty)
        add(a=EC2, b=FRA, c=sp_common, f=when,
            line_item_usage_account_id=PAYER, line_item_line_item_type="SavingsPlanNegation",
            line_item_usage_amount=qty, line_item_unblended_rate=-c5_od,
            line_item_unblended_cost=-(c5_od * qty), line_item_blended_rate=-c5_od,
            line_item_blended_cost=-(c5_od * qty),
            line_item_line_item_description=f"SavingsPlanNegation used by AccountId : {PAYER} and UsageSku : ZAZVA8H9PPR8HXQM")
    add(e=usage(D(744), sp_hourly),
        line_item_product_code="ComputeSavingsPlans", product_product_name="Savings Plans for AWS Compute usage",
        product_servicename="Savings Plans for AWS Compute usage", product_servicecode="ComputeSavingsPlans",
        line_item_usage_account_id=PAYER, line_item_line_item_type="SavingsPlanRecurringFee",
        line_item_usage_type="ComputeSP:1yrNoUpfront", line_item_operation="",
        line_item_line_item_description="1 year No Upfront Compute Savings Plan",
        product_usagetype="ComputeSP:1yrNoUpfront", pricing_unit="Hrs",
        savings_plan_savings_plan_a_r_n=SP_ARN,
        savings_plan_total_commitment_to_date=D(186), savings_plan_used_commitment=D(186),
        savings_plan_recurring_commitment_for_billing_period=D(186),
        savings_plan_amortized_upfront_commitment_for_billing_period=D(0),
        savings_plan_offering_type="ComputeSavingsPlans", savings_plan_payment_option="No Upfront",
        savings_plan_purchase_term="1yr", savings_plan_start_time="2023-09-01T00:00:00.000Z",
        savings_plan_end_time="2024-08-31T23:59:59.000Z")

    # ---- Tax, Credit, Refund, EdpDiscount ----
    add(a=EC2, line_item_usage_account_id=PAYER, line_item_line_item_type="Tax",
        line_item_usage_type="Tax", line_item_unblended_rate="", line_item_blended_rate="",
        line_item_unblended_cost=D("47.25"), line_item_blended_cost=D("47.25"),
        line_item_tax_type="VAT", line_item_line_item_description="Tax for product code AmazonEC2 usage type Tax")
    add(a=EC2, line_item_usage_account_id=PAYER, line_item_line_item_type="Credit",
        line_item_usage_type="EUC1-BoxUsage:t3.medium", line_item_operation="RunInstances",
        line_item_unblended_rate="", line_item_blended_rate="",
        line_item_unblended_cost=D("-25"), line_item_blended_cost=D("-25"),
        line_item_line_item_description="AWS Promotional Credit (PC-EXAMPLE-2023)")
    add(a=S3, line_item_usage_account_id=PAYER, line_item_line_item_type="Refund",
        line_item_usage_type="EUC1-TimedStorage-ByteHrs", line_item_unblended_rate="", line_item_blended_rate="",
        line_item_unblended_cost=D("-3.5"), line_item_blended_cost=D("-3.5"),
        line_item_line_item_description="Refund for Amazon S3 storage billed in error (case 1234567890)")
    add(a=EC2, b=FRA, line_item_usage_account_id=LINKED, line_item_line_item_type="EdpDiscount",
        line_item_usage_type="EUC1-BoxUsage:m5.large", line_item_operation="RunInstances",
        line_item_unblended_rate="", line_item_blended_rate="",
        line_item_unblended_cost=D("-10.5"), line_item_blended_cost=D("-10.5"),
        line_item_line_item_description="Enterprise Program Discount")

    for i, r in enumerate(rows):
        r["identity_line_item_id"] = line_item_id("cur-athena-2023-12", i)
    return rows


# --------------------------------------------------------------------------------------------
# 2. CUR 2.0 (Data Exports, standard export) — January 2024
# --------------------------------------------------------------------------------------------

# The CUR 2.0 fixed schema, as in the Data Exports table dictionary (alphabetical order there).
# Left out: opt-in columns of later table configurations (caller identity) and the
# split_line_item_* columns, which only appear with split cost allocation data.
CUR2_COLUMNS = [
    ("bill_bill_type", STR), ("bill_billing_entity", STR), ("bill_billing_period_end_date", TS),
    ("bill_billing_period_start_date", TS), ("bill_invoice_id", STR), ("bill_invoicing_entity", STR),
    ("bill_payer_account_id", STR), ("bill_payer_account_name", STR),
    ("capacity_reservation_capacity_reservation_arn", STR),
    ("capacity_reservation_capacity_reservation_status", STR),
    ("capacity_reservation_capacity_reservation_type", STR),
    ("cost_category", MAP), ("discount", MAP), ("discount_bundled_discount", DBL),
    ("discount_total_discount", DBL), ("identity_line_item_id", STR), ("identity_time_interval", STR),
    ("line_item_availability_zone", STR), ("line_item_blended_cost", DBL), ("line_item_blended_rate", STR),
    ("line_item_currency_code", STR), ("line_item_legal_entity", STR),
    ("line_item_line_item_description", STR), ("line_item_line_item_type", STR),
    ("line_item_net_unblended_cost", DBL), ("line_item_net_unblended_rate", STR),
    ("line_item_normalization_factor", DBL), ("line_item_normalized_usage_amount", DBL),
    ("line_item_operation", STR), ("line_item_product_code", STR), ("line_item_resource_id", STR),
    ("line_item_tax_type", STR), ("line_item_unblended_cost", DBL), ("line_item_unblended_rate", STR),
    ("line_item_usage_account_id", STR), ("line_item_usage_account_name", STR),
    ("line_item_usage_amount", DBL), ("line_item_usage_end_date", TS), ("line_item_usage_start_date", TS),
    ("line_item_usage_type", STR), ("pricing_currency", STR), ("pricing_lease_contract_length", STR),
    ("pricing_offering_class", STR), ("pricing_public_on_demand_cost", DBL),
    ("pricing_public_on_demand_rate", STR), ("pricing_purchase_option", STR), ("pricing_rate_code", STR),
    ("pricing_rate_id", STR), ("pricing_term", STR), ("pricing_unit", STR), ("product", MAP),
    ("product_comment", STR), ("product_fee_code", STR), ("product_fee_description", STR),
    ("product_from_location", STR), ("product_from_location_type", STR), ("product_from_region_code", STR),
    ("product_instance_family", STR), ("product_instance_type", STR), ("product_instancesku", STR),
    ("product_location", STR), ("product_location_type", STR), ("product_operation", STR),
    ("product_pricing_unit", STR), ("product_product_family", STR), ("product_region_code", STR),
    ("product_servicecode", STR), ("product_sku", STR), ("product_to_location", STR),
    ("product_to_location_type", STR), ("product_to_region_code", STR), ("product_usagetype", STR),
    ("reservation_amortized_upfront_cost_for_usage", DBL),
    ("reservation_amortized_upfront_fee_for_billing_period", DBL), ("reservation_availability_zone", STR),
    ("reservation_effective_cost", DBL), ("reservation_end_time", STR),
    ("reservation_modification_status", STR), ("reservation_net_amortized_upfront_cost_for_usage", DBL),
    ("reservation_net_amortized_upfront_fee_for_billing_period", DBL), ("reservation_net_effective_cost", DBL),
    ("reservation_net_recurring_fee_for_usage", DBL),
    ("reservation_net_unused_amortized_upfront_fee_for_billing_period", DBL),
    ("reservation_net_unused_recurring_fee", DBL), ("reservation_net_upfront_value", DBL),
    ("reservation_normalized_units_per_reservation", STR), ("reservation_number_of_reservations", STR),
    ("reservation_recurring_fee_for_usage", DBL), ("reservation_reservation_a_r_n", STR),
    ("reservation_start_time", STR), ("reservation_subscription_id", STR),
    ("reservation_total_reserved_normalized_units", STR), ("reservation_total_reserved_units", STR),
    ("reservation_units_per_reservation", STR),
    ("reservation_unused_amortized_upfront_fee_for_billing_period", DBL),
    ("reservation_unused_normalized_unit_quantity", DBL), ("reservation_unused_quantity", DBL),
    ("reservation_unused_recurring_fee", DBL), ("reservation_upfront_value", DBL),
    ("resource_tags", MAP),
    ("savings_plan_amortized_upfront_commitment_for_billing_period", DBL),
    ("savings_plan_end_time", STR), ("savings_plan_instance_type_family", STR),
    ("savings_plan_net_amortized_upfront_commitment_for_billing_period", DBL),
    ("savings_plan_net_recurring_commitment_for_billing_period", DBL),
    ("savings_plan_net_savings_plan_effective_cost", DBL), ("savings_plan_offering_type", STR),
    ("savings_plan_payment_option", STR), ("savings_plan_purchase_term", STR),
    ("savings_plan_recurring_commitment_for_billing_period", DBL), ("savings_plan_region", STR),
    ("savings_plan_savings_plan_a_r_n", STR), ("savings_plan_savings_plan_effective_cost", DBL),
    ("savings_plan_savings_plan_rate", DBL), ("savings_plan_start_time", STR),
    ("savings_plan_total_commitment_to_date", DBL), ("savings_plan_used_commitment", DBL),
]


def product_map(name, **extra):
    m = {"product_name": name, "servicename": name}
    m.update(extra)
    return m


def cur2_rows():
    p0, p1 = ts("2024-01-01 00:00"), ts("2024-02-01 00:00")
    base = {
        "bill_bill_type": "Anniversary", "bill_billing_entity": "AWS",
        "bill_billing_period_start_date": p0, "bill_billing_period_end_date": p1,
        "bill_invoice_id": "EUINDE24-2402001", "bill_invoicing_entity": "Amazon Web Services EMEA SARL",
        "bill_payer_account_id": PAYER, "bill_payer_account_name": "Example Payer",
        "cost_category": {}, "discount": {}, "resource_tags": {},
        "identity_time_interval": "2024-01-01T00:00:00Z/2024-02-01T00:00:00Z",
        "line_item_currency_code": "USD", "line_item_legal_entity": "Amazon Web Services EMEA SARL",
        "line_item_usage_start_date": p0, "line_item_usage_end_date": p1,
        "pricing_currency": "USD",
    }
    acct = {PAYER: {"line_item_usage_account_id": PAYER, "line_item_usage_account_name": "example-payer"},
            LINKED: {"line_item_usage_account_id": LINKED, "line_item_usage_account_name": "example-dev"}}
    prod_tags = {"resource_tags": {"user_cost_center": "cc-200", "user_environment": "prod",
                                   "aws_created_by": "AssumedRole:AROAEXAMPLEROLEID0001:deploy"}}
    dev_tags = {"resource_tags": {"user_environment": "dev"}}
    ai_tags = {"resource_tags": {"user_cost_center": "cc-300"}}
    ec2 = {"line_item_product_code": "AmazonEC2", "product_servicecode": "AmazonEC2"}
    s3 = {"line_item_product_code": "AmazonS3", "product_servicecode": "AmazonS3"}
    fra = {"product_region_code": "eu-central-1", "product_location": "EU (Frankfurt)",
           "product_location_type": "AWS Region"}
    iad = {"product_region_code": "us-east-1", "product_location": "US East (N. Virginia)",
           "product_location_type": "AWS Region"}
    od = {"pricing_term": "OnDemand"}
    rows = []

    def add(*parts, **kw):
        r = dict(base)
        for p in parts:
            r.update(p)
        r.update(kw)
        rows.append(r)

    EC2N, S3N = "Amazon Elastic Compute Cloud", "Amazon Simple Storage Service"

    add(ec2, fra, od, acct[PAYER], prod_tags, usage(D(744), D("0.115")),
        line_item_line_item_type="Usage", line_item_usage_type="EUC1-BoxUsage:m5.large",
        line_item_operation="RunInstances", line_item_availability_zone="eu-central-1a",
        line_item_resource_id="i-0b1c2d3e4f5a60001",
        line_item_line_item_description="$0.115 per On Demand Linux m5.large Instance Hour",
        product=product_map(EC2N, region="eu-central-1", vcpu="2", memory="8 GiB",
                            operating_system="Linux", tenancy="Shared"),
        product_instance_type="m5.large", product_instance_family="General purpose",
        product_product_family="Compute Instance", product_sku="8KTQAHWA58GUHDGC",
        product_usagetype="EUC1-BoxUsage:m5.large", product_operation="RunInstances",
        pricing_unit="Hrs", line_item_normalization_factor=D(4), line_item_normalized_usage_amount=D(2976))
    add(ec2, fra, od, acct[LINKED], dev_tags, usage(D(744), D("0.048")),
        line_item_line_item_type="Usage", line_item_usage_type="EUC1-BoxUsage:t3.medium",
        line_item_operation="RunInstances", line_item_availability_zone="eu-central-1b",
        line_item_resource_id="i-0b1c2d3e4f5a60002",
        line_item_line_item_description="$0.048 per On Demand Linux t3.medium Instance Hour",
        product=product_map(EC2N, region="eu-central-1", vcpu="2", memory="4 GiB"),
        product_instance_type="t3.medium", product_instance_family="General purpose",
        product_product_family="Compute Instance", product_sku="7W6DNQ55YG9FCPXZ",
        product_usagetype="EUC1-BoxUsage:t3.medium", product_operation="RunInstances", pricing_unit="Hrs")
    for day in (8, 9, 10):  # 0.0464 × 24 = 1.1136
        add(ec2, fra, od, acct[LINKED], usage(D(24), D("0.0464")),
            line_item_usage_start_date=ts(f"2024-01-{day:02d} 00:00"),
            line_item_usage_end_date=ts(f"2024-01-{day + 1:02d} 00:00"),
            line_item_line_item_type="Usage", line_item_usage_type="EUC1-BoxUsage:t3a.large",
            line_item_operation="RunInstances", line_item_availability_zone="eu-central-1c",
            line_item_resource_id="i-0b1c2d3e4f5a60003",
            line_item_line_item_description="$0.0464 per On Demand Linux t3a.large Instance Hour",
            product=product_map(EC2N, region="eu-central-1"),
            product_instance_type="t3a.large", product_product_family="Compute Instance",
            product_sku="Q4QTSF7H37JFW9ER", product_usagetype="EUC1-BoxUsage:t3a.large", pricing_unit="Hrs")
    add(ec2, fra, od, acct[PAYER], prod_tags, usage(D(200), D("0.0952")),
        line_item_line_item_type="Usage", line_item_usage_type="EUC1-EBS:VolumeUsage.gp3",
        line_item_operation="CreateVolume-Gp3", line_item_availability_zone="eu-central-1a",
        line_item_resource_id="vol-0e1d2c3b4a5f60001",
        line_item_line_item_description="$0.0952 per GB-month of General Purpose (gp3) provisioned storage - EU (Frankfurt)",
        product=product_map(EC2N, region="eu-central-1", volume_api_name="gp3"),
        product_product_family="Storage", product_sku="HY3BZPP2B6K8MSJF",
        product_usagetype="EUC1-EBS:VolumeUsage.gp3", pricing_unit="GB-Mo")
    add(s3, fra, od, acct[PAYER], prod_tags, usage(D(1024), D("0.0245")),
        line_item_line_item_type="Usage", line_item_usage_type="EUC1-TimedStorage-ByteHrs",
        line_item_operation="StandardStorage", line_item_resource_id="example-prod-artifacts",
        line_item_line_item_description="$0.0245 per GB - first 50 TB / month of storage used",
        product=product_map(S3N, region="eu-central-1", storage_class="General Purpose"),
        product_product_family="Storage", product_sku="YUFXQWQSCRQC9VVM",
        product_usagetype="EUC1-TimedStorage-ByteHrs", pricing_unit="GB-Mo")
    add(s3, fra, od, acct[PAYER], prod_tags, usage(D(500000), D("0.0000054")),
        line_item_line_item_type="Usage", line_item_usage_type="EUC1-Requests-Tier1",
        line_item_operation="PutObject", line_item_resource_id="example-prod-artifacts",
        line_item_line_item_description="$0.0054 per 1,000 PUT, COPY, POST, or LIST requests",
        product=product_map(S3N, region="eu-central-1"), product_product_family="API Request",
        product_sku="BGE3BSCAMJXKWPYF", product_usagetype="EUC1-Requests-Tier1", pricing_unit="Requests")
    add(s3, fra, od, acct[PAYER], usage(D(2000000), D("0.00000043")),
        line_item_line_item_type="Usage", line_item_usage_type="EUC1-Requests-Tier2",
        line_item_operation="GetObject", line_item_resource_id="example-prod-artifacts",
        line_item_line_item_description="$0.00043 per 1,000 GET and all other requests",
        product=product_map(S3N, region="eu-central-1"), product_product_family="API Request",
        product_sku="5D5QCN9MN7TJX8GE", product_usagetype="EUC1-Requests-Tier2", pricing_unit="Requests")
    add(fra, od, acct[PAYER], prod_tags, usage(D("80.25"), D("0.09")),
        line_item_product_code="AWSDataTransfer", product_servicecode="AWSDataTransfer",
        line_item_line_item_type="Usage", line_item_usage_type="EUC1-DataTransfer-Out-Bytes",
        line_item_operation="RunInstances", line_item_resource_id="i-0b1c2d3e4f5a60001",
        line_item_line_item_description="$0.090 per GB - first 10 TB / month data transfer out beyond the global free tier",
        product=product_map("AWS Data Transfer", region="eu-central-1"),
        product_product_family="Data Transfer", product_from_location="EU (Frankfurt)",
        product_from_location_type="AWS Region", product_from_region_code="eu-central-1",
        product_to_location="External", product_to_location_type="Other",
        product_sku="AA8ZSAGCS5ZDG6QH", product_usagetype="EUC1-DataTransfer-Out-Bytes", pricing_unit="GB")
    bedrock = dict(line_item_product_code="AmazonBedrock", product_servicecode="AmazonBedrock",
                   line_item_operation="InvokeModelInference",
                   line_item_resource_id="arn:aws:bedrock:us-east-1:012345678901:application-inference-profile/example-assistant",
                   product_product_family="Amazon Bedrock", pricing_unit="Units")
    add(iad, od, acct[PAYER], ai_tags, bedrock, usage(D(2500000), D("0.000003")),
        line_item_line_item_type="Usage", line_item_usage_type="USE1-Claude4.6Sonnet-input-tokens",
        line_item_line_item_description="$3.00 per million input tokens for Claude Sonnet 4.6 in US East (N. Virginia)",
        product=product_map("Amazon Bedrock", region="us-east-1", model="Claude Sonnet 4.6",
                            inferencetype="Input tokens", provider="Anthropic"),
        product_sku="EXAMPLESKUBEDROCK01", product_usagetype="USE1-Claude4.6Sonnet-input-tokens")
    add(iad, od, acct[PAYER], ai_tags, bedrock, usage(D(400000), D("0.000015")),
        line_item_line_item_type="Usage", line_item_usage_type="USE1-Claude4.6Sonnet-output-tokens",
        line_item_line_item_description="$15.00 per million output tokens for Claude Sonnet 4.6 in US East (N. Virginia)",
        product=product_map("Amazon Bedrock", region="us-east-1", model="Claude Sonnet 4.6",
                            inferencetype="Output tokens", provider="Anthropic"),
        product_sku="EXAMPLESKUBEDROCK02", product_usagetype="USE1-Claude4.6Sonnet-output-tokens")
    add(fra, od, acct[PAYER], prod_tags, usage(D(744), D("0.021")),
        line_item_product_code="AmazonRDS", product_servicecode="AmazonRDS",
        line_item_line_item_type="Usage", line_item_usage_type="EUC1-InstanceUsage:db.t4g.micro",
        line_item_operation="CreateDBInstance:0014", line_item_availability_zone="eu-central-1a",
        line_item_resource_id="arn:aws:rds:eu-central-1:012345678901:db:example-prod-db",
        line_item_line_item_description="$0.021 per RDS db.t4g.micro instance hour (or partial hour) running PostgreSQL",
        product=product_map("Amazon Relational Database Service", region="eu-central-1",
                            database_engine="PostgreSQL"),
        product_instance_type="db.t4g.micro", product_product_family="Database Instance",
        product_sku="3XZD9Q8NNVJQ5MCS", product_usagetype="EUC1-InstanceUsage:db.t4g.micro", pricing_unit="Hrs")
    add(fra, od, acct[LINKED], dev_tags, usage(D(3000000), D("0.0000002")),
        line_item_product_code="AWSLambda", product_servicecode="AWSLambda",
        line_item_line_item_type="Usage", line_item_usage_type="EUC1-Request", line_item_operation="Invoke",
        line_item_resource_id="arn:aws:lambda:eu-central-1:000987654321:function:example-ingest",
        line_item_line_item_description="$0.20 per 1M requests",
        product=product_map("AWS Lambda", region="eu-central-1"), product_product_family="Serverless",
        product_sku="Z6DSHW3NTXUX9Y4W", product_usagetype="EUC1-Request", pricing_unit="Requests")

    # ---- Compute Savings Plan, No Upfront, $0.10/h, 100% used by one c5.large-month ----
    qty, c5l_od, sp_rate = D(744), D("0.17"), D("0.1")
    sp = dict(line_item_product_code="AmazonEC2", product_servicecode="AmazonEC2",
              line_item_usage_type="EUC1-BoxUsage:c5.large", line_item_operation="RunInstances",
              line_item_availability_zone="eu-central-1b", line_item_resource_id="i-0b1c2d3e4f5a60004",
              product_instance_type="c5.large", product_product_family="Compute Instance",
              product_sku="EXAMPLESKUC5LARGE01", product_usagetype="EUC1-BoxUsage:c5.large",
              savings_plan_savings_plan_a_r_n=SP2_ARN)
    add(fra, od, acct[PAYER], prod_tags, sp, usage(qty, c5l_od),
        line_item_line_item_type="SavingsPlanCoveredUsage",
        line_item_line_item_description="$0.17 per On Demand Linux c5.large Instance Hour",
        product=product_map(EC2N, region="eu-central-1"), pricing_unit="Hrs",
        savings_plan_savings_plan_rate=sp_rate, savings_plan_savings_plan_effective_cost=sp_rate * qty)
    add(fra, acct[PAYER], sp,
        line_item_line_item_type="SavingsPlanNegation", line_item_usage_amount=qty,
        line_item_unblended_rate=-c5l_od, line_item_unblended_cost=-(c5l_od * qty),
        line_item_blended_rate=-c5l_od, line_item_blended_cost=-(c5l_od * qty),
        line_item_line_item_description=f"SavingsPlanNegation used by AccountId : {PAYER} and UsageSku : EXAMPLESKUC5LARGE01",
        product=product_map(EC2N, region="eu-central-1"))
    add(acct[PAYER], usage(qty, sp_rate),
        line_item_product_code="ComputeSavingsPlans", product_servicecode="ComputeSavingsPlans",
        line_item_line_item_type="SavingsPlanRecurringFee", line_item_usage_type="ComputeSP:1yrNoUpfront",
        line_item_line_item_description="1 year No Upfront Compute Savings Plan",
        product=product_map("Savings Plans for AWS Compute usage"),
        product_usagetype="ComputeSP:1yrNoUpfront", pricing_unit="Hrs",
        savings_plan_savings_plan_a_r_n=SP2_ARN,
        savings_plan_total_commitment_to_date=D("74.4"), savings_plan_used_commitment=D("74.4"),
        savings_plan_recurring_commitment_for_billing_period=D("74.4"),
        savings_plan_amortized_upfront_commitment_for_billing_period=D(0),
        savings_plan_offering_type="ComputeSavingsPlans", savings_plan_payment_option="No Upfront",
        savings_plan_purchase_term="1yr", savings_plan_start_time="2024-01-01T00:00:00.000Z",
        savings_plan_end_time="2024-12-31T23:59:59.000Z")

    # ---- Tax, Credit ----
    add(acct[PAYER], line_item_product_code="AmazonEC2", line_item_line_item_type="Tax",
        line_item_usage_type="Tax", line_item_unblended_cost=D("21.5"), line_item_blended_cost=D("21.5"),
        line_item_tax_type="VAT", line_item_line_item_description="Tax for product code AmazonEC2 usage type Tax",
        product=product_map(EC2N))
    add(acct[PAYER], line_item_product_code="AmazonBedrock", line_item_line_item_type="Credit",
        line_item_usage_type="USE1-Claude4.6Sonnet-input-tokens",
        line_item_unblended_cost=D("-15"), line_item_blended_cost=D("-15"),
        line_item_line_item_description="AWS Activate Credit (EXAMPLE-ACTIVATE-2024)",
        product=product_map("Amazon Bedrock"))

    for i, r in enumerate(rows):
        r["identity_line_item_id"] = line_item_id("cur2-2024-01", i)
    return rows


def summary(label, rows, total):
    by_type = {}
    for r in rows:
        t = r["line_item_line_item_type"]
        n, s = by_type.get(t, (0, D(0)))
        by_type[t] = (n + 1, s + r["line_item_unblended_cost"])
    print(f"{label}: {len(rows)} rows, sum line_item_unblended_cost = {plain(total)}")
    for t, (n, s) in by_type.items():
        print(f"  {t:<26} {n:>3} rows  {plain(s)}")


def plain(d):
    return format(d.normalize(), "f")


def main():
    a = athena_rows()
    ta = check_rows("cur-athena", a)
    write(os.path.join(ROOT, "cur-athena", "cur_athena_2023-12.parquet"), ATHENA_COLUMNS, a, fixed_rates=True)
    summary("cur-athena/cur_athena_2023-12.parquet", a, ta)
    c = cur2_rows()
    tc = check_rows("cur2", c)
    write(os.path.join(ROOT, "cur2", "cur2_2024-01.parquet"), CUR2_COLUMNS, c, fixed_rates=False)
    summary("cur2/cur2_2024-01.parquet", c, tc)


if __name__ == "__main__":
    main()
