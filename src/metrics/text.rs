//! The Prometheus text exposition format 0.0.4, written by hand: `# HELP` and `# TYPE` for
//! every family, then its samples, one a line. Pure (builds a string); the scrape route and
//! the node_exporter textfile both serve what it builds.

use std::fmt::Write as _;

/// The content type of a scrape answer.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A metric family's type, as `# TYPE` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// A sample's value: counts print as integers, everything else as Rust prints an `f64`
/// (never in exponent form, which the format allows but people read less easily).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    Count(u64),
    Float(f64),
}

/// An exposition being written.
#[derive(Debug, Default)]
pub struct Text {
    out: String,
}

impl Text {
    pub fn new() -> Text {
        Text::default()
    }

    /// Starts a family: its help line (escaped as the format wants) and its type.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {}", kind.as_str());
    }

    /// One sample of the family last started (`name` carries a histogram's `_bucket`,
    /// `_sum` or `_count` suffix).
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: Value) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (label, text)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(label);
                self.out.push_str("=\"");
                for c in text.chars() {
                    match c {
                        '\\' => self.out.push_str("\\\\"),
                        '"' => self.out.push_str("\\\""),
                        '\n' => self.out.push_str("\\n"),
                        c => self.out.push(c),
                    }
                }
                self.out.push('"');
            }
            self.out.push('}');
        }
        self.out.push(' ');
        let _ = match value {
            Value::Count(n) => write!(self.out, "{n}"),
            Value::Float(x) => write!(self.out, "{}", Float(x)),
        };
        self.out.push('\n');
    }

    pub fn into_string(self) -> String {
        self.out
    }
}

/// An `f64` as the format spells it: `+Inf`, `-Inf`, `NaN`, else Rust's shortest form.
pub struct Float(pub f64);

impl std::fmt::Display for Float {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            x if x.is_nan() => f.write_str("NaN"),
            x if x == f64::INFINITY => f.write_str("+Inf"),
            x if x == f64::NEG_INFINITY => f.write_str("-Inf"),
            x => write!(f, "{x}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_samples_and_escapes() {
        let mut text = Text::new();
        text.family("psi_x_total", Kind::Counter, "Things \\ done\nso far.");
        text.sample("psi_x_total", &[], Value::Count(3));
        text.family("psi_y", Kind::Gauge, "A gauge.");
        text.sample(
            "psi_y",
            &[("a", "q\"b\\s\nn"), ("b", "ok")],
            Value::Float(0.25),
        );
        text.sample("psi_y", &[("a", "big")], Value::Float(1.7e9));
        text.sample("psi_y", &[("a", "inf")], Value::Float(f64::INFINITY));
        assert_eq!(
            text.into_string(),
            "# HELP psi_x_total Things \\\\ done\\nso far.\n\
             # TYPE psi_x_total counter\n\
             psi_x_total 3\n\
             # HELP psi_y A gauge.\n\
             # TYPE psi_y gauge\n\
             psi_y{a=\"q\\\"b\\\\s\\nn\",b=\"ok\"} 0.25\n\
             psi_y{a=\"big\"} 1700000000\n\
             psi_y{a=\"inf\"} +Inf\n"
        );
    }
}
