//! Words of a text, as the filter matches them: maximal runs of letters and digits (any
//! script), lower-cased, so "AI-chips" is `["ai", "chips"]` and "said" never contains "ai".

/// The lower-cased words of `text`, in order.
pub fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// Whether `phrase` (already split by [`words`]) occurs in `text` as consecutive whole words.
pub fn contains_phrase(text: &[String], phrase: &[String]) -> bool {
    !phrase.is_empty() && text.windows(phrase.len()).any(|window| window == phrase)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_split_on_anything_but_letters_and_digits_in_any_script() {
        assert_eq!(words("AI-chips, said Zoë!"), ["ai", "chips", "said", "zoë"]);
        assert_eq!(words("Über 5G in München"), ["über", "5g", "in", "münchen"]);
        assert_eq!(words("東京 news"), ["東京", "news"]);
        assert!(words(" -- ").is_empty());
    }

    #[test]
    fn a_phrase_matches_consecutive_whole_words_only() {
        let text = words("The AI chips said to be open source");
        assert!(contains_phrase(&text, &words("ai")));
        assert!(contains_phrase(&text, &words("Open Source")));
        assert!(!contains_phrase(&text, &words("sai")));
        assert!(!contains_phrase(&text, &words("chips open")));
        assert!(!contains_phrase(&text, &[]));
    }
}
