//! E-mail normalization and a deliberately modest validity check.
//!
//! The address is trimmed, a `mailto:` prefix dropped, and the *whole* address
//! lower-cased. The local part is case-sensitive on paper, but no mail provider in
//! use treats it so, and the address is an upsert key: `Jane@x.org` and
//! `jane@x.org` in two uploads must be the same participant.
//!
//! The check rejects what is obviously not one address (a name typed into the
//! column, two addresses in one cell, a missing or dot-less domain, spaces) and
//! accepts everything else, including internationalized domains. Whether the
//! mailbox exists is for the ticket e-mail to find out.

/// Normalize `raw` (already trimmed and non-empty) or say what is wrong with it.
pub(super) fn normalize(raw: &str) -> Result<String, String> {
    let address = strip_prefix_ignore_case(raw, "mailto:").trim();
    let fail = |why: &str| Err(format!("{} is not an e-mail address: {why}", quoted(raw)));

    if address.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return fail("it contains a space or line break (one address per cell)");
    }
    let Some((local, domain)) = address.split_once('@') else {
        return fail("it has no @");
    };
    if domain.contains('@') {
        return fail("it has more than one @ (one address per cell)");
    }
    if local.is_empty() {
        return fail("nothing before the @");
    }
    if local.len() > 64 || address.len() > 254 {
        return fail("it is too long");
    }
    if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return fail("misplaced dot before the @");
    }
    if let Some(c) = local.chars().find(|c| "\"(),:;<>[\\]".contains(*c)) {
        return fail(&format!("{c:?} is not allowed before the @"));
    }

    let labels: Vec<&str> = domain.split('.').collect();
    if domain.is_empty() {
        return fail("nothing after the @");
    }
    if labels.len() < 2 {
        return fail("the domain has no dot");
    }
    for label in &labels {
        if label.is_empty() || label.len() > 63 {
            return fail("misplaced dot in the domain");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return fail("a domain part starts or ends with '-'");
        }
        if let Some(c) = label.chars().find(|c| !(c.is_alphanumeric() || *c == '-')) {
            return fail(&format!("{c:?} is not allowed in the domain"));
        }
    }
    let tld = labels.last().copied().unwrap_or_default();
    if tld.chars().count() < 2 || tld.chars().all(|c| c.is_ascii_digit()) {
        return fail("the domain does not end in a top-level domain");
    }

    Ok(address.to_lowercase())
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> &'a str {
    match s.get(..prefix.len()) {
        Some(head) if head.eq_ignore_ascii_case(prefix) => &s[prefix.len()..],
        _ => s,
    }
}

/// The value as shown in a message: quoted, and cut short if it is long.
fn quoted(value: &str) -> String {
    const MAX: usize = 60;
    if value.chars().count() <= MAX {
        format!("{value:?}")
    } else {
        let head: String = value.chars().take(MAX).collect();
        format!("{head:?}…")
    }
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn good_addresses_are_lower_cased() {
        for (raw, want) in [
            ("jane@example.org", "jane@example.org"),
            ("Jane.Doe+VIP@Example.ORG", "jane.doe+vip@example.org"),
            (
                "mailto:o'brien@mail.example.co.kr",
                "o'brien@mail.example.co.kr",
            ),
            ("user@bücher.de", "user@bücher.de"),
            ("a@b-c.io", "a@b-c.io"),
        ] {
            assert_eq!(normalize(raw).as_deref(), Ok(want), "{raw}");
        }
    }

    #[test]
    fn obviously_bad_addresses_are_rejected_with_a_reason() {
        for (raw, why) in [
            ("Jane Doe", "space"),
            ("jane.example.org", "no @"),
            ("jane@example", "no dot"),
            ("a@b.org; c@d.org", "space"),
            ("a@b.org,c@d.org", "more than one @"),
            ("@example.org", "nothing before"),
            ("jane@", "nothing after"),
            ("jane@example..org", "misplaced dot"),
            ("jane.@example.org", "misplaced dot"),
            ("jane@-example.org", "'-'"),
            ("jane@example.c", "top-level"),
            ("jane@10.0.0.1", "top-level"),
            ("<jane@example.org>", "'<'"),
            ("jane@exa_mple.org", "'_'"),
        ] {
            let err = normalize(raw).unwrap_err();
            assert!(err.contains(why), "{raw}: {err}");
        }
    }
}
