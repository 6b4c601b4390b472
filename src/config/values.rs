//! Stage 1's value readers: one TOML value read as the type its key wants. A value of another
//! type is a problem whose fix shows the same value written right (`"30s"` for `30`, `["5"]`
//! for `"5"`); an unknown key is a problem naming the closest known one.

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::Span;
use super::problems::{Problems, last_key};

type Item<'i> = Spanned<DeValue<'i>>;

/// A value as people read it, for "X where Y is expected".
fn describe(v: &DeValue<'_>) -> String {
    match v {
        DeValue::String(s) => format!("the string \"{s}\""),
        DeValue::Integer(i) => format!("the number {i}"),
        DeValue::Float(f) => format!("the number {f}"),
        DeValue::Boolean(b) => format!("the boolean {b}"),
        DeValue::Datetime(d) => format!("the date {d}"),
        DeValue::Array(_) => "a list".to_owned(),
        DeValue::Table(_) => "a table".to_owned(),
    }
}

/// A scalar's text without TOML quoting, to suggest the same value in the right type.
fn bare(v: &DeValue<'_>) -> Option<String> {
    match v {
        DeValue::String(s) => Some(s.to_string()),
        DeValue::Integer(i) => Some(i.to_string()),
        DeValue::Float(f) => Some(f.to_string()),
        DeValue::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

fn wrong_type(item: &Item<'_>, key: &str, expected: &str, fix: &str, p: &mut Problems<'_>) {
    p.add(
        Some(item.span()),
        key,
        format!("{} where {expected} is expected", describe(item.get_ref())),
        fix,
    );
}

pub(super) fn read_str(
    item: &Item<'_>,
    key: &str,
    p: &mut Problems<'_>,
) -> Option<Spanned<String>> {
    if let DeValue::String(s) = item.get_ref() {
        return Some(Spanned::new(item.span(), s.to_string()));
    }
    let name = last_key(key);
    let fix = match bare(item.get_ref()) {
        Some(text) => format!("quote it: {name} = \"{text}\""),
        None => format!("write a string: {name} = \"...\" (see monitor.toml)"),
    };
    wrong_type(item, key, "a string", &fix, p);
    None
}

/// A duration is a string with a unit; `unit` is the one suggested for a bare number.
pub(super) fn read_duration(
    item: &Item<'_>,
    key: &str,
    unit: &str,
    p: &mut Problems<'_>,
) -> Option<Spanned<String>> {
    if let DeValue::String(s) = item.get_ref() {
        return Some(Spanned::new(item.span(), s.to_string()));
    }
    let name = last_key(key);
    let fix = match item.get_ref() {
        DeValue::Integer(i) => format!(
            "durations are strings with a unit: {name} = \"{i}{unit}\" (units: ms, s, m, h, d)"
        ),
        _ => {
            let example = match unit {
                "d" => "7d",
                "h" => "24h",
                "m" => "5m",
                _ => "30s",
            };
            format!(
                "write a string with a unit, e.g. {name} = \"{example}\" (units: ms, s, m, h, d)"
            )
        }
    };
    wrong_type(item, key, "a duration string", &fix, p);
    None
}

pub(super) fn read_int(item: &Item<'_>, key: &str, p: &mut Problems<'_>) -> Option<Spanned<i64>> {
    let name = last_key(key);
    match item.get_ref() {
        DeValue::Integer(i) => match i64::from_str_radix(i.as_str(), i.radix()) {
            Ok(n) => Some(Spanned::new(item.span(), n)),
            Err(_) => {
                p.add(
                    Some(item.span()),
                    key,
                    format!("{i} is too large a number"),
                    "see monitor.toml for the key's range",
                );
                None
            }
        },
        DeValue::String(s) if s.trim().parse::<i64>().is_ok() => {
            let fix = format!("write the number without quotes: {name} = {}", s.trim());
            wrong_type(item, key, "a whole number", &fix, p);
            None
        }
        _ => {
            let fix =
                format!("write a whole number without quotes, e.g. {name} = 4 (see monitor.toml)");
            wrong_type(item, key, "a whole number", &fix, p);
            None
        }
    }
}

pub(super) fn read_float(item: &Item<'_>, key: &str, p: &mut Problems<'_>) -> Option<Spanned<f64>> {
    let name = last_key(key);
    let number = match item.get_ref() {
        DeValue::Float(f) => f.as_str().replace('_', "").parse::<f64>().ok(),
        DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix())
            .ok()
            .map(|n| n as f64),
        _ => None,
    };
    if let Some(n) = number.filter(|n| n.is_finite()) {
        return Some(Spanned::new(item.span(), n));
    }
    let fix = match item.get_ref() {
        DeValue::String(s) if s.trim().parse::<f64>().is_ok() => {
            format!("write the number without quotes: {name} = {}", s.trim())
        }
        _ => format!("write a number without quotes, e.g. {name} = 0.5"),
    };
    wrong_type(item, key, "a number", &fix, p);
    None
}

pub(super) fn read_bool(item: &Item<'_>, key: &str, p: &mut Problems<'_>) -> Option<Spanned<bool>> {
    if let DeValue::Boolean(b) = item.get_ref() {
        return Some(Spanned::new(item.span(), *b));
    }
    let name = last_key(key);
    let fix = match item.get_ref() {
        DeValue::String(s)
            if ["true", "yes", "on"].contains(&s.trim().to_ascii_lowercase().as_str()) =>
        {
            format!("write {name} = true (no quotes)")
        }
        DeValue::String(s)
            if ["false", "no", "off"].contains(&s.trim().to_ascii_lowercase().as_str()) =>
        {
            format!("write {name} = false (no quotes)")
        }
        _ => format!("write {name} = true or {name} = false (no quotes)"),
    };
    wrong_type(item, key, "true or false", &fix, p);
    None
}

/// A list of strings (ids, addresses). A single value where the list belongs is a problem whose
/// fix is the same value in brackets.
pub(super) fn read_str_list(
    item: &Item<'_>,
    key: &str,
    p: &mut Problems<'_>,
) -> Option<Spanned<Vec<Spanned<String>>>> {
    let name = last_key(key);
    let DeValue::Array(items) = item.get_ref() else {
        let fix = match bare(item.get_ref()) {
            Some(text) => format!("write a list: {name} = [\"{text}\"]"),
            None => format!("write a list of strings: {name} = [\"...\"]"),
        };
        wrong_type(item, key, "a list", &fix, p);
        return None;
    };
    let mut out = Vec::new();
    for element in items.iter() {
        match element.get_ref() {
            DeValue::String(s) => out.push(Spanned::new(element.span(), s.to_string())),
            other => {
                let fix = match bare(other) {
                    Some(text) => format!("quote it: \"{text}\""),
                    None => "write each entry as a string in quotes".to_owned(),
                };
                p.add(
                    Some(element.span()),
                    key,
                    format!("{} in the list where a string is expected", describe(other)),
                    &fix,
                );
            }
        }
    }
    Some(Spanned::new(item.span(), out))
}

pub(super) fn read_table<'a, 'i>(
    item: &'a Item<'i>,
    key: &str,
    p: &mut Problems<'_>,
) -> Option<&'a DeTable<'i>> {
    if let DeValue::Table(t) = item.get_ref() {
        return Some(t);
    }
    wrong_type(
        item,
        key,
        "a section",
        &format!("write it as a section: [{key}] on a line of its own, its keys below"),
        p,
    );
    None
}

/// `[[meta]]` / `[[bsp]]`: a list of tables, each with its span.
pub(super) fn read_table_list<'a, 'i>(
    item: &'a Item<'i>,
    key: &str,
    p: &mut Problems<'_>,
) -> Vec<(Span, &'a DeTable<'i>)> {
    match item.get_ref() {
        DeValue::Array(items) => {
            let mut out = Vec::new();
            for element in items.iter() {
                if let DeValue::Table(t) = element.get_ref() {
                    out.push((element.span(), t));
                } else {
                    wrong_type(
                        element,
                        key,
                        "a [[{key}]] block",
                        &format!("write one [[{key}]] block per source"),
                        p,
                    );
                }
            }
            out
        }
        DeValue::Table(_) => {
            p.add(
                Some(item.span()),
                key,
                format!("[{key}] is a single section, but sources are a list of blocks"),
                &format!("write [[{key}]] (two brackets), one block per source"),
            );
            Vec::new()
        }
        _ => {
            wrong_type(
                item,
                key,
                "a list of blocks",
                &format!("write one [[{key}]] block per source"),
                p,
            );
            Vec::new()
        }
    }
}

/// The number of single-character edits between two short strings.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substituted = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substituted.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

pub(super) fn unknown_key(
    k: &Spanned<toml::de::DeString<'_>>,
    key: &str,
    section: &str,
    known: &[&str],
    p: &mut Problems<'_>,
) {
    let name = k.get_ref().as_ref();
    let closest = known
        .iter()
        .map(|c| (edit_distance(name, c), *c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 4))
        .min();
    let fix = match closest {
        Some((_, c)) => format!(
            "did you mean `{c}`? (the keys of {section}: {})",
            known.join(", ")
        ),
        None => format!("the keys of {section} are: {}", known.join(", ")),
    };
    p.add(Some(k.span()), key, format!("unknown key `{name}`"), &fix);
}
