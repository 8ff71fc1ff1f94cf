//! `tally query`: DataFusion SQL over the output tables, registered by name.

use arrow::array::RecordBatch;
use datafusion::prelude::SessionContext;

use crate::error::{Result, TallyError};
use crate::storage;
use crate::table::{self, names};

/// Output formats for query results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// An aligned text table.
    Table,
    /// CSV with a header.
    Csv,
    /// JSON lines.
    Json,
    /// Parquet (needs `--out`).
    Parquet,
}

/// A session with every table under `root` registered: `cost_and_usage`,
/// `cost_and_usage_1_2`, `quarantine` and the SQL stages' tables (`invoice_reconciliation`, ...),
/// `cost_and_usage` optionally as of a table version. Queries run in the stages' memory pool
/// (`TALLY_STAGE_MEMORY_MB`): a sort over a whole table spills instead of growing without bound.
pub async fn session_for(root: &str, version: Option<u64>) -> Result<SessionContext> {
    let ctx = crate::stages::session()?;
    let mut any = false;
    for name in [
        names::COST_AND_USAGE,
        names::COST_AND_USAGE_1_2,
        names::QUARANTINE,
    ] {
        let url = table::table_url(root, name)?;
        let v = if name == names::COST_AND_USAGE {
            version
        } else {
            None
        };
        if table::register(&ctx, name, &url, v).await? {
            any = true;
        }
    }
    // The curated tables the SQL stages write, where a run has written them.
    for stage in crate::stages::all()? {
        let url = table::table_url(root, &stage.writes)?;
        if table::register(&ctx, &stage.writes, &url, None).await? {
            any = true;
        }
    }
    if !any {
        return Err(TallyError::Usage(format!(
            "no tally tables under {root}; run a job first"
        )));
    }
    Ok(ctx)
}

/// Runs a query and returns its batches.
pub async fn run_sql(ctx: &SessionContext, sql: &str) -> Result<Vec<RecordBatch>> {
    let df = ctx
        .sql(sql)
        .await
        .map_err(|e| TallyError::Usage(format!("query: {e}")))?;
    Ok(df.collect().await?)
}

/// Runs a query and writes its rows in the chosen format to `out` (a path or URL) or stdout as
/// they come, so a large result is never held whole (an aligned `table` is: it is sized to its
/// widest value; Parquet holds one row group). A result with no rows is still its columns: a
/// CSV header, a Parquet file. An object at `out` is replaced only once every row is written: a
/// failed query leaves it as it was (and its upload abandoned). On stdout, a reader that stops
/// reading (`| head`) ends the output without an error.
pub async fn run_to(
    ctx: &SessionContext,
    sql: &str,
    format: OutputFormat,
    out: Option<&str>,
) -> Result<()> {
    if format == OutputFormat::Table {
        return write(&run_sql(ctx, sql).await?, format, out).await;
    }
    let df = ctx
        .sql(sql)
        .await
        .map_err(|e| TallyError::Usage(format!("query: {e}")))?;
    write_rows(df.execute_stream().await?, format, out).await
}

/// Writes rows as they come in a streamed format (`csv`, `json`, `parquet`) to `out` (a path
/// or URL) or stdout: see [`run_to`].
async fn write_rows(
    rows: datafusion::execution::SendableRecordBatchStream,
    format: OutputFormat,
    out: Option<&str>,
) -> Result<()> {
    use tokio::io::AsyncWriteExt;
    let Some(dest) = out else {
        if format == OutputFormat::Parquet {
            return Err(TallyError::Usage("--format parquet needs --out".into()));
        }
        return match write_text(rows, format, None, "stdout").await {
            Err(TallyError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::BrokenPipe =>
            {
                Ok(())
            }
            other => other,
        };
    };
    let url = crate::job::resolve_url(dest, &std::env::current_dir().unwrap_or_default());
    let loc = storage::open(&url)?;
    // An upload in parts on an object store (a file renamed into place on a local one).
    let mut sink = object_store::buffered::BufWriter::new(loc.store.clone(), loc.path.clone());
    let written = match format {
        OutputFormat::Parquet => write_parquet(rows, &mut sink, &url).await,
        _ => match write_text(rows, format, Some(&mut sink), &url).await {
            Ok(()) => sink.shutdown().await.map_err(|e| TallyError::Io {
                path: url.clone(),
                source: e,
            }),
            Err(e) => Err(e),
        },
    };
    if written.is_err() {
        // The parts uploaded so far are discarded; the object at `out` is untouched.
        let _ = sink.abort().await;
    }
    written
}

/// Writes rows as CSV (one header) or JSON lines to `sink`, or stdout when it is `None`.
async fn write_text(
    mut rows: datafusion::execution::SendableRecordBatchStream,
    format: OutputFormat,
    mut sink: Option<&mut object_store::buffered::BufWriter>,
    name: &str,
) -> Result<()> {
    use futures::StreamExt;
    let io = |e: std::io::Error| TallyError::Io {
        path: name.to_string(),
        source: e,
    };
    let encode = |b: &RecordBatch, first: bool| -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        if format == OutputFormat::Csv {
            arrow::csv::WriterBuilder::new()
                .with_header(first)
                .build(&mut buf)
                .write(b)?;
        } else {
            let mut w = arrow::json::LineDelimitedWriter::new(&mut buf);
            w.write(b)?;
            w.finish()?;
        }
        Ok(buf)
    };
    let schema = rows.schema();
    let mut first = true;
    while let Some(b) = rows.next().await {
        let bytes = encode(&b?, first)?;
        first = false;
        put(&mut sink, &bytes).await.map_err(io)?;
    }
    if first && format == OutputFormat::Csv {
        // No rows: a CSV is still its header.
        let header = encode(&RecordBatch::new_empty(schema), true)?;
        put(&mut sink, &header).await.map_err(io)?;
    }
    if sink.is_none() {
        std::io::Write::flush(&mut std::io::stdout()).map_err(io)?;
    }
    Ok(())
}

