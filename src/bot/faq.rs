//! Frequent-question matching: accent- and case-insensitive, Spanish and English, with a
//! confidence score so a loosely related message does not get a canned answer.
//!
//! A message is compared with every phrasing of every question as sets of content words (the
//! Dice coefficient: shared words over the average size); a configured keyword present in the
//! message is strong evidence on its own. No stemming and no model: predictable is better than
//! clever for an auto-reply that speaks to customers.

use std::collections::HashSet;

use crate::config::FaqEntry;

/// Words that carry no meaning for matching, in Spanish and English.
const STOPWORDS: &[&str] = &[
    "a", "al", "el", "la", "los", "las", "un", "una", "unos", "unas", "de", "del", "y", "o", "en",
    "es", "son", "que", "por", "para", "con", "se", "su", "sus", "mi", "me", "lo", "le", "les",
    "hay", "como", "esta", "este", "estan", "hola", "buenas", "buenos", "dias", "tardes", "noches",
    "gracias", "favor", "the", "an", "is", "are", "do", "does", "you", "your", "i", "my", "me",
    "to", "of", "in", "on", "for", "and", "or", "what", "hi", "hello", "please", "thanks", "can",
    "could", "would", "we", "it", "be",
];

/// Score a keyword hit counts for: above the default threshold, below an exact match.
const KEYWORD_SCORE: f64 = 0.75;

/// Lowercase, accents removed, punctuation turned into spaces.
pub(crate) fn normalize(text: &str) -> String {
    text.chars()
        .flat_map(char::to_lowercase)
        .map(|c| match c {
            'á' | 'à' | 'â' | 'ä' | 'ã' => 'a',
            'é' | 'è' | 'ê' | 'ë' => 'e',
            'í' | 'ì' | 'î' | 'ï' => 'i',
            'ó' | 'ò' | 'ô' | 'ö' | 'õ' => 'o',
            'ú' | 'ù' | 'û' | 'ü' => 'u',
            'ñ' => 'n',
            'ç' => 'c',
            c if c.is_alphanumeric() => c,
            _ => ' ',
        })
        .collect()
}

fn words(text: &str) -> HashSet<String> {
    normalize(text)
        .split_whitespace()
        .filter(|w| !STOPWORDS.contains(w))
        .map(str::to_owned)
        .collect()
}

/// How well `message` matches one FAQ entry, in `0..=1`.
pub(crate) fn score(entry: &FaqEntry, message: &str) -> f64 {
    let msg = words(message);
    if msg.is_empty() {
        return 0.0;
    }
    let mut best: f64 = 0.0;
    for q in &entry.questions {
        let q = words(q);
        if q.is_empty() {
            continue;
        }
        let shared = q.intersection(&msg).count() as f64;
        best = best.max(2.0 * shared / (q.len() + msg.len()) as f64);
    }
    let normalized = format!(
        " {} ",
        normalize(message)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    );
    let keyword_hit = entry.keywords.iter().any(|k| {
        let k = normalize(k)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        !k.is_empty() && normalized.contains(&format!(" {k} "))
    });
    if keyword_hit {
        best = best.max(KEYWORD_SCORE);
    }
    best
}

/// The FAQ entries matching `message`, best first, with their scores, above `min`.
pub(crate) fn ranked<'a>(faq: &'a [FaqEntry], message: &str, min: f64) -> Vec<(&'a FaqEntry, f64)> {
    let mut out: Vec<_> = faq
        .iter()
        .map(|e| (e, score(e, message)))
        .filter(|(_, s)| *s >= min && *s > 0.0)
        .collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1));
    out
}

/// The answer the bot gives on its own: the best entry at or above the threshold.
pub(crate) fn answer<'a>(faq: &'a [FaqEntry], message: &str, threshold: f64) -> Option<&'a str> {
    ranked(faq, message, threshold)
        .first()
        .map(|(e, _)| e.answer.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hours() -> FaqEntry {
        FaqEntry {
            questions: vec![
                "¿Cuál es el horario?".into(),
                "What are your opening hours?".into(),
            ],
            keywords: vec!["horario de atención".into()],
            answer: "9 a 18".into(),
        }
    }

    #[test]
    fn accents_case_and_languages() {
        let faq = [hours()];
        assert_eq!(answer(&faq, "CUAL ES EL HORARIO", 0.6), Some("9 a 18"));
        assert_eq!(answer(&faq, "cuál es el horário??", 0.6), Some("9 a 18"));
        assert_eq!(
            answer(&faq, "what are your opening hours please", 0.6),
            Some("9 a 18")
        );
        assert_eq!(
            answer(&faq, "Necesito el horario de atención", 0.6),
            Some("9 a 18")
        );
        assert_eq!(answer(&faq, "My order arrived broken", 0.6), None);
        assert_eq!(answer(&faq, "hola", 0.6), None);
    }
}
