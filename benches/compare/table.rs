//! The results: per-column samples, medians, ratios, and the Markdown table.

use std::collections::HashMap;
use std::fmt::Write as _;

use crate::client::Direction;
use crate::procs::Kind;
use crate::streams::Via;

/// A row of the table (a figure).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Row {
    BulkMib(Direction, usize),
    BulkCpu(Direction, usize),
    RttP50,
    RttP99,
    /// p50 minus `direct`'s p50 (derived).
    RttP50Over,
    /// p99 minus `direct`'s p99 (derived).
    RttP99Over,
    HandshakeRate,
    HandshakeCpu,
    IdleRss,
    IdleFds,
    EchoRss,
    EchoFds,
    /// RSS growth per connection that sent nothing.
    SilentRss,
    SilentFds,
    /// How many of the silent connections were still open when measured.
    SilentOpen,
    HalfClose,
    /// wss (TLS terminated by the proxy): bulk MiB/s.
    TlsBulkMib(Direction, usize),
    /// wss: bulk proxy CPU-s/GiB.
    TlsBulkCpu(Direction, usize),
    /// wss handshakes, a full TLS handshake each: upgrades/s.
    TlsHandshakeRate,
    /// wss handshakes: proxy CPU-µs per TLS upgrade.
    TlsHandshakeCpu,
    /// Proxy RSS growth per held (idle) wss connection.
    TlsIdleRss,
    /// Many tunnels held at once (`h2` group): proxy RSS growth per tunnel.
    StreamsRss(Via),
    /// ... and per tunnel after the echo phase (from before the first was opened).
    StreamsEchoRss(Via),
    /// ... proxy CPU-ms per MiB echoed.
    StreamsCpu(Via),
    /// ... MiB/s echoed.
    StreamsMib(Via),
    /// ... round trip of 64 B, p50 µs.
    StreamsP50(Via),
    /// ... p99 µs.
    StreamsP99(Via),
}

impl Row {
    pub const ORDER: [Row; 45] = [
        Row::BulkMib(Direction::Up, 1),
        Row::BulkCpu(Direction::Up, 1),
        Row::BulkMib(Direction::Down, 1),
        Row::BulkCpu(Direction::Down, 1),
        Row::BulkMib(Direction::Up, 8),
        Row::BulkCpu(Direction::Up, 8),
        Row::BulkMib(Direction::Down, 8),
        Row::BulkCpu(Direction::Down, 8),
        Row::RttP50,
        Row::RttP99,
        Row::RttP50Over,
        Row::RttP99Over,
        Row::HandshakeRate,
        Row::HandshakeCpu,
        Row::IdleRss,
        Row::IdleFds,
        Row::EchoRss,
        Row::EchoFds,
        Row::SilentRss,
        Row::SilentFds,
        Row::SilentOpen,
        Row::HalfClose,
        Row::TlsBulkMib(Direction::Up, 1),
        Row::TlsBulkCpu(Direction::Up, 1),
        Row::TlsBulkMib(Direction::Down, 1),
        Row::TlsBulkCpu(Direction::Down, 1),
        Row::TlsBulkMib(Direction::Up, 8),
        Row::TlsBulkCpu(Direction::Up, 8),
        Row::TlsBulkMib(Direction::Down, 8),
        Row::TlsBulkCpu(Direction::Down, 8),
        Row::TlsHandshakeRate,
        Row::TlsHandshakeCpu,
        Row::TlsIdleRss,
        Row::StreamsRss(Via::H2),
        Row::StreamsRss(Via::H1),
        Row::StreamsEchoRss(Via::H2),
        Row::StreamsEchoRss(Via::H1),
        Row::StreamsCpu(Via::H2),
        Row::StreamsCpu(Via::H1),
        Row::StreamsMib(Via::H2),
        Row::StreamsMib(Via::H1),
        Row::StreamsP50(Via::H2),
        Row::StreamsP50(Via::H1),
        Row::StreamsP99(Via::H2),
        Row::StreamsP99(Via::H1),
    ];

