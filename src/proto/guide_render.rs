//! How a support guide's Markdown becomes HTML, the same at the store (shown to staff) and at HQ
//! (the authoring preview): CommonMark through pulldown-cmark; raw HTML is shown as text, never
//! rendered, links keep only http(s)/mailto/# targets and images are dropped, so a guide cannot
//! run script or load anything from outside whatever it says. Pure.

use pulldown_cmark::{html, CowStr, Event, Options, Parser, Tag};

/// CommonMark to HTML with raw HTML escaped and unsafe link targets dropped.
pub fn render(markdown: &str) -> String {
    let safe_url = |u: &str| {
        let l = u.trim_start().to_ascii_lowercase();
        l.starts_with("https://")
            || l.starts_with("http://")
            || l.starts_with("mailto:")
            || l.starts_with('#')
    };
    let events = Parser::new_ext(
        markdown,
        Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH,
    )
    .map(|e| match e {
        Event::Html(s) | Event::InlineHtml(s) => Event::Text(s),
        Event::Start(Tag::Link {
            link_type,
            dest_url,
            title,
            id,
        }) if !safe_url(&dest_url) => Event::Start(Tag::Link {
            link_type,
            dest_url: CowStr::Borrowed(""),
            title,
            id,
        }),
        Event::Start(Tag::Image { .. }) | Event::End(pulldown_cmark::TagEnd::Image) => {
            // Images would load from wherever the URL points; the UI loads nothing from outside.
            Event::Text(CowStr::Borrowed(""))
        }
        other => other,
    });
    let mut out = String::new();
    html::push_html(&mut out, events);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_renders_and_html_never_does() {
        let h = render("1. Close the door\n2. Call **facilities**\n\n<script>alert(1)</script>\n");
        assert!(
            h.contains("<ol>") && h.contains("<strong>facilities</strong>"),
            "{h}"
        );
        assert!(!h.contains("<script>"), "{h}");
        assert!(h.contains("&lt;script&gt;"), "{h}");
        let h = render("[x](javascript:alert(1)) [y](https://help.example/) ![i](http://a/b.png)");
        assert!(!h.contains("javascript:"), "{h}");
        assert!(h.contains("href=\"https://help.example/\""), "{h}");
        assert!(!h.contains("<img"), "{h}");
    }
}
