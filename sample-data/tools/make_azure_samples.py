#!/usr/bin/env python3
"""Writes the Azure cost-details fixtures under sample-data/azure/.

    ea/amortized/ea_amortized_2023-09.csv   Microsoft's EA amortized sample, as published (older
                                            column names, UTF-8 BOM, MM/DD/YYYY), 28 rows
    ea/actual/ea_actual_2023-09.csv         the *actual* file of the same month, made consistent
                                            with the amortized one (see below)
    ea-newer/ea_cost_details_2023-09.csv    EA sample with the newer column names (CAD), 27 rows
    mca/mca_actual_2024-05.csv              hand-made MCA actual file (camelCase names, invoice ids,
                                            EUR billing / USD pricing, Azure OpenAI tokens, a
                                            savings-plan purchase and refund, marketplace)

Sources: ../shared/providers/azure/ (FinOps Foundation and Microsoft finops-toolkit, MIT; the
attribution is in sample-data/README.md). The published actual sample (11 rows) is a *subset*
of its month, not the month: 16 on-demand rows of the amortized sample are missing from it, and
the reservation- and savings-plan-covered usage is absent. A real actual file carries every
on-demand row the amortized file carries, at the same cost, and the covered usage at cost 0.
This script adds exactly those rows, so the pair reconciles the way Azure's own files do:
Σ actual Cost = Σ BilledCost written from both files. Everything else is copied byte for byte.

The MCA file follows Microsoft's "Understand the terms in your cost details file" field list
for Microsoft Customer Agreement; ids, names and prices are made up.

Run with: python3 sample-data/tools/make_azure_samples.py   (stdlib only; deterministic)
"""

import csv
import io
import os
import shutil

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SHARED = os.path.join(ROOT, "..", "shared", "providers", "azure")
OUT = os.path.join(ROOT, "sample-data", "azure")


def read(path):
    with open(path, newline="", encoding="utf-8-sig") as f:
        r = csv.reader(f)
        header = next(r)
        return header, [row for row in r]


def write(path, header, rows, bom=False):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(header)
    w.writerows(rows)
    with open(path, "w", newline="", encoding="utf-8-sig" if bom else "utf-8") as f:
        f.write(buf.getvalue())


def ea_pair():
    hdr, actual = read(os.path.join(SHARED, "ea_actual_cost_small.csv"))
    hdr2, amortized = read(os.path.join(SHARED, "ea_amortized_cost_small.csv"))
    assert hdr == hdr2
    col = {n: i for i, n in enumerate(hdr)}
    key = lambda r: tuple(r[col[c]] for c in ("Date", "MeterId", "SubscriptionId", "ResourceId", "Quantity", "Cost"))
    have = {key(r) for r in actual}
    added = []
    for r in amortized:
        if key(r) in have:
            continue
        r = list(r)
        if r[col["PricingModel"]] in ("Reservation", "SavingsPlan"):
            # Covered usage: the actual file shows it at cost 0 (the purchase is what is billed).
            r[col["Cost"]] = "0"
            r[col["EffectivePrice"]] = "0"
        added.append(r)
    assert len(added) == 18, len(added)
    shutil.copyfile(
        os.path.join(SHARED, "ea_amortized_cost_small.csv"),
        _mk(os.path.join(OUT, "ea", "amortized", "ea_amortized_2023-09.csv")),
    )
    write(os.path.join(OUT, "ea", "actual", "ea_actual_2023-09.csv"), hdr, actual + added, bom=True)