    pub fn label(self) -> String {
        let bulk = |dir: Direction, conns: usize| {
            format!(
                "bulk, {conns} conn{}, {}",
                if conns == 1 { "" } else { "s" },
                match dir {
                    Direction::Up => "client → backend",
                    Direction::Down => "backend → client",
                }
            )
        };
        let streams = |via: Via| match via {
            Via::H2 => "HTTP/2 streams (RFC 8441)",
            Via::H1 => "HTTP/1.1 upgrades (same proxy)",
        };
        match self {
            Row::BulkMib(dir, conns) => format!("{}: MiB/s", bulk(dir, conns)),
            Row::BulkCpu(dir, conns) => format!("{}: proxy CPU-s/GiB", bulk(dir, conns)),
            Row::TlsBulkMib(dir, conns) => format!("wss {}: MiB/s", bulk(dir, conns)),
            Row::TlsBulkCpu(dir, conns) => {
                format!("wss {}: proxy CPU-s/GiB", bulk(dir, conns))
            }
            Row::TlsHandshakeRate => "wss handshakes (16 workers, full TLS): upgrades/s".into(),
            Row::TlsHandshakeCpu => "wss handshakes: proxy CPU-µs/TLS upgrade".into(),
            Row::TlsIdleRss => "wss idle: proxy RSS KiB per held wss connection".into(),
            Row::StreamsRss(via) => format!("{}: proxy RSS KiB/tunnel held", streams(via)),
            Row::StreamsEchoRss(via) => {
                format!("{}: proxy RSS KiB/tunnel after echo", streams(via))
            }
            Row::StreamsCpu(via) => format!("{}: proxy CPU-ms/MiB echoed", streams(via)),
            Row::StreamsMib(via) => format!("{}: echo MiB/s", streams(via)),
            Row::StreamsP50(via) => format!("{}: round trip 64 B p50 µs", streams(via)),
            Row::StreamsP99(via) => format!("{}: round trip 64 B p99 µs", streams(via)),
            Row::RttP50 => "round trip 64 B: p50 µs".into(),
            Row::RttP99 => "round trip 64 B: p99 µs".into(),
            Row::RttP50Over => "round trip 64 B: p50 overhead over direct, µs".into(),
            Row::RttP99Over => "round trip 64 B: p99 overhead over direct, µs".into(),
            Row::HandshakeRate => "handshakes (16 workers): upgrades/s".into(),
            Row::HandshakeCpu => "handshakes: proxy CPU-µs/upgrade".into(),
            Row::IdleRss => "idle: proxy RSS KiB per held upgraded connection".into(),
            Row::IdleFds => "idle: proxy fds per held upgraded connection".into(),
            Row::EchoRss => "idle: extra proxy RSS KiB per connection after one 16 B echo".into(),
            Row::EchoFds => "idle: proxy fds per held connection after one 16 B echo".into(),
            Row::SilentRss => {
                "silent: proxy RSS KiB per connection that sent nothing (before its head)".into()
            }
            Row::SilentFds => "silent: proxy fds per connection that sent nothing".into(),
            Row::SilentOpen => "silent: connections still open when measured".into(),
            Row::HalfClose => "half-close: reply after client EOF".into(),
        }
    }

    /// `Some(true)` when more is better, `Some(false)` when less is, `None` for a row that
    /// is a check, not a quantity to compare.
    pub fn higher_is_better(self) -> Option<bool> {
        match self {
            Row::BulkMib(..)
            | Row::HandshakeRate
            | Row::TlsBulkMib(..)
            | Row::TlsHandshakeRate
            | Row::StreamsMib(_) => Some(true),
            Row::BulkCpu(..)
            | Row::RttP50
            | Row::RttP99
            | Row::RttP50Over
            | Row::RttP99Over
            | Row::HandshakeCpu
            | Row::IdleRss
            | Row::IdleFds
            | Row::EchoRss
            | Row::EchoFds
            | Row::SilentRss
            | Row::SilentFds
            | Row::TlsBulkCpu(..)
            | Row::TlsHandshakeCpu
            | Row::TlsIdleRss
            | Row::StreamsRss(_)
            | Row::StreamsEchoRss(_)
            | Row::StreamsCpu(_)
            | Row::StreamsP50(_)
            | Row::StreamsP99(_) => Some(false),
            Row::SilentOpen | Row::HalfClose => None,
        }
    }

