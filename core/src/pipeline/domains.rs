//! `{"type":"domains","allow":[..],"deny":[..]}`: keeps or drops articles by the host of their
//! URL. A domain matches itself and its subdomains: `bbc.co.uk` matches `www.bbc.co.uk`, not
//! `notbbc.co.uk`.

use serde::{Deserialize, Serialize};

use super::{check_list, Memory, Stage};
use crate::Article;

/// The most domains `allow` or `deny` may hold.
const MAX_DOMAINS: usize = 100;

/// Keeps articles from allowed domains, drops those from denied ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Domains {
    /// Keep only articles from these domains (none: any domain).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    allow: Vec<String>,
    /// Drop articles from these domains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    deny: Vec<String>,
}

impl Domains {
    /// A domains stage; [`Stage::check`] says whether it is valid.
    pub fn new(allow: Vec<String>, deny: Vec<String>) -> Self {
        Self { allow, deny }
    }
}

/// The host of an `http(s)://` URL, lower-cased, without user info, port or trailing dot.
pub fn host_of(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit('@').next().unwrap_or_default();
    let host = if host_port.starts_with('[') {
        host_port.split(']').next().map(|h| format!("{h}]"))?
    } else {
        host_port.split(':').next().unwrap_or_default().to_owned()
    };
    let host = host.trim_end_matches('.').to_lowercase();
    (!host.is_empty()).then_some(host)
}

/// Whether `host` is `domain` or one of its subdomains (`domain` already lower-cased).
fn within(host: &str, domain: &str) -> bool {
    host == domain
        || host
            .strip_suffix(domain)
            .is_some_and(|prefix| prefix.ends_with('.'))
}

fn normalized(domains: &[String]) -> Vec<String> {
    domains
        .iter()
        .map(|d| d.trim().trim_end_matches('.').to_lowercase())
        .collect()
}

impl Stage for Domains {
    fn check(&self) -> Result<(), String> {
        check_list("allow", &self.allow, MAX_DOMAINS)?;
        check_list("deny", &self.deny, MAX_DOMAINS)?;
        if self.allow.is_empty() && self.deny.is_empty() {
            return Err("a domains stage needs at least one domain in allow or deny".to_owned());
        }
        let not_a_domain = |d: &&String| {
            let d = d.trim();
            d.contains(['/', ':', '@', ' ', '?', '#']) || d.starts_with('.') || !d.contains('.')
        };
        if let Some(bad) = self.allow.iter().chain(&self.deny).find(not_a_domain) {
            return Err(format!(
                "{:?} is not a domain: give a bare host name such as \"bbc.co.uk\"",
                crate::ids::truncate_for_message(bad)
            ));
        }
        Ok(())
    }

    fn apply(&self, articles: Vec<Article>, _memory: &Memory) -> Vec<Article> {
        let (allow, deny) = (normalized(&self.allow), normalized(&self.deny));
        articles
            .into_iter()
            .filter(|article| {
                let Some(host) = host_of(&article.url) else {
                    return allow.is_empty();
                };
                let matches = |list: &[String]| list.iter().any(|d| within(&host, d));
                (allow.is_empty() || matches(&allow)) && !matches(&deny)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::tests::article_with;

    fn stage(allow: &[&str], deny: &[&str]) -> Domains {
        let owned = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect();
        Domains::new(owned(allow), owned(deny))
    }

    fn urls(kept: &[Article]) -> Vec<&str> {
        kept.iter().map(|a| a.url.as_str()).collect()
    }

    #[test]
    fn hosts_are_read_without_port_user_or_case() {
        assert_eq!(
            host_of("https://WWW.BBC.co.uk/news").as_deref(),
            Some("www.bbc.co.uk")
        );
        assert_eq!(
            host_of("http://u:p@a.test:8080/x?y").as_deref(),
            Some("a.test")
        );
        assert_eq!(host_of("https://a.test.").as_deref(), Some("a.test"));
        assert_eq!(host_of("https://[::1]:80/").as_deref(), Some("[::1]"));
        assert_eq!(host_of("ftp://a.test"), None);
    }

    #[test]
    fn a_domain_matches_itself_and_its_subdomains_only() {
        let articles = vec![
            article_with("https://bbc.co.uk/1", "a", None),
            article_with("https://www.bbc.co.uk/2", "b", None),
            article_with("https://notbbc.co.uk/3", "c", None),
            article_with("https://cnn.com/4", "d", None),
        ];
        let kept = stage(&[], &["BBC.co.uk"]).apply(articles.clone(), &Memory::default());
        assert_eq!(urls(&kept), ["https://notbbc.co.uk/3", "https://cnn.com/4"]);
        let kept = stage(&["bbc.co.uk"], &[]).apply(articles, &Memory::default());
        assert_eq!(
            urls(&kept),
            ["https://bbc.co.uk/1", "https://www.bbc.co.uk/2"]
        );
    }

    #[test]
    fn deny_wins_over_allow() {
        let articles = vec![
            article_with("https://news.example.com/1", "a", None),
            article_with("https://ads.example.com/2", "b", None),
        ];
        let kept =
            stage(&["example.com"], &["ads.example.com"]).apply(articles, &Memory::default());
        assert_eq!(urls(&kept), ["https://news.example.com/1"]);
    }

    #[test]
    fn empty_lists_and_things_that_are_not_domains_are_refused() {
        assert!(stage(&[], &[]).check().is_err());
        for bad in [
            "https://a.com",
            "a.com/x",
            "localhost",
            ".a.com",
            " ",
            "a com.org",
        ] {
            assert!(stage(&[bad], &[]).check().is_err(), "{bad}");
        }
        assert!(stage(&["a.com"], &["b.a.com"]).check().is_ok());
    }
}
