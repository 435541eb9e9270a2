//! Clean by default, before any stage: NewsAPI's placeholders of removed articles are dropped,
//! and HTML entities publishers leave in titles and descriptions (`&#x27;`, `&amp;`) decoded.
//!
//! A placeholder has title, description and content `[Removed]`, source name `[Removed]`, URL
//! `https://removed.com` and `publishedAt` `1970-01-01T00:00:00Z`; any one of its telltales
//! (the URL, the title, the source name) is enough, since a page can carry a partial one.

use crate::article::RawArticle;

/// The text NewsAPI puts in every field of a removed article.
const REMOVED: &str = "[Removed]";
/// The host of a removed article's URL.
const REMOVED_HOST: &str = "removed.com";

/// Whether `raw` is NewsAPI's placeholder for a removed article.
pub fn is_removed(raw: &RawArticle) -> bool {
    let is = |text: &Option<String>| text.as_deref().map(str::trim) == Some(REMOVED);
    let removed_url = raw
        .url
        .as_deref()
        .and_then(|url| super::domains::host_of(url.trim()))
        .is_some_and(|host| host == REMOVED_HOST);
    removed_url || is(&raw.title) || raw.source.as_ref().is_some_and(|source| is(&source.name))
}

/// `raw` with HTML entities in its title and description decoded (once: `&amp;amp;` becomes
/// `&amp;`, as a browser would show it).
pub fn decode_entities(mut raw: RawArticle) -> RawArticle {
    for text in [&mut raw.title, &mut raw.description].into_iter().flatten() {
        if text.contains('&') {
            *text = html_escape::decode_html_entities(text).into_owned();
        }
    }
    raw
}

/// Cleans one raw article: `None` for a placeholder, else the article with entities decoded.
pub fn clean(raw: RawArticle) -> Option<RawArticle> {
    (!is_removed(&raw)).then(|| decode_entities(raw))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(json: &str) -> RawArticle {
        serde_json::from_str(json).expect("raw article parses")
    }

    #[test]
    fn newsapi_placeholders_are_dropped_by_any_telltale() {
        let full = r#"{"source":{"id":null,"name":"[Removed]"},"author":null,"title":"[Removed]","description":"[Removed]","url":"https://removed.com","urlToImage":null,"publishedAt":"1970-01-01T00:00:00Z","content":"[Removed]"}"#;
        assert!(clean(raw(full)).is_none());
        assert!(is_removed(&raw(
            r#"{"url":"https://removed.com/","title":"x"}"#
        )));
        assert!(is_removed(&raw(
            r#"{"url":"https://a.test/1","title":"[Removed]"}"#
        )));
        assert!(is_removed(&raw(
            r#"{"url":"https://a.test/1","title":"x","source":{"name":"[Removed]"}}"#
        )));
    }

    #[test]
    fn ordinary_articles_are_kept_even_when_they_mention_removal() {
        for json in [
            r#"{"url":"https://a.test/1","title":"Statue [Removed] from square"}"#,
            r#"{"url":"https://notremoved.com/1","title":"x"}"#,
            r#"{"url":"https://a.test/1"}"#,
        ] {
            assert!(clean(raw(json)).is_some(), "{json}");
        }
    }

    #[test]
    fn entities_in_titles_and_descriptions_are_decoded_once() {
        let cleaned = clean(raw(
            r#"{"url":"https://a.test/1","title":"Rock &amp; Roll isn&#x27;t dead","description":"&quot;Yes&quot; &lt;b&gt; &amp;amp;","content":"&amp; stays"}"#,
        ))
        .expect("kept");
        assert_eq!(cleaned.title.as_deref(), Some("Rock & Roll isn't dead"));
        assert_eq!(cleaned.description.as_deref(), Some("\"Yes\" <b> &amp;"));
        assert_eq!(cleaned.content.as_deref(), Some("&amp; stays"));
    }

    #[test]
    fn text_without_entities_is_untouched() {
        let cleaned = clean(raw(
            r#"{"url":"https://a.test/1","title":"AT&T, R&D & more"}"#,
        ))
        .expect("kept");
        assert_eq!(cleaned.title.as_deref(), Some("AT&T, R&D & more"));
    }
}
