#!/usr/bin/env python3
"""Benchmark: tally against DuckDB and focus_converters on the same AWS CUR files.

    benches/setup.sh                       # once: a venv with the pinned peers
    python3 benches/run.py                 # 1M rows, CSV and Parquet, all three tools
    python3 benches/run.py --rows 1000000 --rows 10000000 --peers tally,duckdb
    python3 benches/run.py --repeat 3      # each tool three times, interleaved; medians
    python3 benches/run.py --files 200 --peers tally,duckdb   # the same rows split into 200 files

For each size it writes the inputs with `tally generate aws_cur` (deterministic: the same file
on every machine), runs every tool under `/usr/bin/time -v` one after the other, reads back
what each wrote (rows, Σ BilledCost, Σ EffectiveCost) and prints one table: wall time,
user+sys, CPU utilisation ((user+sys)/wall; 200% = both cores of a 2-core machine), peak RSS,
rows/s, the speed-up of tally over the peer, and whether the outputs agree. The table also goes
to <work>/results.md. Never part of the test suite.

With --files N the generated input is split into N files of equal row counts (CSV: the header
and a run of lines each; Parquet: written by DuckDB from the same rows, in order), which tally
reads as one folder and DuckDB as one glob: what a many-part export costs per file.

With --repeat N the tools take turns N times (tally, duckdb, focus-converter, tally, ...), so a
shared machine's drift touches all of them alike; each row is then the run with the median wall
time (its user+sys and RSS), followed by the fastest and slowest wall time.

Agreement: tally and DuckDB must write the same rows and the same totals to the last digit.
focus_converters keeps AWS's SavingsPlanNegation rows (tally folds them into the covered usage
row, see sql/normalize/aws_cur.sql), so it writes more rows; its BilledCost (a float) must
still add up to the same total to the cent.
"""
import argparse
import datetime
import glob
import os
import platform
import re
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
VENV = os.environ.get("TALLY_BENCH_VENV", os.path.join(ROOT, ".bench-venv"))
PY = os.path.join(VENV, "bin", "python")
FOCUS_CONVERTER = os.path.join(VENV, "bin", "focus-converter")
TIMEOUT = 30 * 60


def measure(cmd, log):
    """Runs cmd under /usr/bin/time -v; returns wall, user+sys, peak RSS (bytes), exit code."""
    start = time.monotonic()
    with open(log, "w") as out:
        p = subprocess.Popen(["/usr/bin/time", "-v"] + cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                             start_new_session=True)
        try:
            rc = p.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            # focus_converters does not exit after some errors: stop its whole process group.
            os.killpg(p.pid, 9)
            p.wait()
            rc = "timeout"
    wall = time.monotonic() - start
    text = open(log, encoding="utf-8", errors="replace").read()

    def field(name):
        m = re.search(rf"{re.escape(name)}: ([0-9.]+)", text)
        return float(m.group(1)) if m else float("nan")

    cpu = field("User time (seconds)") + field("System time (seconds)")
    rss = field("Maximum resident set size (kbytes)") * 1024
    return wall, cpu, rss, rc


def totals(parquet_glob):
    """(rows, Σ BilledCost, Σ EffectiveCost) of the Parquet files, exact where the column is decimal."""
    code = (
        "import duckdb,sys\n"
        "r=duckdb.sql(\"SELECT count(*), sum(BilledCost), sum(EffectiveCost) FROM read_parquet('%s')\").fetchall()[0]\n"
        "print(r[0]); print(r[1]); print(r[2])\n" % parquet_glob
    )
    out = subprocess.run([PY, "-c", code], capture_output=True, text=True)
    if out.returncode != 0:
        return None
    rows, billed, effective = out.stdout.split()
    return int(rows), billed, effective


def tally_files(out):
    # A fresh output root holds only the current version's files.
    return os.path.join(out, "cost_and_usage", "**", "*.parquet")