    /// Whether the row is one of the `tls` or `h2` groups'.
    pub fn is_tls_or_h2(self) -> bool {
        matches!(
            self,
            Row::TlsBulkMib(..)
                | Row::TlsBulkCpu(..)
                | Row::TlsHandshakeRate
                | Row::TlsHandshakeCpu
                | Row::TlsIdleRss
                | Row::StreamsRss(_)
                | Row::StreamsEchoRss(_)
                | Row::StreamsCpu(_)
                | Row::StreamsMib(_)
                | Row::StreamsP50(_)
                | Row::StreamsP99(_)
        )
    }

    /// Whether a ratio of two columns' values says something. Not for checks, nor for the
    /// extra RSS after one echo, which is near zero or even negative for most proxies.
    pub fn ratio_makes_sense(self) -> bool {
        self.higher_is_better().is_some() && self != Row::EchoRss
    }

    /// The unit, for progress lines.
    pub fn unit(self) -> &'static str {
        match self {
            Row::BulkMib(..) | Row::TlsBulkMib(..) | Row::StreamsMib(_) => "MiB/s",
            Row::BulkCpu(..) | Row::TlsBulkCpu(..) => "CPU-s/GiB",
            Row::TlsHandshakeRate => "TLS upgrades/s",
            Row::TlsHandshakeCpu => "CPU-µs/TLS upgrade",
            Row::TlsIdleRss => "KiB/wss conn",
            Row::StreamsRss(_) | Row::StreamsEchoRss(_) => "KiB/tunnel",
            Row::StreamsCpu(_) => "CPU-ms/MiB",
            Row::StreamsP50(_) => "µs p50",
            Row::StreamsP99(_) => "µs p99",
            Row::RttP50 => "µs p50",
            Row::RttP99 => "µs p99",
            Row::RttP50Over | Row::RttP99Over => "µs",
            Row::HandshakeRate => "upgrades/s",
            Row::HandshakeCpu => "CPU-µs/upgrade",
            Row::IdleRss | Row::EchoRss => "KiB/conn",
            Row::IdleFds | Row::EchoFds => "fds/conn",
            Row::SilentRss => "KiB/silent conn",
            Row::SilentFds => "fds/silent conn",
            Row::SilentOpen => "still open",
            Row::HalfClose => "(1 = pass)",
        }
    }

    pub fn format_value(self, value: f64) -> String {
        match self {
            Row::BulkMib(..)
            | Row::HandshakeRate
            | Row::SilentOpen
            | Row::TlsBulkMib(..)
            | Row::TlsHandshakeRate
            | Row::StreamsMib(_) => thousands(value),
            Row::BulkCpu(..) | Row::TlsBulkCpu(..) | Row::StreamsCpu(_) => format!("{value:.3}"),
            Row::TlsHandshakeCpu | Row::StreamsP50(_) | Row::StreamsP99(_) => {
                format!("{value:.1}")
            }
            Row::TlsIdleRss | Row::StreamsRss(_) | Row::StreamsEchoRss(_) => {
                format!("{value:.2}")
            }
            Row::RttP50 | Row::RttP99 | Row::RttP50Over | Row::RttP99Over => {
                format!("{value:.1}")
            }
            Row::HandshakeCpu => format!("{value:.1}"),
            Row::IdleRss | Row::EchoRss | Row::SilentRss => format!("{value:.2}"),
            Row::IdleFds | Row::EchoFds | Row::SilentFds => format!("{value:.1}"),
            Row::HalfClose => format!("{value:.0}"),
        }
    }
}

