//! Aligned tables for the human output of the commands, coloured only on a terminal.
//!
//! Columns are as wide as their widest cell (counted in characters), so ids, display numbers
//! and names line up whatever their length, as `kubectl get` and `systemctl list-units` do.
//! Colour marks what the alert rules call bad; it is written only when stdout is a terminal
//! and `NO_COLOR` is unset or empty (<https://no-color.org>), so a pipe or a file never gets
//! an escape code.

use std::io::IsTerminal;

use crate::output::outln;

/// How a cell is drawn on a terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Paint {
    Plain,
    /// What an alert would call critical.
    Bad,
    /// A warning.
    Warn,
    /// Healthy again (a resolving change).
    Good,
    /// Of little weight (gone targets, empty values).
    Dim,
}

impl Paint {
    fn code(self) -> Option<&'static str> {
        match self {
            Paint::Plain => None,
            Paint::Bad => Some("\x1b[1;31m"),
            Paint::Warn => Some("\x1b[33m"),
            Paint::Good => Some("\x1b[32m"),
            Paint::Dim => Some("\x1b[2m"),
        }
    }

    /// Only trouble stands out: a healthy value is not worth a colour.
    pub fn trouble_only(self) -> Paint {
        match self {
            Paint::Good => Paint::Plain,
            p => p,
        }
    }

    /// The paint of a severity from the alert rule table.
    pub fn of(severity: Option<crate::alerts::rules::Severity>) -> Paint {
        use crate::alerts::rules::Severity;
        match severity {
            Some(Severity::Critical) => Paint::Bad,
            Some(Severity::Warning) => Paint::Warn,
            Some(Severity::Improving | Severity::Resolved) => Paint::Good,
            None => Paint::Plain,
        }
    }
}

/// Whether command output on stdout may be coloured: a terminal, and `NO_COLOR` unset or
/// empty.
pub fn colour_on_stdout() -> bool {
    colour_allowed(
        std::io::stdout().is_terminal(),
        std::env::var_os("NO_COLOR"),
    )
}

fn colour_allowed(terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

/// One cell: its text and how to paint it.
#[derive(Debug, Clone)]
pub struct Cell {
    text: String,
    paint: Paint,
}

impl Cell {
    pub fn new(text: impl Into<String>, paint: Paint) -> Cell {
        Cell {
            text: text.into(),
            paint,
        }
    }

    pub fn plain(text: impl Into<String>) -> Cell {
        Cell::new(text, Paint::Plain)
    }

    /// An optional value: `-` when absent.
    pub fn opt(text: Option<&str>, paint: Paint) -> Cell {
        match text {
            Some(t) => Cell::new(t, paint),
            None => Cell::new("-", Paint::Plain),
        }
    }
}

/// A table: headers, rows, and per column the widest a cell may be (longer ones are cut with
/// `…`).
pub struct Table {
    headers: Vec<&'static str>,
    max: Vec<usize>,
    rows: Vec<Vec<Cell>>,
}

impl Table {
    /// `columns`: (header, widest cell allowed).
    pub fn new(columns: &[(&'static str, usize)]) -> Table {
        Table {
            headers: columns.iter().map(|(h, _)| *h).collect(),
            max: columns.iter().map(|(_, m)| *m).collect(),
            rows: Vec::new(),
        }
    }

    pub fn push(&mut self, row: Vec<Cell>) {
        debug_assert_eq!(row.len(), self.headers.len());
        self.rows.push(row);
    }

    /// Prints the table on stdout, coloured when `colour`.
    pub fn print(mut self, colour: bool) {
        for row in &mut self.rows {
            for (cell, max) in row.iter_mut().zip(&self.max) {
                cell.text = truncate(&cell.text, *max);
            }
        }
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.text.chars().count());
            }
        }
        // One write for the whole table: a line at a time costs a write and a flush each,
        // which at 100,000 numbers is most of the command's time.
        let header: Vec<Cell> = self.headers.iter().map(|h| Cell::plain(*h)).collect();
        let mut text = line(&header, &widths, colour);
        for row in &self.rows {
            text.push('\n');
            text.push_str(&line(row, &widths, colour));
        }
        outln!("{text}");
    }
}

/// One line: cells padded to their column's width (the last one not, so no line ends in
/// blanks), two spaces apart; the escape codes go around the padded text so they never
/// count towards a width.
fn line(cells: &[Cell], widths: &[usize], colour: bool) -> String {
    let mut out = String::new();
    let last = cells.len().saturating_sub(1);
    for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
        if i > 0 {
            out.push_str("  ");
        }
        let pad = if i == last {
            0
        } else {
            width.saturating_sub(cell.text.chars().count())
        };
        match cell.paint.code().filter(|_| colour) {
            Some(code) => {
                out.push_str(code);
                out.push_str(&cell.text);
                out.push_str("\x1b[0m");
            }
            None => out.push_str(&cell.text),
        }
        out.extend(std::iter::repeat_n(' ', pad));
    }
    out.truncate(out.trim_end().len());
    out
}

/// `s` cut to `n` characters, the last one `…` when cut.
pub fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour_allowed(true, None));
        assert!(colour_allowed(true, Some("".into())));
        assert!(!colour_allowed(true, Some("1".into())));
        assert!(!colour_allowed(false, None));
    }

    #[test]
    fn columns_line_up_and_colour_does_not_count_towards_widths() {
        let cells = [Cell::new("RED", Paint::Bad), Cell::plain("x")];
        let plain = line(&cells, &[6, 1], false);
        assert_eq!(plain, "RED     x");
        let painted = line(&cells, &[6, 1], true);
        assert_eq!(painted, "\x1b[1;31mRED\x1b[0m     x");
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("abc", 4), "abc");
    }
}
