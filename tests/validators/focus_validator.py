#!/usr/bin/env python3
"""Run the FinOps focus-validator (2.2.1) on one file and print a JSON summary.

Run it with the validators venv's python (see .ci/install-validators.sh); stdlib only.

    focus_validator.py --data-file X.parquet [--version 1.2] [--allow RULE_ID ...]
                       [--allow-file FILE] [--applicability-criteria ALL] [--details]

It runs, from inside site-packages (the validator opens
focus_validator/rules/currency_codes.csv relative to the current directory):

    focus-validator --data-file ABS --validate-version 1.2 --block-download \
        --applicability-criteria ALL --output-type unittest --output-destination TMP.xml

and reads the JUnit XML (one <testcase> per rule: <failure>, <skipped>, <error>, or pass).
The validator exits 0 even when rules fail, so the XML is the verdict.

stdout: {"total", "pass", "fail", "skipped", "failures": [{"rule", "message", ...}],
         "root_causes": [...], "unexpected_failures": [...], ...}
A failed Composite rule (an AND/OR of other rules) counts as expected when all of its
failed child rules are expected, so the allow-list only needs the root-cause rule ids.

Exit: 0 no unexpected failure, 1 unexpected failures, 2 the validator crashed / no report.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

DEFAULT_DIR = os.environ.get("TALLY_VALIDATORS_DIR") or os.path.expanduser("~/.cache/tally-validators")


def find_venv(explicit: str | None) -> str:
    if explicit:
        return explicit
    # Running under the venv's python: use that venv.
    if os.path.exists(os.path.join(sys.prefix, "bin", "focus-validator")):
        return sys.prefix
    return os.path.join(DEFAULT_DIR, "venv")


def site_packages(venv: str) -> str:
    hits = sorted(glob.glob(os.path.join(venv, "lib", "python3*", "site-packages", "focus_validator")))
    if not hits:
        raise FileNotFoundError(f"focus_validator not installed in {venv} (run .ci/install-validators.sh)")
    return os.path.dirname(hits[-1])


def load_model(site: str, version: str, rule_set_path: str | None) -> dict:
    """The rule model JSON (for MustSatisfy texts and Composite children); {} if not found."""
    dirs = [rule_set_path] if rule_set_path else []
    dirs.append(os.path.join(site, "focus_validator", "rules"))
    for d in dirs:
        for path in sorted(glob.glob(os.path.join(d, f"model-{version}*.json")), reverse=True):
            try:
                with open(path, encoding="utf-8") as f:
                    return json.load(f).get("ModelRules", {})
            except (OSError, ValueError):
                continue
    return {}


def child_rule_ids(node) -> list[str]:
    out: list[str] = []
    if isinstance(node, dict):
        if node.get("CheckFunction") == "CheckModelRule" and node.get("ModelRuleId"):
            out.append(node["ModelRuleId"])
        for v in node.values():
            out.extend(child_rule_ids(v))
    elif isinstance(node, list):
        for v in node:
            out.extend(child_rule_ids(v))
    return out


def parse_junit(path: str) -> tuple[dict, list[dict]]:
    root = ET.parse(path).getroot()
    if root.tag != "testsuites":
        raise ValueError(f"unexpected XML root <{root.tag}>")
    cases = []
    for tc in root.iter("testcase"):
        name = tc.get("name", "")
        rule, _, check = name.partition(" :: ")
        status, message = "pass", ""
        for child in tc:
            if child.tag == "failure":
                status, message = "fail", child.get("message") or ""
                rule = child.get("name") or rule
            elif child.tag == "error":  # e.g. missing columns; listed under testsuite "Base"
                status, message = "error", child.get("message") or ""
            elif child.tag == "skipped":
                status, message = "skipped", child.get("message") or ""
        cases.append({"rule": rule.strip(), "check": check.strip(), "status": status, "message": message})
    return dict(root.attrib), cases


# "❌ Rule-Id: FAIL  (violations=200, msg=..., 6.4ms)" (icons may be [FAIL] on non-UTF-8 stdout)
_CONSOLE_LINE = re.compile(r"^\S+\s+(?P<rule>[A-Za-z0-9_]+(?:-[A-Za-z0-9_]+)+): (?P<status>PASS|FAIL|SKIPPED)\s*(?:\((?P<extra>.*)\))?\s*$")


def console_details(cmd_base: list[str], site: str, env: dict, timeout: float) -> dict:
    """Second, console-mode run: violation counts and the validator's own messages."""
    p = subprocess.run(cmd_base, cwd=site, env=env, capture_output=True, text=True, timeout=timeout)
    out = {}
    for line in p.stdout.splitlines():
        m = _CONSOLE_LINE.match(line)
        if not m or m.group("status") != "FAIL":
            continue
        extra = m.group("extra") or ""
        d = {}
        v = re.search(r"violations=(\d+)", extra)
        if v:
            d["violations"] = int(v.group(1))
        msg = re.search(r"msg=(.*?)(?:, [\d.]+ms)?$", extra)
        if msg:
            d["detail"] = msg.group(1)
        out[m.group("rule")] = d
    return out