/// The row a derived row is computed from.
fn base(row: Row) -> Row {
    match row {
        Row::RttP50Over => Row::RttP50,
        Row::RttP99Over => Row::RttP99,
        _ => row,
    }
}

fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if value < 0.0 {
        out.insert(0, '-');
    }
    out
}

/// Whether a column could be measured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Ok,
    NotInstalled,
    Failed(String),
}

/// One proxy's results.
#[derive(Debug)]
pub struct Column {
    pub kind: Kind,
    pub status: Status,
    pub version: Option<String>,
    pub samples: HashMap<Row, Vec<f64>>,
    pub errors: HashMap<Row, String>,
}

impl Column {
    pub fn new(kind: Kind) -> Column {
        Column {
            kind,
            status: Status::Ok,
            version: None,
            samples: HashMap::new(),
            errors: HashMap::new(),
        }
    }

    /// Records a failure for these rows (their samples are discarded).
    pub fn fail(&mut self, rows: Vec<Row>, error: String) {
        for row in rows {
            self.samples.remove(&row);
            self.errors.entry(row).or_insert_with(|| error.clone());
        }
    }

    fn median(&self, row: Row) -> Option<f64> {
        let mut v = self.samples.get(&row)?.clone();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let mid = v.len() / 2;
        Some(if v.len() % 2 == 1 {
            v[mid]
        } else {
            (v[mid - 1] + v[mid]) / 2.0
        })
    }
}

/// Everything the Markdown output needs.
#[derive(Debug)]
pub struct Table {
    pub columns: Vec<Column>,
    /// Connections per silent run, for the "still open" row.
    pub silent_conns: usize,
    pub config_note: String,
    /// What the table notes say about the `tls` and `h2` groups, when they ran.
    pub group_notes: Vec<String>,
    pub machine: String,
    pub load: String,
}

impl Table {
    pub fn column(&self, kind: Kind) -> Option<&Column> {
        self.columns
            .iter()
            .find(|c| c.kind == kind && c.status == Status::Ok)
    }

    /// The median of a figure for a column, derived rows included.
    pub fn value(&self, column: &Column, row: Row) -> Option<f64> {
        let over = |base: Row| {
            if column.kind == Kind::Direct {
                return None;
            }
            let direct = self.column(Kind::Direct)?.median(base)?;
            Some(column.median(base)? - direct)
        };
        match row {
            Row::RttP50Over => over(Row::RttP50),
            Row::RttP99Over => over(Row::RttP99),
            _ => column.median(row),
        }
    }

    fn error(&self, column: &Column, row: Row) -> Option<String> {
        column.errors.get(&base(row)).cloned()
    }

    /// Whether any column has a figure or an error for this row: the rows of scenario
    /// groups that did not run are left out.
    pub fn measured(&self, row: Row) -> bool {
        let row = base(row);
        self.columns
            .iter()
            .any(|c| c.samples.contains_key(&row) || c.errors.contains_key(&row))
    }

    /// The best of nginx, HAProxy and Caddy for a figure.
    fn best_peer(&self, row: Row) -> Option<(Kind, f64)> {
        let higher = row.higher_is_better()?;
        let peers = [Kind::Nginx, Kind::Haproxy, Kind::Caddy]
            .into_iter()
            .filter_map(|kind| Some((kind, self.value(self.column(kind)?, row)?)));
        if higher {
            peers.max_by(|a, b| a.1.total_cmp(&b.1))
        } else {
            peers.min_by(|a, b| a.1.total_cmp(&b.1))
        }
    }

    /// The targets of every issue whose rows were measured, each met or missed.
    fn targets(&self) -> String {
        let mut out = String::new();
        if Row::ORDER
            .iter()
            .any(|&r| !r.is_tls_or_h2() && self.measured(r))
        {
            out.push_str(&self.targets_plain());
        }
        if self.measured(Row::TlsHandshakeCpu) || self.measured(Row::TlsBulkCpu(Direction::Up, 1)) {
            out.push_str(&self.targets_tls());
        }
        if self.measured(Row::StreamsRss(Via::H2)) || self.measured(Row::StreamsCpu(Via::H2)) {
            out.push_str(&self.targets_h2());
        }
        out
    }