def _mk(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return path


def ea_newer():
    src = os.path.join(SHARED, "ea_cost_details_sample.csv")
    shutil.copyfile(src, _mk(os.path.join(OUT, "ea-newer", "ea_cost_details_2023-09.csv")))


MCA_HEADER = [
    "invoiceId", "previousInvoiceId", "billingAccountId", "billingAccountName", "billingProfileId",
    "billingProfileName", "invoiceSectionId", "invoiceSectionName", "partnerName", "costCenter",
    "billingPeriodStartDate", "billingPeriodEndDate", "servicePeriodStartDate", "servicePeriodEndDate",
    "date", "serviceFamily", "productOrderId", "productOrderName", "consumedService", "meterId",
    "meterName", "meterCategory", "meterSubCategory", "meterRegion", "ProductId", "ProductName",
    "SubscriptionId", "subscriptionName", "publisherType", "publisherName", "resourceGroupName",
    "ResourceId", "resourceLocation", "effectivePrice", "quantity", "unitOfMeasure", "chargeType",
    "billingCurrency", "pricingCurrency", "costInBillingCurrency", "costInPricingCurrency",
    "exchangeRatePricingToBilling", "paygCostInBillingCurrency", "tags", "PayGPrice", "frequency",
    "term", "reservationId", "reservationName", "pricingModel", "unitPrice", "benefitId", "benefitName",
]

ACC = "a1b2c3d4-0000-4000-8000-000000000001:00000000-0000-4000-8000-00000000abcd_2019-05-31"
PROFILE = "AB12-CD34-EF5-GH6"
SUB = "7f3e0c2a-1111-4a4a-9b9b-0000000000a1"
RG = "/subscriptions/" + SUB + "/resourceGroups/rg-ai/providers/"
SP_ORDER = "5d6e7f80-2222-4c4c-8d8d-0000000000b2"
SP_ID = "/providers/Microsoft.BillingBenefits/savingsPlanOrders/" + SP_ORDER + "/savingsPlans/9a8b7c6d-3333-4e4e-9f9f-0000000000c3"


def mca_row(**kw):
    base = dict(
        invoiceId="E0600ABCDE", billingAccountId=ACC, billingAccountName="Contoso Ltd",
        billingProfileId=PROFILE, billingProfileName="Contoso EU", invoiceSectionId="XY12-AB34-PJA-PGB",
        invoiceSectionName="Platform", billingPeriodStartDate="05/01/2024", billingPeriodEndDate="05/31/2024",
        SubscriptionId=SUB, subscriptionName="contoso-ai-prod", publisherType="Microsoft",
        publisherName="Microsoft", billingCurrency="EUR", pricingCurrency="USD", frequency="UsageBased",
        pricingModel="OnDemand", exchangeRatePricingToBilling="0.9",
    )
    base.update(kw)
    return [base.get(c, "") for c in MCA_HEADER]


def mca():
    openai = RG + "Microsoft.CognitiveServices/accounts/contoso-openai"
    rows = [
        # Azure OpenAI: model and token kind only in the meter name; blocks of 1K tokens.
        mca_row(date="05/03/2024", serviceFamily="AI + Machine Learning", consumedService="Microsoft.CognitiveServices",
                meterId="0b1c2d3e-0001-4000-8000-0000000000d1", meterName="gpt-4o-mini-0718-Inp-glbl Tokens",
                meterCategory="Cognitive Services", meterSubCategory="Azure OpenAI", meterRegion="Sweden Central",
                ProductId="DZH318Z0BQ4L", ProductName="Azure OpenAI GPT-4o mini Inp-glbl Tokens",
                ResourceId=openai, resourceGroupName="rg-ai", resourceLocation="swedencentral",
                effectivePrice="0.00015", quantity="12000", unitOfMeasure="1K", chargeType="Usage",
                costInBillingCurrency="1.62", costInPricingCurrency="1.8", paygCostInBillingCurrency="1.62",
                PayGPrice="0.00015", unitPrice="0.00015", tags='{"app":"support-bot","team":"cx"}'),
        mca_row(date="05/03/2024", serviceFamily="AI + Machine Learning", consumedService="Microsoft.CognitiveServices",
                meterId="0b1c2d3e-0002-4000-8000-0000000000d2", meterName="gpt 4o 0513 Output global Tokens",
                meterCategory="Cognitive Services", meterSubCategory="Azure OpenAI", meterRegion="Sweden Central",
                ProductId="DZH318Z0BQ4M", ProductName="Azure OpenAI GPT-4o Output global Tokens",
                ResourceId=openai, resourceGroupName="rg-ai", resourceLocation="swedencentral",
                effectivePrice="0.015", quantity="250", unitOfMeasure="1K", chargeType="Usage",
                costInBillingCurrency="3.375", costInPricingCurrency="3.75", paygCostInBillingCurrency="3.375",
                PayGPrice="0.015", unitPrice="0.015", tags='{"app":"support-bot","team":"cx"}'),
        mca_row(date="05/04/2024", serviceFamily="AI + Machine Learning", consumedService="Microsoft.CognitiveServices",
                meterId="0b1c2d3e-0003-4000-8000-0000000000d3", meterName="gpt-4o-mini-0718 cached Inp glbl Tokens",
                meterCategory="Cognitive Services", meterSubCategory="Azure OpenAI", meterRegion="Sweden Central",
                ProductId="DZH318Z0BQ4N", ProductName="Azure OpenAI GPT-4o mini cached Inp glbl Tokens",
                ResourceId=openai, resourceGroupName="rg-ai", resourceLocation="swedencentral",
                effectivePrice="0.075", quantity="2", unitOfMeasure="1M", chargeType="Usage",
                costInBillingCurrency="0.135", costInPricingCurrency="0.15", paygCostInBillingCurrency="0.135",
                PayGPrice="0.075", unitPrice="0.075", tags='{"app":"support-bot"}'),
        # A meter no rule knows: kept, its model and token class left NULL and counted.
        mca_row(date="05/04/2024", serviceFamily="AI + Machine Learning", consumedService="Microsoft.CognitiveServices",
                meterId="0b1c2d3e-0004-4000-8000-0000000000d4", meterName="Provisioned Managed Global PTU",
                meterCategory="Cognitive Services", meterSubCategory="Azure OpenAI", meterRegion="Sweden Central",
                ProductId="DZH318Z0BQ4P", ProductName="Azure OpenAI Provisioned Managed Global",
                ResourceId=openai, resourceGroupName="rg-ai", resourceLocation="swedencentral",
                effectivePrice="1", quantity="24", unitOfMeasure="1 Hour", chargeType="Usage",
                costInBillingCurrency="21.6", costInPricingCurrency="24", paygCostInBillingCurrency="21.6",
                PayGPrice="1", unitPrice="1"),
        # VM usage covered by a savings plan (actual view: cost 0, the purchase is billed).
        mca_row(date="05/05/2024", serviceFamily="Compute", consumedService="Microsoft.Compute",
                meterId="0b1c2d3e-0005-4000-8000-0000000000d5", meterName="D4s v5", meterCategory="Virtual Machines",
                meterSubCategory="Dsv5 Series", meterRegion="EU North", ProductId="DZH318Z0BQ5A",
                ProductName="Virtual Machines Dsv5 Series - D4s v5 - EU North",
                ResourceId="/subscriptions/" + SUB + "/resourceGroups/rg-web/providers/Microsoft.Compute/virtualMachines/web-01",
                resourceGroupName="rg-web", resourceLocation="northeurope", effectivePrice="0", quantity="24",
                unitOfMeasure="1 Hour", chargeType="Usage", costInBillingCurrency="0", costInPricingCurrency="0",
                paygCostInBillingCurrency="4.1472", PayGPrice="0.192", unitPrice="0.192", pricingModel="SavingsPlan",
                benefitId=SP_ID, benefitName="Compute_SavingsPlan_2024", productOrderId=SP_ORDER,
                tags='{"app":"web","team":"platform"}'),
        # The savings plan's monthly charge, and a partial refund of it.
        mca_row(date="05/01/2024", serviceFamily="Compute", consumedService="Microsoft.BillingBenefits",
                meterId="", meterName="Compute Savings Plan", meterCategory="Savings Plan",
                ProductId="DZH318Z0BQ5B", ProductName="Compute Savings Plan, 1 Year",
                ResourceId=SP_ID, resourceLocation="global", effectivePrice="100", quantity="1",
                unitOfMeasure="1 Hour", chargeType="Purchase", costInBillingCurrency="90",
                costInPricingCurrency="100", paygCostInBillingCurrency="90", PayGPrice="100", unitPrice="100",
                frequency="Recurring", term="12", pricingModel="SavingsPlan", benefitId=SP_ID,
                benefitName="Compute_SavingsPlan_2024", productOrderId=SP_ORDER),
        mca_row(date="05/20/2024", serviceFamily="Compute", consumedService="Microsoft.BillingBenefits",
                meterId="", meterName="Compute Savings Plan", meterCategory="Savings Plan",
                ProductId="DZH318Z0BQ5B", ProductName="Compute Savings Plan, 1 Year",
                ResourceId=SP_ID, resourceLocation="global", effectivePrice="-10", quantity="1",
                unitOfMeasure="1 Hour", chargeType="Refund", costInBillingCurrency="-9",
                costInPricingCurrency="-10", paygCostInBillingCurrency="-9", PayGPrice="10", unitPrice="10",
                frequency="OneTime", term="12", pricingModel="SavingsPlan", benefitId=SP_ID,
                benefitName="Compute_SavingsPlan_2024", productOrderId=SP_ORDER),
        # Storage in blocks of 10K operations, in a region the lookup spells "EU West".
        mca_row(date="05/06/2024", serviceFamily="Storage", consumedService="Microsoft.Storage",
                meterId="0b1c2d3e-0006-4000-8000-0000000000d6", meterName="Hot Read Operations",
                meterCategory="Storage", meterSubCategory="Tiered Block Blob", meterRegion="EU West",
                ProductId="DZH318Z0BQ6A", ProductName="Blob Storage - Hot - Read Operations",
                ResourceId="/subscriptions/" + SUB + "/resourceGroups/rg-web/providers/Microsoft.Storage/storageAccounts/contosoweb",
                resourceGroupName="rg-web", resourceLocation="EU West", effectivePrice="0.0044", quantity="37.5",
                unitOfMeasure="10K", chargeType="Usage", costInBillingCurrency="0.1485", costInPricingCurrency="0.165",
                paygCostInBillingCurrency="0.1485", PayGPrice="0.0044", unitPrice="0.0044", tags='{"app":"web"}'),
        # Marketplace SaaS, billed by Microsoft for a third-party publisher.
        mca_row(date="05/01/2024", serviceFamily="Other", consumedService="Microsoft.SaaS",
                meterId="0b1c2d3e-0007-4000-8000-0000000000d7", meterName="Pro plan", meterCategory="SaaS",
                ProductId="DZH318Z0BQ7A", ProductName="Datadog - Pro plan",
                ResourceId="/subscriptions/" + SUB + "/resourceGroups/rg-ops/providers/Microsoft.SaaS/resources/datadog",
                resourceGroupName="rg-ops", resourceLocation="global", effectivePrice="15", quantity="3",
                unitOfMeasure="1/Month", chargeType="Purchase", costInBillingCurrency="40.5",
                costInPricingCurrency="45", paygCostInBillingCurrency="40.5", PayGPrice="15", unitPrice="15",
                frequency="Recurring", publisherType="Marketplace", publisherName="Datadog"),
    ]
    write(os.path.join(OUT, "mca", "mca_actual_2024-05.csv"), MCA_HEADER, rows)


if __name__ == "__main__":
    ea_pair()
    ea_newer()
    mca()
    print("wrote", OUT)
