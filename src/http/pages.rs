//! The small HTML pages the mailbox owner sees after signing in.

use crate::oauth::CallbackOutcome;

/// The page for a callback's outcome, with its HTTP status.
pub fn callback_page(outcome: &CallbackOutcome) -> (u16, String) {
    match outcome {
        CallbackOutcome::Connected { mailbox } => (
            200,
            page(
                "Connected",
                &format!(
                    "<h1>Connected {}.</h1><p>You can close this window.</p>",
                    escape(mailbox)
                ),
            ),
        ),
        CallbackOutcome::Failed {
            status,
            title,
            what_to_do,
            details,
        } => {
            let details = details
                .as_deref()
                .map(|d| {
                    format!(
                        "<p class=\"details\">Details for support: {}</p>",
                        escape(d)
                    )
                })
                .unwrap_or_default();
            (
                *status,
                page(
                    "Not connected",
                    &format!(
                        "<h1>{}</h1><p>{}</p>{details}",
                        escape(title),
                        escape(what_to_do)
                    ),
                ),
            )
        }
    }
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>graph-mailer: {title}</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:40rem;margin:4rem auto;padding:0 1rem;line-height:1.5}}\
         .details{{color:#555;font-size:.9rem}}</style></head>\
         <body>{body}</body></html>"
    )
}

/// Escapes text for HTML: Microsoft's descriptions and account names are not ours.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_from_outside_is_escaped() {
        let (status, html) = callback_page(&CallbackOutcome::Failed {
            status: 400,
            title: "<script>x</script>".into(),
            what_to_do: "a & b".into(),
            details: None,
        });
        assert_eq!(status, 400);
        assert!(html.contains("&lt;script&gt;"));
        assert!(html.contains("a &amp; b"));
    }
}
