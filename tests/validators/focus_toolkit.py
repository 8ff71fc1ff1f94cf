#!/usr/bin/env python3
"""Run focus-data-toolkit 0.14.1's FOCUS 1.4 lint on one file and print a JSON summary.

Run it with the validators venv's python (see .ci/install-validators.sh); stdlib only.

    focus_toolkit.py FILE [--dataset cost-and-usage] [--supports COND ...] [--allow RULE[:Column] ...]
    focus_toolkit.py bundle DIR [--allow RULE_ID ...]        # focus-toolkit validate-bundle (cross-dataset)

`validate` runs `focus-toolkit validate --dataset D FILE`. Its stdout is
    FILE: structural+semantic lint OK (STRUCTURAL_VALID, SEMANTIC_VALID)
    FILE: N violation(s)
      [LEVEL:rule] Column row i: message          (at most 50 such lines)
and it exits 0 ok / 1 violations / 2 unreadable input. An uncaught exception also exits 1 (with a
traceback), so the status line, not the exit code, tells a lint failure from a crash. When more than
50 violations exist, the full list is recomputed in-process with the same library call the CLI makes.

An allow entry is a rule name (`null_not_allowed`) or rule:Column (`null_not_allowed:InvoiceId`).
Exit: 0 no unexpected violation, 1 unexpected violations, 2 crash / unreadable input.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from collections import Counter

DEFAULT_DIR = os.environ.get("TALLY_VALIDATORS_DIR") or os.path.expanduser("~/.cache/tally-validators")
MAX_LISTED = 200  # violations printed in the JSON (counts are always complete)

_STATUS = re.compile(r"^(?P<file>.*): (?:(?P<ok>structural\+semantic lint OK) \((?P<levels>[^)]*)\)|(?P<n>\d+) violation\(s\))\s*$")
_MSG = re.compile(r"^  \[(?P<level>[A-Z_]+):(?P<rule>[A-Za-z0-9_]+)\] (?P<column>\S+?)(?: row (?P<row>\d+))?: (?P<message>.*)$")


def find_tool(explicit_venv: str | None) -> str:
    for venv in ([explicit_venv] if explicit_venv else [sys.prefix, os.path.join(DEFAULT_DIR, "venv-toolkit"), os.path.join(DEFAULT_DIR, "venv")]):
        exe = os.path.join(venv, "bin", "focus-toolkit")
        if os.path.exists(exe):
            return exe
    raise FileNotFoundError("focus-toolkit not found (run .ci/install-validators.sh)")


def allowed(v: dict, allow: set[str]) -> bool:
    return v["rule"] in allow or f'{v["rule"]}:{v.get("column")}' in allow


def full_violations(path: str, dataset: str, supports: list[str]) -> list[dict] | None:
    """All violations via the library (the CLI prints only 50). None if the library is not importable here."""
    try:
        from focus_data_toolkit.io.row_source import read_source_rows
        from focus_data_toolkit.model.capabilities import CapabilityProfile
        from focus_data_toolkit.model.validator import lint_focus_1_4_structure, resolve_dataset
    except ImportError:
        return None
    name = resolve_dataset(dataset.replace("-", " "))
    profile = CapabilityProfile(frozenset(supports), source="cli") if supports else CapabilityProfile.none()
    report = lint_focus_1_4_structure(name, read_source_rows(path, dataset=name), profile=profile)
    return [{"rule": v.rule, "level": v.level, "column": v.column, "row": v.row_index, "message": v.message}
            for v in report.violations]


def emit(summary: dict, code: int) -> int:
    print(json.dumps(summary, indent=2))
    return code


def cmd_validate(args, allow: set[str]) -> int:
    path = os.path.abspath(args.file)
    summary: dict = {"tool": "focus-toolkit validate", "data_file": path, "dataset": args.dataset}
    try:
        exe = find_tool(args.venv)
    except FileNotFoundError as e:
        return emit({**summary, "crashed": True, "error": str(e)}, 2)
    cmd = [exe, "validate", "--dataset", args.dataset]
    for s in args.supports or []:
        cmd += ["--supports", s]
    cmd.append(path)
    summary["command"] = " ".join(cmd)
    t0 = time.monotonic()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout,
                           env=dict(os.environ, PYTHONIOENCODING="utf-8"))
    except subprocess.TimeoutExpired:
        return emit({**summary, "crashed": True, "error": f"timed out after {args.timeout:.0f} s"}, 2)
    summary["seconds"] = round(time.monotonic() - t0, 2)
    summary["exit_code"] = p.returncode
    lines = p.stdout.splitlines()
    status = next((m for m in map(_STATUS.match, lines) if m), None)

    def crash(msg: str) -> int:
        return emit({**summary, "crashed": True, "error": msg,
                     "stdout": "\n".join(lines[-10:]), "stderr": "\n".join(p.stderr.strip().splitlines()[-25:])}, 2)

    if p.returncode not in (0, 1) or status is None:
        return crash(f"focus-toolkit exited {p.returncode} without a lint result")
    ok = bool(status.group("ok"))
    if ok != (p.returncode == 0):
        return crash(f"exit code {p.returncode} disagrees with status line {status.group(0)!r}")

    listed = []
    for line in lines:
        m = _MSG.match(line)
        if m:
            listed.append({"rule": m.group("rule"), "level": m.group("level"),
                           "column": None if m.group("column") == "-" else m.group("column"),
                           "row": int(m.group("row")) if m.group("row") else None, "message": m.group("message")})
    total = 0 if ok else int(status.group("n"))
    violations, complete = listed, len(listed) >= total
    if not complete:
        try:
            more = full_violations(path, args.dataset, args.supports or [])
        except Exception as e:  # noqa: BLE001 - keep the CLI's partial result
            more, summary["full_list_error"] = None, repr(e)
        if more is not None and len(more) == total:
            violations, complete = more, True

    unexpected = [v for v in violations if not allowed(v, allow)]
    summary.update({
        "ok": ok,
        "levels_passed": [x.strip() for x in (status.group("levels") or "").split(",") if x.strip()],
        "violations_total": total,
        "complete": complete,
        "by_rule": dict(Counter(f'{v["rule"]}:{v["column"] or "-"}' for v in violations)),
        "failures": violations[:MAX_LISTED],
        "unexpected_total": len(unexpected) if complete else None,
        "unexpected_failures": unexpected[:MAX_LISTED],
    })
    # With an incomplete list, unlisted violations cannot be shown to be allowed.
    return emit(summary, 1 if unexpected or (not complete and total > 0) else 0)


def cmd_bundle(args, allow: set[str]) -> int:
    directory = os.path.abspath(args.directory)
    summary: dict = {"tool": "focus-toolkit validate-bundle", "directory": directory}
    try:
        exe = find_tool(args.venv)
    except FileNotFoundError as e:
        return emit({**summary, "crashed": True, "error": str(e)}, 2)
    cmd = [exe, "validate-bundle", "--directory", directory, "--format", "json"]
    summary["command"] = " ".join(cmd)
    t0 = time.monotonic()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    summary["seconds"] = round(time.monotonic() - t0, 2)
    summary["exit_code"] = p.returncode
    try:
        report = json.loads(p.stdout)
    except ValueError:
        report = None
    if p.returncode not in (0, 1) or not isinstance(report, dict) or "ok" not in report:
        return emit({**summary, "crashed": True, "error": f"focus-toolkit exited {p.returncode} without a JSON report",
                     "stderr": "\n".join(p.stderr.strip().splitlines()[-25:])}, 2)
    diags = report.get("diagnostics", [])
    errors = [d for d in diags if d.get("severity") == "ERROR"]
    unexpected = [d for d in errors if d.get("rule_id") not in allow]
    summary.update({"ok": report["ok"], "checks_run": report.get("checks_run"), "counts": report.get("counts"),
                    "failures": errors, "diagnostics": diags, "unexpected_failures": unexpected})
    return emit(summary, 1 if unexpected or (not report["ok"] and not errors) else 0)


def main() -> int:
    argv = sys.argv[1:]
    bundle = bool(argv) and argv[0] == "bundle"
    if argv and argv[0] in ("bundle", "validate"):
        argv = argv[1:]
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    if bundle:
        ap.add_argument("directory")
    else:
        ap.add_argument("file")
        ap.add_argument("--dataset", default="cost-and-usage",
                        help="cost-and-usage | contract-commitment | billing-period | invoice-detail")
        ap.add_argument("--supports", action="append",
                        help="SupportsUnitPricing / SupportsMultiplePricingCategories (repeatable)")
    ap.add_argument("--allow", action="append", metavar="RULE", help="expected rule (repeatable or comma-separated)")
    ap.add_argument("--venv", help="venv holding focus-toolkit (default: this interpreter's, else $TALLY_VALIDATORS_DIR)")
    ap.add_argument("--timeout", type=float, default=1800)
    args = ap.parse_args(argv)
    allow = {x.strip() for a in (args.allow or []) for x in a.split(",") if x.strip()}
    return cmd_bundle(args, allow) if bundle else cmd_validate(args, allow)


if __name__ == "__main__":
    sys.exit(main())