    /// Issue 11: wsrelay's CPU per GiB and per TLS upgrade at most the best peer's, its RSS
    /// per idle wss connection at most half the best peer's.
    fn targets_tls(&self) -> String {
        let Some(ws) = self.columns.iter().find(|c| c.kind == Kind::Wsrelay) else {
            return String::new();
        };
        let ws = (ws.status == Status::Ok).then_some(ws);
        let mut out = String::from("Targets for wsrelay over wss (issue 11):\n\n");
        let fmt = |row: Row, v: Option<f64>| {
            v.map_or("?".to_string(), |v| {
                format!("{} {}", row.format_value(v), row.unit())
            })
        };
        let mut rows: Vec<(Row, f64)> = Vec::new();
        for conns in [1, 8] {
            for dir in [Direction::Up, Direction::Down] {
                rows.push((Row::TlsBulkCpu(dir, conns), 1.0));
            }
        }
        rows.push((Row::TlsHandshakeCpu, 1.0));
        rows.push((Row::TlsIdleRss, 0.5));
        for (row, factor) in rows {
            if !self.measured(row) {
                continue;
            }
            let mine = ws.and_then(|ws| self.value(ws, row));
            let best = self.best_peer(row);
            let bound = if factor == 1.0 {
                "≤ the best peer's".to_string()
            } else {
                format!("≤ {factor}× the best peer's")
            };
            let verdict = match (mine, best) {
                (Some(m), Some((_, b))) => {
                    if m <= factor * b {
                        "met"
                    } else {
                        "**missed**"
                    }
                }
                _ => "not measured",
            };
            let _ = writeln!(
                out,
                "- {} {bound} (wsrelay {}, best peer {}): {verdict}",
                row.label(),
                fmt(row, mine),
                best.map_or("?".to_string(), |(k, b)| format!(
                    "{} {}",
                    k.label(),
                    fmt(row, Some(b))
                ))
            );
        }
        out.push('\n');
        out
    }

    /// Issue 12: over HTTP/2, RSS per stream and CPU per MiB at most HAProxy's, for the
    /// crate's columns that serve HTTP/2.
    fn targets_h2(&self) -> String {
        let mut out = String::new();
        if self.column(Kind::Axum).is_none() && self.column(Kind::Wsrelay).is_none() {
            return out;
        }
        out.push_str("Targets over HTTP/2 (issue 12), against HAProxy's h2 → HTTP/1.1:\n\n");
        let haproxy = self.column(Kind::Haproxy);
        for kind in [Kind::Axum, Kind::Wsrelay] {
            let Some(col) = self.column(kind) else {
                continue;
            };
            for row in [Row::StreamsRss(Via::H2), Row::StreamsCpu(Via::H2)] {
                let mine = self.value(col, row);
                let theirs = haproxy.and_then(|h| self.value(h, row));
                let verdict = match (mine, theirs) {
                    (Some(m), Some(h)) if m <= h => "met",
                    (Some(_), Some(_)) => "**missed**",
                    _ => "not measured",
                };
                let show = |v: Option<f64>| {
                    v.map_or("?".to_string(), |v| {
                        format!("{} {}", row.format_value(v), row.unit())
                    })
                };
                let _ = writeln!(
                    out,
                    "- {}: {} {} ≤ HAProxy's {}: {verdict}",
                    kind.label(),
                    row.label(),
                    show(mine),
                    show(theirs)
                );
            }
        }
        out.push('\n');
        out
    }

