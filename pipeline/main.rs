//! The `tally` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tally::error::{TallyError, exit};
use tally::job::{self, Job};
use tally::query::OutputFormat;
use tally::{formats, query, run, schema, validate};

/// Billing exports on object storage → exact, conformant FOCUS 1.4 tables.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// Log filter (also RUST_LOG), e.g. `info`, `tally=debug`.
    #[arg(long, global = true, default_value = "warn,tally=info")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a job file, or convert one source without a job file (--source/--output).
    Run {
        /// The job file (TOML).
        job: Option<PathBuf>,
        /// One-off: a source URL (file, folder or prefix).
        #[arg(long, conflicts_with = "job", requires = "output")]
        source: Option<String>,
        /// One-off: the format name (detected when absent).
        #[arg(long, requires = "source")]
        format: Option<String>,
        /// One-off: the output root URL.
        #[arg(long, requires = "source")]
        output: Option<String>,
        /// Also write the FOCUS 1.2 projection (table cost_and_usage_1_2).
        #[arg(long = "focus-version", value_parser = ["1.4", "1.2"])]
        focus_version: Vec<String>,
        /// One-off: a format setting, `name=value` (e.g. `cost_view=amortized`); repeatable.
        #[arg(long = "param", requires = "source", value_parser = parse_param)]
        params: Vec<(String, String)>,
        /// Read every export file, not only the new and changed ones (and rebuild every
        /// partition the last run recorded); not with --since or --period, which narrow an
        /// incremental run.
        #[arg(long, conflicts_with_all = ["since", "periods"])]
        full: bool,
        /// Only files modified at or after this time count as new or changed
        /// (RFC 3339, or a date: 2024-06-01).
        #[arg(long, value_parser = parse_since)]
        since: Option<chrono::DateTime<chrono::Utc>>,
        /// Only read changed files with rows in this billing period (YYYY-MM), and the files
        /// sharing their partitions; repeatable. New files are always read.
        #[arg(long = "period", value_parser = parse_period)]
        periods: Vec<String>,
        /// When another run holds the output's lock, wait up to this many seconds (default: exit 6 at once).
        #[arg(long, default_value_t = 0)]
        wait_lock: u64,
    },
    /// Run the job files of a folder on their `[schedule] cron` (UTC) in one long-lived process.
    Schedule {
        /// Folder of job files (`*.toml`); those without `[schedule]` are skipped.
        dir: PathBuf,
        /// Stop after this many runs (default: run until stopped).
        #[arg(long)]
        max_runs: Option<u64>,
    },
    /// Reproduce a past run's reconciliation from its manifest: the tables it read at the versions
    /// it read, the same input files (hash-checked); says whether today's result is identical
    /// (exit 0) or not (exit 5).
    Reconcile {
        /// The run's manifest (`<output>/_tally/manifests/<run id>.json`, a path or URL).
        #[arg(long)]
        manifest: String,
        /// The stage to reproduce.
        #[arg(long, default_value = "invoice_reconciliation")]
        stage: String,
        /// Result format.
        #[arg(long, value_enum, default_value = "table")]
        format: OutputFormat,
        /// Write the reproduced result here (path or URL) instead of stdout.
        #[arg(long)]
        out: Option<String>,
    },
    /// Strict FOCUS checks on a file or a tally table, reported per rule (exit 5 on failures).
    Validate {
        /// A FOCUS CSV/Parquet file, a tally output root or a Delta table.
        target: String,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// SQL over the output tables (cost_and_usage, cost_and_usage_1_2, quarantine and the stage
    /// tables, by name).
    Query {
        /// The SQL.
        sql: String,
        /// Output root of a job (where its tables are).
        #[arg(long, short = 't', default_value = "file://out/sample")]
        tables: String,
        /// Read cost_and_usage as of this table version (time travel).
        #[arg(long)]
        as_of_version: Option<u64>,
        /// Result format.
        #[arg(long, value_enum, default_value = "table")]
        format: OutputFormat,
        /// Write the result here (path or URL) instead of stdout.
        #[arg(long)]
        out: Option<String>,
    },
    /// Print the FOCUS schema tally writes (columns, types, levels, allowed values).
    Schema {
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the source formats tally reads.
    Formats,
    /// Write a synthetic export of any size for benchmarks: deterministic, realistic (every
    /// line item type, 50 accounts with leading zeros, sparse tags, AI token lines).
    Generate {
        /// The format: aws_cur, azure_cost_details, oci_cost, focus or gcp_billing.
        format: String,
        /// Rows to write.
        #[arg(long)]
        rows: u64,
        /// The file to write: `.csv`, `.parquet` or `.jsonl` (gcp_billing).
        #[arg(long)]
        output: std::path::PathBuf,
        /// The export whose rows are cycled (default: the format's bundled sample under
        /// sample-data/, found from the current directory).
        #[arg(long)]
        template: Option<std::path::PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cli.log));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        // Colours only on a terminal: cron mail, journald and CI logs get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(exit::INTERNAL as u8);
        }
    };
    match rt.block_on(dispatch(cli.command)) {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

async fn dispatch(cmd: Command) -> Result<i32, TallyError> {
    match cmd {
        Command::Run {
            job: path,
            source,
            format,
            output,
            focus_version,
            params,
            full,
            since,
            periods,
            wait_lock,
        } => {
            let options = run::RunOptions {
                full,
                since,
                periods,
                wait_lock: std::time::Duration::from_secs(wait_lock),
            };
            let req = match (path, source) {
                (Some(path), None) => {
                    let (mut job, bytes) = Job::load(&path)?;
                    if focus_version.iter().any(|v| v == "1.2") && !job.wants_focus_1_2() {
                        job.output.focus_versions.push("1.2".into());
                    }
                    run::RunRequest {
                        job,
                        job_path: path.display().to_string(),
                        job_bytes: bytes,
                        options,
                    }
                }
                (None, Some(src)) => {
                    let cwd = std::env::current_dir().unwrap_or_default();
                    let mut versions = vec!["1.4".to_string()];
                    versions.extend(focus_version.into_iter().filter(|v| v == "1.2"));
                    let job = Job {
                        job: job::JobMeta {
                            name: "one-off".into(),
                        },
                        output: job::Output {
                            url: job::resolve_url(&output.expect("clap requires --output"), &cwd),
                            focus_versions: versions,
                        },
                        sources: vec![job::Source {
                            name: "source".into(),
                            url: job::resolve_url(&src, &cwd),
                            format,
                            cost_identity: None,
                            params: params.into_iter().collect(),
                        }],
                        checks: Default::default(),
                        schedule: None,
                        inputs: Default::default(),
                    };
                    let text = format!("{job:?}");
                    run::RunRequest {
                        job,
                        job_path: "<command line>".into(),
                        job_bytes: text.into_bytes(),
                        options,
                    }
                }
                _ => {
                    return Err(TallyError::Usage(
                        "give a job file, or --source and --output".into(),
                    ));
                }
            };
            let m = run::run(req).await?;
            if m.inputs.is_empty() && m.files_unchanged > 0 {
                println!(
                    "run {} ok: nothing new — {} files unchanged since they were read; no table changed",
                    m.run_id, m.files_unchanged
                );
                print_stages(&m);
                return Ok(exit::OK);
            }
            println!(
                "run {} ok: {} files, {} rows read, {} written, {} quarantined, {} folded, {} derived; reconciliation: {} lines, all match",
                m.run_id,
                m.totals.files,
                m.totals.rows_read,
                m.totals.rows_written,
                m.totals.rows_quarantined,
                m.totals.rows_folded,
                m.totals.rows_derived,
                m.reconciliation.len()
            );
            if m.files_unchanged > 0 {
                println!(
                    "  {} files unchanged and not read ({} run)",
                    m.files_unchanged, m.mode
                );
            }
            for (name, t) in &m.tables {
                println!(
                    "  {name}: version {}",
                    t.version.map(|v| v.to_string()).unwrap_or("-".into())
                );
            }
            print_stages(&m);
            Ok(exit::OK)
        }
        Command::Validate { target, json } => {
            let report = validate::validate(&target).await?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).expect("report serializes")
                );
            } else {
                println!("{}: {} rows", report.target, report.rows);
                for r in &report.rules {
                    let mark = match r.status.as_str() {
                        "pass" => "ok  ",
                        "fail" => "FAIL",
                        _ => "skip",
                    };
                    println!("{mark} {:<48} {:>6}  {}", r.id, r.violations, r.message);
                    for e in &r.examples {
                        println!("       {e}");
                    }
                }
            }
            let failed = report.failures().count();
            let passed = report.rules.iter().filter(|r| r.status == "pass").count();
            let skipped = report.rules.len() - failed - passed;
            println!("{passed} passed, {failed} failed, {skipped} skipped");
            Ok(if failed == 0 {
                exit::OK
            } else {
                exit::INTEGRITY
            })
        }
        Command::Query {
            sql,
            tables,
            as_of_version,
            format,
            out,
        } => {
            let root = job::resolve_url(&tables, &std::env::current_dir().unwrap_or_default());
            let ctx = query::session_for(&root, as_of_version).await?;
            query::run_to(&ctx, &sql, format, out.as_deref()).await?;
            Ok(exit::OK)
        }
        Command::Schema { json } => {
            let s = schema::FocusSchema::load()?;
            if json {
                let cols: Vec<_> = s.columns().collect();
                println!(
                    "{}",
                    serde_json::to_string_pretty(&cols).expect("schema serializes")
                );
            } else {
                println!(
                    "FOCUS 1.4 CostAndUsage as tally writes it ({} FOCUS + {} tally columns)",
                    s.focus.len(),
                    s.extensions.len()
                );
                for c in s.columns() {
                    println!(
                        "{:<38} {:<26} {:<12} {:<8} {}",
                        c.name,
                        c.ty.arrow().to_string(),
                        c.level,
                        if c.nullable { "null" } else { "not null" },
                        c.allowed.join(", ")
                    );
                }
            }
            Ok(exit::OK)
        }
        Command::Reconcile {
            manifest,
            stage,
            format,
            out,
        } => {
            let cwd = std::env::current_dir().map_err(|e| TallyError::Io {
                path: ".".into(),
                source: e,
            })?;
            let url = job::resolve_url(&manifest, &cwd);
            let r = tally::stages::reproduce(&url, &stage).await?;
            query::write(&r.batches, format, out.as_deref()).await?;
            let reads: Vec<String> = r
                .recorded
                .reads
                .iter()
                .map(|t| {
                    format!(
                        "{} v{}",
                        t.name,
                        t.version.map(|v| v.to_string()).unwrap_or("-".into())
                    )
                })
                .chain(
                    r.recorded
                        .inputs
                        .iter()
                        .map(|i| format!("{} {} (sha256 {})", i.name, i.url, &i.sha256[..12])),
                )
                .collect();
            eprintln!("reproduced {stage} from {url}: read {}", reads.join(", "));
            for n in &r.notes {
                eprintln!("note: {n}");
            }
            if r.identical() {
                eprintln!(
                    "identical: {} rows, content SHA-256 {} as recorded",
                    r.today.rows, r.today.content_sha256
                );
                Ok(exit::OK)
            } else {
                eprintln!(
                    "DIFFERENT: {} rows, content SHA-256 {} today; the run recorded {} rows, {}",
                    r.today.rows,
                    r.today.content_sha256,
                    r.recorded.rows,
                    r.recorded.content_sha256
                );
                Ok(exit::INTEGRITY)
            }
        }
        Command::Schedule { dir, max_runs } => {
            use tally::schedule::Stopped;
            Ok(match tally::schedule::serve(&dir, max_runs).await? {
                Stopped::MaxRuns { failed: 0 } | Stopped::Signal(_) => exit::OK,
                Stopped::MaxRuns { .. } => exit::INTERNAL,
                Stopped::Forced(signal) => signal.exit_code,
            })
        }
        Command::Generate {
            format,
            rows,
            output,
            template,
        } => {
            let root = std::env::current_dir().map_err(|e| TallyError::Usage(e.to_string()))?;
            let g = tally::generate::generate(&format, rows, &output, template.as_deref(), &root)?;
            println!(
                "wrote {} rows, {} columns, {} bytes to {}",
                g.rows,
                g.columns,
                g.bytes,
                output.display()
            );
            Ok(exit::OK)
        }
        Command::Formats => {
            for f in formats::all()? {
                println!("{}  (provider {}, {})", f.name, f.provider, f.sql_path);
                println!("    detected by columns: {}", f.detect.join(", "));
                for p in &f.params {
                    println!(
                        "    params: {} = {} (default {})",
                        p.name,
                        p.values.join(" | "),
                        p.values[0]
                    );
                }
            }
            Ok(exit::OK)
        }
    }
}

/// `name=value` → a format parameter.
fn parse_param(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .ok_or_else(|| format!("expected name=value, got {s:?}"))
}

/// `--since`: RFC 3339, or a date (midnight UTC).
fn parse_since(s: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map(|d| d.and_hms_opt(0, 0, 0).expect("midnight").and_utc())
        .map_err(|_| format!("expected RFC 3339 or YYYY-MM-DD, got {s:?}"))
}

/// `--period`: `YYYY-MM`.
fn parse_period(s: &str) -> Result<String, String> {
    chrono::NaiveDate::parse_from_str(&format!("{s}-01"), "%Y-%m-%d")
        .map(|_| s.to_string())
        .map_err(|_| format!("expected YYYY-MM, got {s:?}"))
}

/// One line per SQL stage of a run: its table, rows, version and whether it ran.
fn print_stages(m: &tally::manifest::Manifest) {
    for st in &m.stages {
        println!(
            "  {}: {} rows, version {} ({})",
            st.output.name,
            st.rows,
            st.output
                .version
                .map(|v| v.to_string())
                .unwrap_or("-".into()),
            st.status
        );
    }
}