def read_allow(args) -> set[str]:
    allow: set[str] = set()
    for a in args.allow or []:
        allow.update(x.strip() for x in a.split(",") if x.strip())
    for path in args.allow_file or []:
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.split("#", 1)[0].strip()
                if line:
                    allow.add(line)
    return allow


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-file", required=True)
    ap.add_argument("--version", default="1.2", help="FOCUS version (offline only 1.2 is bundled)")
    ap.add_argument("--allow", action="append", metavar="RULE_ID", help="expected failing rule id (repeatable, or comma-separated)")
    ap.add_argument("--allow-file", action="append", help="file of expected rule ids, one per line, # comments")
    ap.add_argument("--applicability-criteria", default="ALL", help="ALL (default), a comma list, or '' for none")
    ap.add_argument("--rule-set-path", help="folder with model-<version>*.json (needed for 1.3/1.4 offline)")
    ap.add_argument("--venv", help="validators venv (default: this interpreter's venv, else $TALLY_VALIDATORS_DIR/venv)")
    ap.add_argument("--details", action="store_true", help="second console-mode run to add violation counts and messages")
    ap.add_argument("--keep-xml", help="copy the JUnit XML here")
    ap.add_argument("--timeout", type=float, default=1800)
    args = ap.parse_args()

    allow = read_allow(args)
    data_file = os.path.abspath(args.data_file)
    summary: dict = {"tool": "focus-validator", "data_file": data_file, "version": args.version}

    def crash(msg: str, **extra) -> int:
        summary.update({"crashed": True, "error": msg, **extra})
        print(json.dumps(summary, indent=2))
        return 2

    try:
        venv = find_venv(args.venv)
        site = site_packages(venv)
    except FileNotFoundError as e:
        return crash(str(e))
    exe = os.path.join(venv, "bin", "focus-validator")
    if not os.path.exists(data_file):
        return crash(f"no such file: {data_file}")

    with tempfile.TemporaryDirectory(prefix="focus-validator-") as tmp:
        xml_path = os.path.join(tmp, "report.xml")
        log_path = os.path.join(tmp, "validator.log")
        # The packaged logging.yaml writes a DEBUG log to ./focus_validator_detailed.log, i.e.
        # into site-packages; send it to the temp dir (JSON is valid YAML for its loader).
        log_cfg = os.path.join(tmp, "logging.yaml")
        with open(log_cfg, "w", encoding="utf-8") as f:
            json.dump({
                "version": 1, "disable_existing_loggers": False,
                "formatters": {"f": {"format": "%(asctime)s %(levelname).1s %(name)s:%(lineno)d %(message)s"}},
                "handlers": {"file": {"class": "logging.FileHandler", "filename": log_path, "formatter": "f", "level": "INFO"}},
                "root": {"level": "INFO", "handlers": ["file"]},
            }, f)
        env = dict(os.environ, LOGGING_CONFIG=log_cfg, PYTHONIOENCODING="utf-8")

        base = [exe, "--data-file", data_file, "--validate-version", args.version, "--block-download"]
        if args.applicability_criteria:
            base += ["--applicability-criteria", args.applicability_criteria]
        if args.rule_set_path:
            base += ["--rule-set-path", os.path.abspath(args.rule_set_path)]
        cmd = base + ["--output-type", "unittest", "--output-destination", xml_path]
        summary["command"] = f"cd {site} && " + " ".join(cmd)

        t0 = time.monotonic()
        try:
            p = subprocess.run(cmd, cwd=site, env=env, capture_output=True, text=True, timeout=args.timeout)
        except subprocess.TimeoutExpired:
            return crash(f"timed out after {args.timeout:.0f} s")
        summary["seconds"] = round(time.monotonic() - t0, 2)

        def tail(text: str, n: int = 25) -> str:
            return "\n".join(text.strip().splitlines()[-n:])

        if p.returncode != 0 or not os.path.exists(xml_path):
            log = open(log_path, encoding="utf-8", errors="replace").read() if os.path.exists(log_path) else ""
            return crash(f"focus-validator exited {p.returncode}" + ("" if os.path.exists(xml_path) else " without a report"),
                         stderr=tail(p.stderr), stdout=tail(p.stdout, 10), log=tail(log, 10))
        if args.keep_xml:
            with open(xml_path, "rb") as src, open(args.keep_xml, "wb") as dst:
                dst.write(src.read())
        try:
            attrs, cases = parse_junit(xml_path)
        except (ET.ParseError, ValueError) as e:
            return crash(f"unreadable JUnit report: {e}")

        details = {}
        if args.details:
            t1 = time.monotonic()
            try:
                details = console_details(base, site, env, args.timeout)
            except subprocess.TimeoutExpired:
                pass
            summary["details_seconds"] = round(time.monotonic() - t1, 2)

    if not cases:
        return crash("JUnit report has no test cases", report_attributes=attrs)

    model = load_model(site, args.version, args.rule_set_path)
    counts = {"pass": 0, "fail": 0, "skipped": 0}
    failed: dict[str, dict] = {}
    for c in cases:
        if c["status"] in ("fail", "error"):
            counts["fail"] += 1
            rule = model.get(c["rule"], {})
            must = (rule.get("ValidationCriteria") or {}).get("MustSatisfy", "")
            msg = c["message"]
            if must and c["status"] == "fail":
                msg = f"{msg}: {must}" if msg else must
            entry = {"rule": c["rule"], "message": msg, "check": c["check"] or rule.get("Function", "")}
            if c["status"] == "error":
                entry["errored"] = True
            if rule.get("Function") == "Composite":
                entry["composite"] = True
            entry.update(details.get(c["rule"], {}))
            failed[c["rule"]] = entry
        else:
            counts[c["status"]] += 1

    # A failed Composite rule is explained when each of its failed children is allowed or explained.
    memo: dict[str, bool] = {}

    def expected(rule_id: str, depth: int = 0) -> bool:
        if rule_id in allow:
            return True
        if rule_id in memo or depth > 50:
            return memo.get(rule_id, False)
        memo[rule_id] = False  # cycle guard
        ok = False
        entry = failed.get(rule_id)
        if entry and entry.get("composite"):
            kids = [k for k in child_rule_ids((model.get(rule_id) or {}).get("ValidationCriteria", {}).get("Requirement")) if k in failed]
            entry["failed_children"] = kids
            ok = bool(kids) and all(expected(k, depth + 1) for k in kids)
        memo[rule_id] = ok
        return ok

    failures = sorted(failed.values(), key=lambda e: e["rule"])
    for e in failures:
        expected(e["rule"])
    unexpected = [e for e in failures if not expected(e["rule"])]

    summary.update({
        "total": len(cases),
        "pass": counts["pass"],
        "fail": counts["fail"],
        "skipped": counts["skipped"],
        "report_attributes": {k: attrs.get(k) for k in ("tests", "failures", "errors", "skipped")},
        "failures": failures,
        "root_causes": [e["rule"] for e in failures if not e.get("composite")],
        "unexpected_failures": unexpected,
        "allowed_but_not_failing": sorted(a for a in allow if a not in failed),
    })
    print(json.dumps(summary, indent=2))
    return 1 if unexpected else 0


if __name__ == "__main__":
    sys.exit(main())