    /// Issue 15's targets for the crate's columns (the standalone proxy, and axum for the
    /// handshake), each met or missed, as ratios to the peers of the same run.
    fn targets_plain(&self) -> String {
        let Some(ws) = self.column(Kind::Wsrelay) else {
            return String::new();
        };
        let direct = self.column(Kind::Direct);
        let nginx = self.column(Kind::Nginx);
        let mut lines = Vec::new();
        // Only what this run measured is listed.
        let mut check = |what: String, ok: Option<bool>| {
            if let Some(ok) = ok {
                let mark = if ok { "met" } else { "**missed**" };
                lines.push(format!("{what}: {mark}"));
            }
        };
        let ratio = |mine: Option<f64>, other: Option<f64>| match (mine, other) {
            (Some(m), Some(o)) if o > 0.0 => Some(m / o),
            _ => None,
        };
        let shown = |r: Option<f64>| r.map_or("?".to_string(), |r| format!("{r:.2}×"));

        // 1. Handshakes: proxy CPU per upgrade at most nginx's, standalone and through axum.
        let nginx_hs = nginx.and_then(|n| self.value(n, Row::HandshakeCpu));
        for kind in [Kind::Wsrelay, Kind::Axum] {
            let Some(column) = self.column(kind) else {
                continue;
            };
            let r = ratio(self.value(column, Row::HandshakeCpu), nginx_hs);
            check(
                format!(
                    "{} handshake CPU-µs/upgrade ≤ nginx's ({} nginx)",
                    kind.label(),
                    shown(r)
                ),
                r.map(|r| r <= 1.0),
            );
        }
        // 2. Bulk: throughput at least the best peer's and 0.9× direct, CPU per GiB at most
        //    half the best peer's.
        for conns in [1, 8] {
            for dir in [Direction::Up, Direction::Down] {
                let arrow = if dir == Direction::Up {
                    "client → backend"
                } else {
                    "backend → client"
                };
                let mib = Row::BulkMib(dir, conns);
                let mine = self.value(ws, mib);
                let best = self.best_peer(mib).map(|(_, b)| b);
                let r = ratio(mine, best);
                check(
                    format!(
                        "bulk {conns} conn {arrow} MiB/s ≥ the best peer's ({})",
                        shown(r)
                    ),
                    r.map(|r| r >= 1.0),
                );
                let r = ratio(mine, direct.and_then(|d| d.median(mib)));
                check(
                    format!(
                        "bulk {conns} conn {arrow} MiB/s ≥ 0.9× direct ({})",
                        shown(r)
                    ),
                    r.map(|r| r >= 0.9),
                );
                let cpu = Row::BulkCpu(dir, conns);
                let best = self.best_peer(cpu).map(|(_, b)| b);
                let r = ratio(self.value(ws, cpu), best);
                check(
                    format!(
                        "bulk {conns} conn {arrow} CPU-s/GiB ≤ 0.5× the best peer's ({})",
                        shown(r)
                    ),
                    r.map(|r| r <= 0.5),
                );
            }
        }
        // 3. Round trips: p50 and p99 at most the best peer's.
        for row in [Row::RttP50, Row::RttP99] {
            let which = if row == Row::RttP50 { "p50" } else { "p99" };
            let best = self.best_peer(row).map(|(_, b)| b);
            let r = ratio(self.value(ws, row), best);
            check(
                format!("round trip {which} ≤ the best peer's ({})", shown(r)),
                r.map(|r| r <= 1.0),
            );
        }
        // 4. Silent connections: RSS per connection at most nginx's.
        let r = ratio(
            self.value(ws, Row::SilentRss),
            nginx.and_then(|n| self.value(n, Row::SilentRss)),
        );
        check(
            format!("RSS per silent connection ≤ nginx's ({} nginx)", shown(r)),
            r.map(|r| r <= 1.0),
        );
        let half = ws.samples.get(&Row::HalfClose);
        check(
            "half-close passes".into(),
            half.filter(|s| !s.is_empty())
                .map(|s| s.iter().all(|&x| x > 0.5)),
        );
        if lines.is_empty() {
            return String::new();
        }
        let mut out = String::from("Targets for wsrelay (issue 15; ratios within this run):\n\n");
        for line in lines {
            let _ = writeln!(out, "- {line}");
        }
        out.push('\n');
        out
    }