def run_tool(tool, src, kind, work, log_dir):
    out = os.path.join(work, f"out-{tool}-{os.path.basename(src)}")
    shutil.rmtree(out, ignore_errors=True)
    log = os.path.join(log_dir, f"{tool}-{os.path.basename(src)}.log")
    parts = os.path.isdir(src)
    if tool == "tally":
        folder = src if parts else os.path.join(work, f"in-{os.path.basename(src)}")
        if not parts:
            shutil.rmtree(folder, ignore_errors=True)
            os.makedirs(folder)
            os.symlink(src, os.path.join(folder, os.path.basename(src)))
        cmd = [os.path.join(ROOT, "target", "release", "tally"), "run", "--source", "file://" + folder + "/",
               "--output", "file://" + out, "--format", "aws_cur", "--log", "warn"]
        files = tally_files(out)
    elif tool == "duckdb":
        os.makedirs(out)
        scan = os.path.join(src, f"*.{kind}") if parts else src
        cmd = [PY, os.path.join(HERE, "duckdb_peer.py"), scan, os.path.join(out, "focus.parquet")]
        files = os.path.join(out, "*.parquet")
    else:
        os.makedirs(out)
        # Its `aws-cur` provider reads the legacy CSV headers (and parses their dates); `aws`
        # reads the CUR 2.0 / Athena Parquet names.
        provider = ["aws-cur"] if kind == "csv" else ["aws", "--parquet-data-format", "file"]
        cmd = [FOCUS_CONVERTER, "convert", "--provider"] + provider + ["--data-path", src, "--data-format", kind,
                                                                       "--export-path", out + "/", "--export-format", "parquet"]
        files = os.path.join(out, "*.parquet")
    wall, cpu, rss, rc = measure(cmd, log)
    result = totals(files) if rc == 0 and glob.glob(files, recursive=True) else None
    return {"tool": tool, "wall": wall, "cpu": cpu, "rss": rss, "rc": rc, "totals": result, "log": log}