/// Writes `bytes` to `sink`, or to stdout when it is `None`.
async fn put(
    sink: &mut Option<&mut object_store::buffered::BufWriter>,
    bytes: &[u8],
) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    match sink {
        Some(w) => w.write_all(bytes).await,
        None => std::io::Write::write_all(&mut std::io::stdout().lock(), bytes),
    }
}

/// Writes rows as one Parquet file to `sink` (row groups of at most 131,072 rows), completing
/// its upload.
async fn write_parquet(
    mut rows: datafusion::execution::SendableRecordBatchStream,
    sink: &mut object_store::buffered::BufWriter,
    name: &str,
) -> Result<()> {
    use futures::StreamExt;
    // An I/O error underneath (the store's) is the store's; anything else names the file.
    let err = |e: parquet::errors::ParquetError| match e {
        parquet::errors::ParquetError::External(inner) => {
            match inner.downcast::<std::io::Error>() {
                Ok(io) => TallyError::Io {
                    path: name.to_string(),
                    source: *io,
                },
                Err(other) => TallyError::Internal(format!("{name}: {other}")),
            }
        }
        other => TallyError::Internal(format!("{name}: {other}")),
    };
    let props = parquet::file::properties::WriterProperties::builder()
        .set_max_row_group_row_count(Some(128 * 1024))
        .build();
    let mut w =
        parquet::arrow::AsyncArrowWriter::try_new(sink, rows.schema(), Some(props)).map_err(err)?;
    while let Some(b) = rows.next().await {
        w.write(&b?).await.map_err(err)?;
    }
    w.close().await.map_err(err)?;
    Ok(())
}

/// Writes batches in the chosen format to `out` (a path or URL) or stdout: an aligned `table`
/// whole, the other formats through [`write_rows`] (as `tally query` writes them).
pub async fn write(batches: &[RecordBatch], format: OutputFormat, out: Option<&str>) -> Result<()> {
    if format != OutputFormat::Table {
        let Some(first) = batches.first() else {
            return match format {
                OutputFormat::Parquet => Err(TallyError::Usage(
                    "the query returned no batches to write".into(),
                )),
                _ => Ok(()),
            };
        };
        let rows: Vec<datafusion::error::Result<RecordBatch>> =
            batches.iter().map(|b| Ok(b.clone())).collect();
        let rows = futures::stream::iter(rows);
        let rows =
            datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(first.schema(), rows);
        return write_rows(Box::pin(rows), format, out).await;
    }
    let mut buf = arrow::util::pretty::pretty_format_batches(batches)?
        .to_string()
        .into_bytes();
    buf.push(b'\n');
    match out {
        None => {
            use std::io::Write;
            std::io::stdout()
                .write_all(&buf)
                .map_err(|e| TallyError::Io {
                    path: "stdout".into(),
                    source: e,
                })
        }
        Some(dest) => {
            let url = crate::job::resolve_url(dest, &std::env::current_dir().unwrap_or_default());
            let loc = storage::open(&url)?;
            object_store::ObjectStoreExt::put(loc.store.as_ref(), &loc.path, buf.into())
                .await
                .map_err(|e| loc.err("put", &loc.path, e))?;
            Ok(())
        }
    }
}