    pub fn render(&self) -> String {
        let mut notes: Vec<String> = Vec::new();
        let mut note = |text: String| -> usize {
            if let Some(i) = notes.iter().position(|n| *n == text) {
                return i + 1;
            }
            notes.push(text);
            notes.len()
        };
        let any = Row::ORDER.iter().any(|&r| self.measured(r));
        let rows: Vec<Row> = Row::ORDER
            .into_iter()
            .filter(|&row| !any || self.measured(row))
            .collect();
        // A column that could run but has nothing in any of these rows (`direct` when only
        // the `tls` or `h2` group ran) is left out.
        let columns: Vec<&Column> = self
            .columns
            .iter()
            .filter(|c| {
                c.status != Status::Ok
                    || rows
                        .iter()
                        .any(|&row| self.value(c, row).is_some() || self.error(c, row).is_some())
            })
            .collect();
        let columns = if columns.is_empty() {
            self.columns.iter().collect()
        } else {
            columns
        };
        let mut out = String::new();
        out.push_str("## WebSocket proxies compared (`cargo bench --bench compare`)\n\n");
        out.push_str("| figure |");
        for column in &columns {
            let _ = write!(out, " {} |", column.kind.label());
        }
        out.push_str("\n| --- |");
        for _ in &columns {
            out.push_str(" ---: |");
        }
        out.push('\n');
        let nginx = self.column(Kind::Nginx);
        let direct = self.column(Kind::Direct);
        for row in rows {
            let _ = write!(out, "| {} |", row.label());
            for &column in &columns {
                let cell = match &column.status {
                    Status::NotInstalled => "not installed".to_string(),
                    Status::Failed(e) => format!("failed [{}]", note(e.clone())),
                    Status::Ok => match (self.value(column, row), self.error(column, row)) {
                        (_, Some(e)) => format!("failed [{}]", note(e)),
                        (None, None) => "—".to_string(),
                        (Some(v), None) if row == Row::HalfClose => {
                            let runs = column.samples.get(&row).map_or(0, Vec::len);
                            let passed = column
                                .samples
                                .get(&row)
                                .map_or(0, |s| s.iter().filter(|&&x| x > 0.5).count());
                            match v {
                                _ if passed == runs => format!("pass ({passed}/{runs})"),
                                _ if passed == 0 => format!("**fails** (0/{runs})"),
                                _ => format!("**flaky** ({passed}/{runs})"),
                            }
                        }
                        (Some(_), None) if row == Row::SilentOpen => {
                            // The fewest still open over the runs: one closed early is enough
                            // to make that proxy's silent figures an underestimate.
                            let fewest = column
                                .samples
                                .get(&row)
                                .and_then(|s| s.iter().copied().reduce(f64::min))
                                .unwrap_or(0.0);
                            let all = self.silent_conns as f64;
                            if fewest >= all {
                                format!("all {}", thousands(all))
                            } else {
                                format!("**{} of {}**", thousands(fewest), thousands(all))
                            }
                        }
                        (Some(v), None) => {
                            let mut cell = row.format_value(v);
                            let mut extra = Vec::new();
                            if let (Row::BulkMib(..), Some(d)) = (row, direct) {
                                if column.kind != Kind::Direct {
                                    if let Some(dv) = d.median(row).filter(|&dv| dv > 0.0) {
                                        extra.push(format!("{:.0}% of direct", 100.0 * v / dv));
                                    }
                                }
                            }
                            let ratio_makes_sense = row.ratio_makes_sense();
                            if let Some(n) =
                                nginx.filter(|n| n.kind != column.kind && ratio_makes_sense)
                            {
                                if let Some(nv) = self.value(n, row).filter(|&nv| nv > 0.0) {
                                    if v >= 0.0 {
                                        extra.push(format!("{:.2}× nginx", v / nv));
                                    }
                                }
                            }
                            if !extra.is_empty() {
                                let _ = write!(cell, " ({})", extra.join(", "));
                            }
                            cell
                        }
                    },
                };
                let _ = write!(out, " {cell} |");
            }
            out.push('\n');
        }
        out.push('\n');
        out.push_str(&self.targets());
        out.push_str("Notes:\n\n");
        let _ = writeln!(out, "- Machine: {}; {}.", self.machine, self.load);
        let _ = writeln!(out, "- {}", self.config_note);
        let versions: Vec<String> = self
            .columns
            .iter()
            .filter_map(|c| c.version.clone())
            .collect();
        if !versions.is_empty() {
            let _ = writeln!(
                out,
                "- Peers: {} (Debian packages), each started by the bench with its own config \
                 in a temp dir: nginx `worker_processes auto` with `proxy_http_version 1.1`, \
                 `Upgrade $http_upgrade`, `Connection $connection_upgrade`, \
                 `proxy_read_timeout 3600s` (access log off); HAProxy `mode http` with \
                 `timeout tunnel 3600s` (threads: its default, one per CPU); Caddy \
                 `reverse_proxy` (Go: GOMAXPROCS = CPUs).",
                versions.join(", ")
            );
        }
        let baseline = if std::env::var_os("COMPARE_BASELINE_PER_CORE").is_some_and(|v| v == "1") {
            "one single-threaded runtime per CPU, as wsrelay's (`COMPARE_BASELINE_PER_CORE=1`)"
        } else {
            "one multi-threaded runtime"
        };
        let _ = write!(
            out,
            "- wsrelay is `examples/proxy.rs` (release build: one single-threaded tokio runtime \
             per CPU, each on its own `SO_REUSEPORT` listener); copy_bidirectional is a raw TCP \
             relay with `tokio::io::copy_bidirectional` on {baseline} (no HTTP \
             parsing at all); axum is `examples/axum.rs` (release build: `axum::serve` on \
             tokio's default multi-threaded runtime, `Proxy::upgrade` as the handler of \
             `/ws`, the path its column upgrades at; the others get `/`). Every proxy runs as \
             its own process.\n\
             - After the `101` the client and the backend speak raw bytes, not WebSocket \
             frames: no proxy here looks at frames, so framing would only add load-generator \
             work.\n\
             - The load generator (this bench's tokio runtime) and the raw backend share the \
             same CPUs as the proxy; `direct` (no proxy) is the ceiling on this machine.\n\
             - CPU is utime + stime of the proxy's processes (nginx: master and workers) from \
             `/proc/PID/stat` over the timed part only. RSS is `VmRSS` from `/proc/PID/status`, \
             summed the same way, on a freshly started proxy: before and 1 s after opening the \
             upgraded connections (no data yet), then again after one 16-byte echo on 1,000 of \
             them; fds are the entries of `/proc/PID/fd`. Kernel socket buffers and pipes are \
             not in RSS.\n\
             - Silent: TCP connections that send nothing at all, opened on a freshly started \
             proxy and measured as soon as its fd count has stopped growing (within 3 s of \
             the last connect), which is before any head timeout here (wsrelay's is 10 s); \
             then each client socket is peeked: one that got an EOF, a reset or any bytes is \
             no longer open. The row \"still open\" is the fewest over the runs.\n\
             - Ratios: value ÷ nginx's value; for throughput also the % of `direct`. The chart \
             beside this file (`bench-compare.svg`) shows each figure of wsrelay, axum and \
             copy_bidirectional as a ratio to the best of nginx, HAProxy and Caddy for it.\n\
             - CPU pressure is the kernel's PSI `some avg60`: the share of the last minute in \
             which a task waited for a CPU. Work of other tenants inflates CPU times (cache and \
             scheduler effects) and latencies; compare columns of one table, not tables of \
             different runs.\n",
        );
        for text in &self.group_notes {
            let _ = writeln!(out, "- {text}");
        }
        for (i, text) in notes.iter().enumerate() {
            let _ = writeln!(out, "- [{}] {}", i + 1, text.replace('\n', " "));
        }
        out
    }
}
