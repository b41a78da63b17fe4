//! `eventline query …`, `eventline tail` and `eventline export`: read a tenant's events
//! with a query-scoped key. Events print as newline-delimited proto3 JSON, ready for
//! `eventline import`.

use std::io::Write;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand, ValueEnum};
use eventline_client::{Client, v1};
use futures::{StreamExt, TryStreamExt};
use pbjson_types::Timestamp;

use crate::client::ClientArgs;

/// Filters shared by every read.
#[derive(Debug, Args)]
pub(crate) struct FilterArgs {
    /// Only this event type.
    #[arg(long = "type")]
    event_type: Option<String>,
    /// Only this user.
    #[arg(long = "user")]
    user_id: Option<String>,
    /// Only events whose property equals a value: key=value (repeatable).
    #[arg(long = "prop")]
    props: Vec<String>,
}

/// A window: RFC 3339 times, or durations before now such as 90m, 2h, 7d.
#[derive(Debug, Args)]
pub(crate) struct WindowArgs {
    /// Start (inclusive): RFC 3339 or a duration ago (2h).
    #[arg(long)]
    start: Option<String>,
    /// End (exclusive): RFC 3339 or a duration ago; defaults to now.
    #[arg(long)]
    end: Option<String>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum QueryCommand {
    /// Lists events, newest first, as NDJSON.
    List {
        #[command(flatten)]
        filter: FilterArgs,
        #[command(flatten)]
        window: WindowArgs,
        /// Most events to print, over as many pages as needed.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Finds events by the words of their type and string properties, newest first,
    /// as NDJSON; the tenant must have search on (README "Search").
    Search {
        /// Words and "quoted phrases", all required; -word excludes one.
        #[arg(allow_hyphen_values = true)]
        query: String,
        #[command(flatten)]
        filter: FilterArgs,
        #[command(flatten)]
        window: WindowArgs,
        /// Most events to print, over as many pages as needed.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Counts events.
    Count {
        #[command(flatten)]
        window: WindowArgs,
        /// Only this event type.
        #[arg(long = "type")]
        event_type: Option<String>,
    },
    /// The most frequent event types.
    Top {
        #[command(flatten)]
        window: WindowArgs,
        /// How many types.
        #[arg(long, default_value_t = 10)]
        limit: i32,
    },
    /// Counts per minute, hour or day.
    Series {
        #[command(flatten)]
        window: WindowArgs,
        /// Only this event type.
        #[arg(long = "type")]
        event_type: Option<String>,
        /// Bucket width.
        #[arg(long, value_enum, default_value_t = Interval::Hour)]
        interval: Interval,
    },
    /// Unique users (distinct user_id): one total, or one line per bucket with --interval.
    Uniques {
        #[command(flatten)]
        window: WindowArgs,
        /// Only users who sent this event type.
        #[arg(long = "type")]
        event_type: Option<String>,
        /// Count per minute, hour or day instead of over the whole window.
        #[arg(long, value_enum)]
        interval: Option<Interval>,
    },
    /// Counts split by a top-level property's value, one `value<TAB>count` line each
    /// (`(not set)` for events without it, `(other)` for values past --limit).
    Breakdown {
        #[command(flatten)]
        window: WindowArgs,
        /// The property to split by.
        #[arg(long = "by")]
        property: String,
        /// Only this event type.
        #[arg(long = "type")]
        event_type: Option<String>,
        /// Split every minute, hour or day (`start<TAB>value<TAB>count` lines).
        #[arg(long, value_enum)]
        interval: Option<Interval>,
        /// Values with a line of their own.
        #[arg(long, default_value_t = 10)]
        limit: i32,
    },
    /// Users through a sequence of steps (QueryService.Funnel), one line per step.
    Funnel {
        #[command(flatten)]
        window: WindowArgs,
        /// The event type of each step, in order (2 to 10).
        #[arg(long = "step", required = true)]
        steps: Vec<String>,
        /// How long after the first step a user has to finish (30m, 7d; default 30 days).
        #[arg(long = "within")]
        conversion_window: Option<String>,
        /// Only events whose property equals a value: key=value (repeatable).
        #[arg(long = "prop")]
        props: Vec<String>,
    },
    /// Cohorts by their first start event and when they came back (QueryService.Retention).
    Retention {
        #[command(flatten)]
        window: WindowArgs,
        /// The event that puts a user in a cohort.
        #[arg(long = "start-type")]
        start_event_type: String,
        /// The event that counts as coming back.
        #[arg(long = "return-type")]
        return_event_type: String,
        /// Cohort width.
        #[arg(long, value_enum, default_value_t = RetentionInterval::Day)]
        interval: RetentionInterval,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum RetentionInterval {
    Day,
    Week,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Interval {
    Minute,
    Hour,
    Day,
}

#[derive(Debug, Args)]
pub(crate) struct QueryArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    command: QueryCommand,
}

#[derive(Debug, Args)]
pub(crate) struct TailArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(flatten)]
    filter: FilterArgs,
    /// Replay from this time first: RFC 3339 or a duration ago (1h).
    #[arg(long)]
    since: Option<String>,
    /// Resume after the event that carried this cursor.
    #[arg(long)]
    cursor: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct ExportArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(flatten)]
    filter: FilterArgs,
    #[command(flatten)]
    window: WindowArgs,
    /// Resume after the event that carried this cursor (printed on stderr at the end).
    #[arg(long)]
    cursor: Option<String>,
}

fn parse_time(flag: &str, text: &str) -> anyhow::Result<Timestamp> {
    let time = match DateTime::parse_from_rfc3339(text) {
        Ok(time) => time.with_timezone(&Utc),
        Err(_) => {
            let ago = humantime::parse_duration(text).with_context(|| {
                format!("--{flag} must be RFC 3339 or a duration such as 2h, got {text:?}")
            })?;
            Utc::now() - chrono::Duration::from_std(ago).context("duration too long")?
        }
    };
    Ok(eventline_core::time::to_proto(time))
}

fn optional_time(flag: &str, text: &Option<String>) -> anyhow::Result<Option<Timestamp>> {
    text.as_deref()
        .map(|text| parse_time(flag, text))
        .transpose()
}

fn print_event(out: &mut impl Write, event: &v1::Event) -> anyhow::Result<()> {
    serde_json::to_writer(&mut *out, event)?;
    out.write_all(b"\n")?;
    Ok(())
}

pub(crate) async fn query(args: QueryArgs) -> anyhow::Result<()> {
    let client = args.client.connect().await?;
    let mut out = std::io::stdout().lock();
    match args.command {
        QueryCommand::List {
            filter,
            window,
            limit,
        } => list(&client, &mut out, filter, &window, limit).await,
        QueryCommand::Search {
            query,
            filter,
            window,
            limit,
        } => search(&client, &mut out, query, filter, &window, limit).await,
        QueryCommand::Count { window, event_type } => {
            count(&client, &mut out, &window, event_type).await
        }
        QueryCommand::Top { window, limit } => top(&client, &mut out, &window, limit).await,
        QueryCommand::Series {
            window,
            event_type,
            interval,
        } => series(&client, &mut out, &window, event_type, interval).await,
        QueryCommand::Uniques {
            window,
            event_type,
            interval,
        } => uniques(&client, &mut out, &window, event_type, interval).await,
        QueryCommand::Breakdown {
            window,
            property,
            event_type,
            interval,
            limit,
        } => {
            let split = Split {
                property,
                event_type,
                limit,
            };
            breakdown(&client, &mut out, &window, split, interval).await
        }
        QueryCommand::Funnel {
            window,
            steps,
            conversion_window,
            props,
        } => {
            let request = v1::FunnelRequest {
                steps,
                conversion_window: conversion_window
                    .as_deref()
                    .map(|text| duration("within", text))
                    .transpose()?,
                start_time: optional_time("start", &window.start)?,
                end_time: optional_time("end", &window.end)?,
                property_filters: props,
                ..Default::default()
            };
            funnel(&client, &mut out, request).await
        }
        QueryCommand::Retention {
            window,
            start_event_type,
            return_event_type,
            interval,
        } => {
            let interval = match interval {
                RetentionInterval::Day => v1::RetentionInterval::Day,
                RetentionInterval::Week => v1::RetentionInterval::Week,
            };
            let request = v1::RetentionRequest {
                start_event_type,
                return_event_type,
                interval: interval as i32,
                start_time: optional_time("start", &window.start)?,
                end_time: optional_time("end", &window.end)?,
                ..Default::default()
            };
            retention(&client, &mut out, request).await
        }
    }
}

fn duration(flag: &str, text: &str) -> anyhow::Result<pbjson_types::Duration> {
    let duration = humantime::parse_duration(text)
        .with_context(|| format!("--{flag} must be a duration such as 30m or 7d, got {text:?}"))?;
    Ok(pbjson_types::Duration {
        seconds: i64::try_from(duration.as_secs()).context("duration too long")?,
        nanos: duration.subsec_nanos() as i32,
    })
}

/// `query funnel`: one `step<TAB>type<TAB>users<TAB>percent of step 1` line per step.
async fn funnel(
    client: &Client,
    out: &mut impl Write,
    request: v1::FunnelRequest,
) -> anyhow::Result<()> {
    let steps = client.funnel(request).await?;
    let entered = steps.first().map_or(0, |step| step.users);
    for (index, step) in steps.iter().enumerate() {
        let percent = if entered == 0 {
            0.0
        } else {
            100.0 * step.users as f64 / entered as f64
        };
        writeln!(
            out,
            "{}\t{}\t{}\t{percent:.1}%",
            index + 1,
            step.event_type,
            step.users
        )?;
    }
    Ok(())
}

/// `query retention`: a header, then one `cohort start<TAB>users<TAB>returned…` line per
/// cohort, the returned counts for its own interval and each one after it.
async fn retention(
    client: &Client,
    out: &mut impl Write,
    request: v1::RetentionRequest,
) -> anyhow::Result<()> {
    let cohorts = client.retention(request).await?;
    let columns = cohorts.first().map_or(0, |cohort| cohort.returned.len());
    let header: Vec<String> = (0..columns).map(|index| format!("+{index}")).collect();
    writeln!(out, "cohort\tusers\t{}", header.join("\t"))?;
    for cohort in cohorts {
        let start = cohort
            .start_time
            .as_ref()
            .and_then(eventline_core::time::from_proto)
            .map(|time| time.format("%Y-%m-%d").to_string())
            .unwrap_or_default();
        let returned: Vec<String> = cohort.returned.iter().map(u64::to_string).collect();
        writeln!(out, "{start}\t{}\t{}", cohort.users, returned.join("\t"))?;
    }
    Ok(())
}

/// `query list`: up to `limit` matching events as NDJSON, over as many pages as needed.
async fn list(
    client: &Client,
    out: &mut impl Write,
    filter: FilterArgs,
    window: &WindowArgs,
    limit: usize,
) -> anyhow::Result<()> {
    let events = client.list_events(v1::ListEventsRequest {
        event_type: filter.event_type.unwrap_or_default(),
        user_id: filter.user_id.unwrap_or_default(),
        property_filters: filter.props,
        start_time: optional_time("start", &window.start)?,
        end_time: optional_time("end", &window.end)?,
        page_size: limit.clamp(1, 1000) as i32,
        ..Default::default()
    });
    print_events(out, events, limit).await
}

/// `query search`: the matching events, newest first, one JSON object per line.
async fn search(
    client: &Client,
    out: &mut impl Write,
    query: String,
    filter: FilterArgs,
    window: &WindowArgs,
    limit: usize,
) -> anyhow::Result<()> {
    let events = client.search_events(v1::SearchEventsRequest {
        query,
        event_type: filter.event_type.unwrap_or_default(),
        user_id: filter.user_id.unwrap_or_default(),
        property_filters: filter.props,
        start_time: optional_time("start", &window.start)?,
        end_time: optional_time("end", &window.end)?,
        page_size: limit.clamp(1, 1000) as i32,
        ..Default::default()
    });
    print_events(out, events, limit).await
}

/// Prints the first `limit` events of a paged read.
async fn print_events(
    out: &mut impl Write,
    events: impl futures::Stream<Item = Result<v1::Event, eventline_client::Error>>,
    limit: usize,
) -> anyhow::Result<()> {
    let mut events = std::pin::pin!(events.take(limit));
    while let Some(event) = events.try_next().await? {
        print_event(out, &event)?;
    }
    Ok(())
}

/// `query count`: the number of matching events, on one line.
async fn count(
    client: &Client,
    out: &mut impl Write,
    window: &WindowArgs,
    event_type: Option<String>,
) -> anyhow::Result<()> {
    let count = client
        .count_events(v1::CountEventsRequest {
            event_type: event_type.unwrap_or_default(),
            start_time: optional_time("start", &window.start)?,
            end_time: optional_time("end", &window.end)?,
            ..Default::default()
        })
        .await?;
    writeln!(out, "{count}")?;
    Ok(())
}

/// `query top`: the most frequent event types, one `type<TAB>count` line each.
async fn top(
    client: &Client,
    out: &mut impl Write,
    window: &WindowArgs,
    limit: i32,
) -> anyhow::Result<()> {
    let rows = client
        .top_event_types(v1::TopEventTypesRequest {
            start_time: optional_time("start", &window.start)?,
            end_time: optional_time("end", &window.end)?,
            limit,
            ..Default::default()
        })
        .await?;
    for row in rows {
        writeln!(out, "{}\t{}", row.event_type, row.count)?;
    }
    Ok(())
}

/// `query series`: one `start<TAB>count` line per bucket, the start in RFC 3339.
async fn series(
    client: &Client,
    out: &mut impl Write,
    window: &WindowArgs,
    event_type: Option<String>,
    interval: Interval,
) -> anyhow::Result<()> {
    let interval = interval_to_proto(interval);
    let buckets = client
        .timeseries(v1::EventTimeseriesRequest {
            event_type: event_type.unwrap_or_default(),
            start_time: optional_time("start", &window.start)?,
            end_time: optional_time("end", &window.end)?,
            interval: interval as i32,
            ..Default::default()
        })
        .await?;
    for bucket in buckets {
        writeln!(out, "{}\t{}", bucket_start(&bucket), bucket.count)?;
    }
    Ok(())
}

/// `query uniques`: the distinct users of the window, or one `start<TAB>users` line per
/// bucket.
async fn uniques(
    client: &Client,
    out: &mut impl Write,
    window: &WindowArgs,
    event_type: Option<String>,
    interval: Option<Interval>,
) -> anyhow::Result<()> {
    let measure = v1::Measure::UniqueUsers as i32;
    let Some(interval) = interval else {
        let users = client
            .count_events(v1::CountEventsRequest {
                event_type: event_type.unwrap_or_default(),
                start_time: optional_time("start", &window.start)?,
                end_time: optional_time("end", &window.end)?,
                measure,
                ..Default::default()
            })
            .await?;
        writeln!(out, "{users}")?;
        return Ok(());
    };
    let buckets = client
        .timeseries(v1::EventTimeseriesRequest {
            event_type: event_type.unwrap_or_default(),
            start_time: optional_time("start", &window.start)?,
            end_time: optional_time("end", &window.end)?,
            interval: interval_to_proto(interval) as i32,
            measure,
            ..Default::default()
        })
        .await?;
    for bucket in buckets {
        writeln!(out, "{}\t{}", bucket_start(&bucket), bucket.count)?;
    }
    Ok(())
}

/// What `query breakdown` splits.
#[derive(Debug)]
struct Split {
    property: String,
    event_type: Option<String>,
    limit: i32,
}

/// `query breakdown`: `value<TAB>count` lines for the window, or
/// `start<TAB>value<TAB>count` lines per bucket.
async fn breakdown(
    client: &Client,
    out: &mut impl Write,
    window: &WindowArgs,
    split: Split,
    interval: Option<Interval>,
) -> anyhow::Result<()> {
    let Some(interval) = interval else {
        let groups = client
            .breakdown(v1::CountEventsRequest {
                event_type: split.event_type.unwrap_or_default(),
                start_time: optional_time("start", &window.start)?,
                end_time: optional_time("end", &window.end)?,
                group_by_property: split.property,
                group_limit: split.limit,
                ..Default::default()
            })
            .await?;
        for group in groups {
            writeln!(out, "{}\t{}", group_label(&group), group.count)?;
        }
        return Ok(());
    };
    let buckets = client
        .timeseries(v1::EventTimeseriesRequest {
            event_type: split.event_type.unwrap_or_default(),
            start_time: optional_time("start", &window.start)?,
            end_time: optional_time("end", &window.end)?,
            interval: interval_to_proto(interval) as i32,
            group_by_property: split.property,
            group_limit: split.limit,
            ..Default::default()
        })
        .await?;
    for bucket in buckets {
        let start = bucket_start(&bucket);
        for group in &bucket.groups {
            writeln!(out, "{start}\t{}\t{}", group_label(group), group.count)?;
        }
    }
    Ok(())
}

/// A group's value as JSON, or what stands for the events without one.
fn group_label(group: &v1::PropertyGroup) -> &str {
    match v1::PropertyGroupKind::try_from(group.kind) {
        Ok(v1::PropertyGroupKind::Missing) => "(not set)",
        Ok(v1::PropertyGroupKind::Other) => "(other)",
        _ => &group.value,
    }
}

fn interval_to_proto(interval: Interval) -> v1::Interval {
    match interval {
        Interval::Minute => v1::Interval::Minute,
        Interval::Hour => v1::Interval::Hour,
        Interval::Day => v1::Interval::Day,
    }
}

/// A bucket's start in RFC 3339, whole seconds.
fn bucket_start(bucket: &v1::TimeseriesBucket) -> String {
    bucket
        .start_time
        .as_ref()
        .and_then(eventline_core::time::from_proto)
        .map(|time| time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

pub(crate) async fn tail(args: TailArgs) -> anyhow::Result<()> {
    let client = args.client.connect().await?;
    let request = v1::TailEventsRequest {
        event_type: args.filter.event_type.unwrap_or_default(),
        user_id: args.filter.user_id.unwrap_or_default(),
        property_filters: args.filter.props,
        start_time: optional_time("since", &args.since)?,
        cursor: args.cursor.unwrap_or_default(),
    };
    // The SDK's tail resumes by itself after a broken connection; it ends only when the
    // server stays away, and then the cursor to resume from is printed.
    let mut stream = std::pin::pin!(client.tail(request));
    let mut last_cursor = String::new();
    while let Some(item) = stream.next().await {
        let item = match item {
            Ok(item) => item,
            Err(error) => {
                if !last_cursor.is_empty() {
                    eprintln!("resume with: eventline tail --cursor {last_cursor}");
                }
                return Err(error.into());
            }
        };
        let mut out = std::io::stdout().lock();
        print_event(&mut out, &item.event)?;
        out.flush()?;
        last_cursor = item.cursor;
    }
    Ok(())
}

pub(crate) async fn export(args: ExportArgs) -> anyhow::Result<()> {
    let client = args.client.connect().await?;
    let request = v1::ExportEventsRequest {
        event_type: args.filter.event_type.unwrap_or_default(),
        user_id: args.filter.user_id.unwrap_or_default(),
        property_filters: args.filter.props,
        start_time: optional_time("start", &args.window.start)?,
        end_time: optional_time("end", &args.window.end)?,
        cursor: args.cursor.unwrap_or_default(),
    };
    let mut stream = std::pin::pin!(client.export(request));
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut exported = 0u64;
    let mut last_cursor = String::new();
    while let Some(item) = stream.next().await {
        match item {
            Ok(item) => {
                print_event(&mut out, &item.event)?;
                exported += 1;
                last_cursor = item.cursor;
            }
            Err(error) => {
                out.flush()?;
                if !last_cursor.is_empty() {
                    eprintln!("resume with: eventline export --cursor {last_cursor}");
                }
                bail!("export stopped after {exported} events: {error}");
            }
        }
    }
    out.flush()?;
    eprintln!("exported {exported} events");
    Ok(())
}
