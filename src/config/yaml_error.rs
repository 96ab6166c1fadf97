//! serde and serde_yaml errors rewritten for people: the key path, what is wrong, the
//! nearest known key for a typo, and the position, without quoting a value (the file holds
//! tokens and client secrets).

/// Rewrites a serde/serde_yaml message into psi's form. serde formats these messages itself
/// (`unknown field `x`, expected one of `a`, `b``), so their shape is stable.
pub(super) fn describe_yaml_error(path: &str, raw: &str) -> String {
    // serde_yaml prefixes nested errors with its own path ("a.b: ..."); drop it, ours is as
    // precise (for an unknown key it names the key, serde_yaml's stops at the parent).
    let mut message = raw;
    if let Some((prefix, rest)) = message.split_once(": ") {
        if path.starts_with(prefix) {
            message = rest;
        }
    }
    let (message, position) = match message.rfind(" at line ") {
        Some(i) => (
            &message[..i],
            Some(message[i + 4..].replace(" column", ", column")),
        ),
        None => (message, None),
    };
    let text = if let Some(rest) = message.strip_prefix("unknown field ") {
        let names = backticked(rest);
        let (key, known) = names
            .split_first()
            .map(|(k, rest)| (*k, rest.to_vec()))
            .unwrap_or(("", Vec::new()));
        match suggest(key, &known) {
            Some(near) => format!("unknown key, did you mean '{near}'?"),
            None if known.is_empty() => "unknown key".to_owned(),
            None => format!("unknown key (known keys: {})", known.join(", ")),
        }
    } else if let Some(rest) = message.strip_prefix("unknown variant ") {
        let names = backticked(rest);
        let known = names.get(1..).unwrap_or_default().join(", ");
        format!("unknown value; expected one of: {known}")
    } else if let Some(rest) = message.strip_prefix("invalid type: ") {
        // "string \"secret\", expected u32": keep the kind, drop the quoted value.
        let kind = rest.split([' ', ',']).next().unwrap_or("value");
        let expected = rest
            .split_once("expected ")
            .map(|(_, e)| e)
            .unwrap_or("another type");
        format!("wrong type: found a {kind}, expected {expected}")
    } else if message.starts_with("invalid value: ") {
        let expected = message
            .split_once("expected ")
            .map(|(_, e)| e)
            .unwrap_or("another value");
        format!("invalid value, expected {expected}")
    } else if let Some(rest) = message.strip_prefix("missing field ") {
        format!(
            "missing required key '{}'",
            backticked(rest).first().copied().unwrap_or("?")
        )
    } else {
        message.to_owned()
    };
    let path = if path == "." {
        String::new()
    } else {
        format!("{path}: ")
    };
    match position {
        Some(position) => format!("{path}{text} ({position})"),
        None => format!("{path}{text}"),
    }
}

fn backticked(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

/// The known key closest to `key`, if it is a plausible typo.
fn suggest<'a>(key: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (edit_distance(key, k), *k))
        .filter(|(d, k)| *d <= (k.len().max(key.len()) / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(cur).min(row[j])
            };
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        assert_eq!(
            suggest("recursve", &["project", "path", "recursive"]),
            Some("recursive")
        );
        assert_eq!(suggest("zzz", &["project", "path"]), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