def split(src, kind, files, work):
    """`src` as `files` files of equal row counts in a folder of their own (made once). CSV is
    split by lines, which holds for `tally generate`'s files (no record spans lines)."""
    folder = os.path.join(work, f"{os.path.basename(src)}.x{files}")
    if os.path.isdir(folder):
        return folder
    tmp = folder + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    if kind == "csv":
        with open(src, encoding="utf-8") as f:
            header = f.readline()
            lines = f.readlines()
        per = -(-len(lines) // files)
        for i in range(files):
            with open(os.path.join(tmp, f"part-{i:05}.csv"), "w", encoding="utf-8") as out:
                out.write(header)
                out.writelines(lines[i * per:(i + 1) * per])
    else:
        code = ("import duckdb, sys\n"
                "src, tmp, files = sys.argv[1], sys.argv[2], int(sys.argv[3])\n"
                "n = duckdb.sql(f\"SELECT count(*) FROM read_parquet('{src}')\").fetchall()[0][0]\n"
                "per = -(-n // files)\n"
                "duckdb.sql(f\"CREATE TABLE t AS SELECT *, row_number() OVER () - 1 AS r__ FROM read_parquet('{src}')\")\n"
                "for i in range(files):\n"
                "    duckdb.sql(f\"COPY (SELECT * EXCLUDE (r__) FROM t WHERE r__ >= {i * per} AND r__ < {(i + 1) * per} ORDER BY r__) \"\n"
                "               f\"TO '{tmp}/part-{i:05}.parquet' (FORMAT parquet)\")\n")
        subprocess.run([PY, "-c", code, src, tmp, str(files)], check=True)
    os.rename(tmp, folder)
    return folder


def median_run(tool, runs):
    """The run with the median wall time (a failed run wins: it is what must be seen), with every
    run's wall time sorted under "walls"; `skipped` when the tool did not run."""
    if not runs:
        return {"tool": tool, "skipped": True}
    failed = [r for r in runs if r["rc"] != 0]
    walls = sorted(r["wall"] for r in runs)
    pick = failed[0] if failed else sorted(runs, key=lambda r: r["wall"])[len(runs) // 2]
    return dict(pick, walls=walls)


def agree(ref, r):
    if r["totals"] is None or ref is None or ref["totals"] is None:
        return "n/a"
    rows, billed, effective = r["totals"]
    rrows, rbilled, reffective = ref["totals"]
    if r["tool"] == "focus-converter":
        same = abs(float(billed) - float(rbilled)) < 0.01
        return f"Σ BilledCost {'=' if same else '≠'} to the cent; {rows - rrows:+,} rows (negations kept)"
    same = rows == rrows and float(billed) == float(rbilled) and float(effective) == float(reffective)
    exact = rows == rrows and normal(billed) == normal(rbilled) and normal(effective) == normal(reffective)
    return "rows and totals identical" if exact else ("totals equal as floats" if same else "DIFFERENT")


def normal(d):
    return d.rstrip("0").rstrip(".") if "." in d else d


def machine():
    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    return f"{os.cpu_count()} cores, {cpu}, {platform.system()} {platform.release()}; tally {commit}; {datetime.date.today()}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, action="append", help="rows per input (repeatable; default 1000000)")
    ap.add_argument("--inputs", default="csv,parquet", help="input kinds: csv,parquet")
    ap.add_argument("--peers", default="tally,duckdb,focus-converter")
    ap.add_argument("--work", default=os.path.join(ROOT, "target", "bench"))
    ap.add_argument("--focus-converter-max-rows", type=int, default=2_000_000,
                    help="skip focus_converters above this size (it needs ~4 GB of memory per million rows)")
    ap.add_argument("--no-build", action="store_true", help="use target/release/tally as it is")
    ap.add_argument("--repeat", type=int, default=1, help="runs per tool, taking turns; the median is reported")
    ap.add_argument("--files", type=int, default=1, help="split each input into this many files (focus-converter skipped)")
    a = ap.parse_args()
    sizes = a.rows or [1_000_000]
    tools = a.peers.split(",")
    if not os.path.exists(PY):
        sys.exit(f"no peer venv at {VENV}: run benches/setup.sh first")
    if not a.no_build:
        subprocess.run(["cargo", "build", "--release", "--locked"], cwd=ROOT, check=True)
    tally = os.path.join(ROOT, "target", "release", "tally")
    os.makedirs(a.work, exist_ok=True)
    logs = os.path.join(a.work, "logs")
    os.makedirs(logs, exist_ok=True)
    runs_note = f"; each tool run {a.repeat} times in turn, median shown (fastest–slowest wall)" if a.repeat > 1 else ""
    lines = [f"Machine: {machine()}{runs_note}", "",
             "| input | tool | wall s | user+sys s | CPU | peak RSS MB | rows/s | tally faster by | output check |",
             "|---|---|---|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    for rows in sizes:
        for kind in a.inputs.split(","):
            src = os.path.join(a.work, f"cur-{rows}.{kind}")
            if not os.path.exists(src):
                t0 = time.monotonic()
                subprocess.run([tally, "generate", "aws_cur", "--rows", str(rows), "--output", src], cwd=ROOT, check=True,
                               stdout=subprocess.DEVNULL)
                print(f"(generated {src}: {os.path.getsize(src) / 1e6:.0f} MB in {time.monotonic() - t0:.1f} s)", file=sys.stderr)
            if a.files > 1:
                src = split(src, kind, a.files, a.work)
            runs = {tool: [] for tool in tools}
            for _ in range(max(1, a.repeat)):
                for tool in tools:
                    if tool == "focus-converter" and (rows > a.focus_converter_max_rows or a.files > 1):
                        continue
                    runs[tool].append(run_tool(tool, src, kind, a.work, logs))
            results = [median_run(tool, runs[tool]) for tool in tools]
            ref = next((r for r in results if r["tool"] == "tally" and not r.get("skipped")), None)
            for r in results:
                label = f"{rows:,} CUR rows{f' in {a.files} files' if a.files > 1 else ''}, {kind.upper()}"
                if r.get("skipped"):
                    why = "not run on split inputs" if a.files > 1 else f"skipped above {a.focus_converter_max_rows:,} rows"
                    line = f"| {label} | {r['tool']} | {why} | | | | | | |"
                elif r["rc"] != 0:
                    line = f"| {label} | {r['tool']} | failed (exit {r['rc']}, see {r['log']}) | | | | | | |"
                else:
                    ratio = "" if r is ref or ref is None or ref["rc"] != 0 else f"{r['wall'] / ref['wall']:.2f}×"
                    spread = f" ({r['walls'][0]:.2f}–{r['walls'][-1]:.2f})" if len(r["walls"]) > 1 else ""
                    line = (f"| {label} | {r['tool']} | {r['wall']:.2f}{spread} | {r['cpu']:.2f} | {100 * r['cpu'] / r['wall']:.0f}% "
                            f"| {r['rss'] / 1e6:.0f} | {rows / r['wall']:,.0f} | {ratio} | {agree(ref, r) if r is not ref else 'reference'} |")
                lines.append(line)
                print(line, flush=True)
    with open(os.path.join(a.work, "results.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
