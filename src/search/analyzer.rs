//! Full-text analyzer for chat messages (Spanish and English customer support).
//!
//! One analyzer serves documents and queries, so both sides always agree on terms. Every word
//! is indexed under its lower-cased, accent-folded form *and* its Spanish and English stems at
//! the same position: users type without accents, mix languages and inflect freely, and we
//! cannot know a message's language, so both stemmers run. Identifiers (e-mails, order and
//! phone numbers) are indexed whole and in parts, so either form finds them. CJK text has no
//! spaces, so each ideograph/kana/syllable is a token; emoji are tokens so reactions are
//! searchable.

use std::collections::HashSet;

use tantivy::Index;
use tantivy::tokenizer::{
    AsciiFoldingFilter, LowerCaser, PreTokenizedStream, PreTokenizedString, TextAnalyzer, Token,
    TokenFilter, TokenStream, Tokenizer,
};

/// The name under which the analyzer is registered on an index.
pub const TOKENIZER: &str = "charla_text";

/// Longer tokens are dropped: they are noise (base64, hashes) and bloat the term dictionary.
const MAX_TOKEN_BYTES: usize = 100;

/// Registers the analyzer on `index` under [`TOKENIZER`].
pub fn register(index: &Index) {
    index.tokenizers().register(TOKENIZER, analyzer());
}

/// The analyzer (used for documents and for queries alike).
pub fn analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(ChatTokenizer)
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter)
        .filter(StemFilter)
        .build()
}

/// All tokens the analyzer emits for `text`, in stream order.
fn analyze(text: &str) -> Vec<Token> {
    let mut analyzer = analyzer();
    let mut stream = analyzer.token_stream(text);
    let mut tokens = Vec::new();
    stream.process(&mut |token| tokens.push(token.clone()));
    tokens
}

/// A query's words: for each word of `text` (in order, duplicates removed), the distinct terms
/// a document containing that word is indexed under (its folded form first, then its stems).
///
/// A "word" is one token position, so a compound like `ORD-2024-0042` yields one group per
/// part (the first also holding the whole form): a caller that ANDs groups and ORs within a
/// group then finds documents containing the whole compound or all of its parts.
pub fn query_words(text: &str) -> Vec<Vec<String>> {
    let mut groups: Vec<(usize, Vec<String>)> = Vec::new();
    for token in analyze(text) {
        match groups.last_mut() {
            Some((position, terms)) if *position == token.position => {
                if !terms.contains(&token.text) {
                    terms.push(token.text);
                }
            }
            _ => groups.push((token.position, vec![token.text])),
        }
    }
    let mut seen = HashSet::new();
    groups
        .into_iter()
        .map(|(_, terms)| terms)
        .filter(|terms| seen.insert(terms.clone()))
        .collect()
}

/// The words of `text` (as written, sliced from `text` by the tokens' offsets) that are indexed
/// under one of `terms` or under a term that starts with one of `prefixes`; distinct, in order
/// of first appearance. Used for highlights. Empty prefixes are ignored (they would match all).
pub fn matching_words(text: &str, terms: &HashSet<String>, prefixes: &[String]) -> Vec<String> {
    let mut words: Vec<String> = Vec::new();
    for token in analyze(text) {
        let hit = terms.contains(&token.text)
            || prefixes
                .iter()
                .any(|prefix| !prefix.is_empty() && token.text.starts_with(prefix.as_str()));
        if hit
            && let Some(word) = text.get(token.offset_from..token.offset_to)
            && !words.iter().any(|seen| seen == word)
        {
            words.push(word.to_string());
        }
    }
    words
}

/// Han, kana and Hangul syllables: scripts written without spaces, indexed as unigrams.
fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x309F | 0x30A0..=0x30FA | 0x30FC..=0x30FF | 0x31F0..=0x31FF | 0xFF66..=0xFF9D
        | 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xF900..=0xFAFF | 0x20000..=0x323AF
        | 0xAC00..=0xD7AF)
}

/// An approximation of Extended_Pictographic without a Unicode-data dependency.
fn is_emoji(c: char) -> bool {
    matches!(c as u32, 0x1F000..=0x1FAFF | 0x2300..=0x23FF | 0x2600..=0x27BF | 0x2B00..=0x2BFF)
}

/// Emoji modifiers and joiners: not searchable on their own, "👍🏽" must index as "👍".
fn is_emoji_modifier(c: char) -> bool {
    matches!(c as u32, 0xFE0E | 0xFE0F | 0x200D | 0x1F3FB..=0x1F3FF)
}

/// Combining diacritics belong to their word (decomposed "é" = "e" + U+0301, as some keyboards
/// type it); they are removed after folding so both spellings give the same term.
fn is_mark(c: char) -> bool {
    matches!(c, '\u{0300}'..='\u{036F}')
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || is_mark(c)
}

/// Splits text per the module's rules. Tokens are computed up front: messages are short and a
/// compound's whole form must be emitted before its parts.
#[derive(Clone)]
struct ChatTokenizer;

impl Tokenizer for ChatTokenizer {
    type TokenStream<'a> = PreTokenizedStream;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> PreTokenizedStream {
        let tokens = Splitter::split(text);
        PreTokenizedStream::from(PreTokenizedString {
            text: String::new(),
            tokens,
        })
    }
}

struct Splitter<'a> {
    text: &'a str,
    tokens: Vec<Token>,
    /// The position of the next word.
    position: usize,
}

impl<'a> Splitter<'a> {
    /// Whitespace and emoji modifiers end a run of text; CJK and emoji characters end it and
    /// are tokens of their own, so they split even unspaced text ("東京に", "❤️gracias").
    fn split(text: &'a str) -> Vec<Token> {
        let mut splitter = Splitter {
            text,
            tokens: Vec::new(),
            position: 0,
        };
        let mut run_start = 0;
        for (i, c) in text.char_indices() {
            let single = is_cjk(c) || (is_emoji(c) && !is_emoji_modifier(c));
            if single || c.is_whitespace() || is_emoji_modifier(c) {
                splitter.run(&text[run_start..i]);
                run_start = i + c.len_utf8();
            }
            if single {
                splitter.push(&text[i..run_start], splitter.position);
                splitter.position += 1;
            }
        }
        splitter.run(&text[run_start..]);
        splitter.tokens
    }

    /// Emits `part` (a slice of the text, for offsets) at `position` under the term `text`.
    fn push_as(&mut self, part: &str, position: usize, text: String) {
        if text.len() <= MAX_TOKEN_BYTES {
            let offset_from = part.as_ptr() as usize - self.text.as_ptr() as usize;
            let offset_to = offset_from + part.len();
            let position_length = 1;
            let token = Token {
                offset_from,
                offset_to,
                position,
                text,
                position_length,
            };
            self.tokens.push(token);
        }
    }

    fn push(&mut self, part: &str, position: usize) {
        self.push_as(part, position, part.to_string());
    }

    /// A run of text between separators: trimmed of outer punctuation, then one word, or a
    /// compound emitted whole (plus its digits when phone-like) and then in parts.
    fn run(&mut self, run: &'a str) {
        let word = run
            .trim_start_matches(|c: char| !c.is_alphanumeric())
            .trim_end_matches(|c: char| !is_word_char(c));
        let pieces = word.split(|c| !is_word_char(c)).filter(|p| !p.is_empty());
        let pieces: Vec<&str> = pieces.collect();
        let position = self.position;
        if pieces.len() > 1 {
            self.push(word, position);
            let phone_char = |c: char| c.is_ascii_digit() || matches!(c, '-' | '.' | '(' | ')');
            if word.chars().all(phone_char) {
                let digits = word.chars().filter(char::is_ascii_digit).collect();
                self.push_as(word, position, digits);
            }
        }
        for (i, piece) in pieces.iter().enumerate() {
            self.push(piece, position + i);
        }
        self.position += pieces.len();
    }
}

/// `word`'s stem in `language`, through tantivy's own stemmer filter so no extra crate is
/// needed (building one is cheap: it only picks the algorithm's function).
fn stem(algorithm: frostem::Algorithm, word: &str) -> Option<String> {
    Some(frostem::Stemmer::new(algorithm).stem(word).into_owned())
}

/// Keeps each token and adds its Spanish and English stems at the same position (tantivy's
/// `Stemmer` replaces the word instead, which would lose exact and cross-language matches).
#[derive(Clone)]
struct StemFilter;

impl TokenFilter for StemFilter {
    type Tokenizer<T: Tokenizer> = StemTokenizer<T>;

    fn transform<T: Tokenizer>(self, inner: T) -> StemTokenizer<T> {
        StemTokenizer(inner)
    }
}

#[derive(Clone)]
struct StemTokenizer<T>(T);

impl<T: Tokenizer> Tokenizer for StemTokenizer<T> {
    type TokenStream<'a> = StemTokenStream<T::TokenStream<'a>>;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> Self::TokenStream<'a> {
        let tail = self.0.token_stream(text);
        StemTokenStream(tail, Token::default(), Vec::new())
    }
}

/// The inner stream, the current token, and the stems still to emit for it (last one first).
struct StemTokenStream<T>(T, Token, Vec<String>);

impl<T: TokenStream> TokenStream for StemTokenStream<T> {
    fn advance(&mut self) -> bool {
        let Self(tail, current, pending) = self;
        if let Some(stem) = pending.pop() {
            current.text = stem;
            return true;
        }
        while tail.advance() {
            current.clone_from(tail.token());
            let word = &mut current.text;
            word.retain(|c| !is_mark(c));
            if word.is_empty() {
                continue;
            }
            // Only plain words: compounds, numbers, CJK and emoji have no inflection to strip.
            if word.chars().all(|c| c.is_alphabetic() && !is_cjk(c)) {
                let spanish = stem(frostem::Algorithm::Spanish, word).filter(|s| s != word);
                let english = stem(frostem::Algorithm::English, word);
                pending.extend(english.filter(|s| s != word && Some(s) != spanish.as_ref()));
                pending.extend(spanish);
            }
            return true;
        }
        false
    }

    fn token(&self) -> &Token {
        &self.1
    }

    fn token_mut(&mut self) -> &mut Token {
        &mut self.1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The terms of `text`, space separated.
    fn terms(text: &str) -> String {
        let terms: Vec<String> = analyze(text).into_iter().map(|t| t.text).collect();
        terms.join(" ")
    }

    /// Tokens as `term@position[from..to]`, space separated.
    fn dump(text: &str) -> String {
        let mut shown = Vec::new();
        for t in analyze(text) {
            let (p, a, b) = (t.position, t.offset_from, t.offset_to);
            shown.push(format!("{}@{p}[{a}..{b}]", t.text));
        }
        shown.join(" ")
    }

    #[test]
    fn case_accents_and_inflections_share_terms() {
        for text in ["BATERÍA", "batería", "bateria", "bateri\u{301}a"] {
            assert_eq!(terms(text), "bateria bateri", "{text}");
        }
        assert_eq!(terms("NIÑO pingüino"), "nino nin pinguino pinguin");
        assert_eq!(terms("baterías"), "baterias bateri bateria");
        assert_eq!(terms("running"), "running run");
        assert_eq!(terms("runs"), "runs run");
    }

    #[test]
    fn compounds_whole_and_parts() {
        let order = "pedido@0[0..6] ped@0[0..6] ord-2024-0042@1[7..20] ord@1[7..10] 2024@2[11..15] \
                     0042@3[16..20] gracias@4[22..29] graci@4[22..29] gracia@4[22..29]";
        assert_eq!(dump("pedido ORD-2024-0042, gracias"), order);
        let email = "ana.garcia@example.com@0[0..22] ana@0[0..3] garcia@1[4..10] garci@1[4..10] \
                     example@2[11..18] exampl@2[11..18] com@3[19..22]";
        assert_eq!(dump("ana.garcia@example.com"), email);
        assert_eq!(terms("(A12/33)"), "a12/33 a12 33");
    }

    #[test]
    fn phone_numbers_also_indexed_as_digits() {
        let phone = "34@0[1..3] 600-123-456@1[4..15] 600123456@1[4..15] 600@1[4..7] 123@2[8..11] \
                     456@3[12..15]";
        assert_eq!(dump("+34 600-123-456"), phone);
        assert!(terms("600.123.456").starts_with("600.123.456 600123456 600 "));
    }

    #[test]
    fn cjk_unigrams_and_emoji() {
        assert_eq!(terms("東京に行きます"), "東 京 に 行 き ま す");
        assert_eq!(dump("en東京"), "en@0[0..2] 東@1[2..5] 京@2[5..8]");
        assert_eq!(dump("👍🏽 genial"), "👍@0[0..4] genial@1[9..15]");
        assert_eq!(terms("❤️gracias!"), "❤ gracias graci gracia");
    }

    #[test]
    fn long_tokens_and_bare_punctuation_dropped() {
        let long = "a".repeat(101);
        assert_eq!(terms(&format!("{long} ... ok")), "ok");
    }

    #[test]
    fn positions_increase_and_stems_share_them() {
        let tokens = analyze("Las baterías y ORD-1 fallan 👍 東京");
        let positions: Vec<usize> = tokens.iter().map(|t| t.position).collect();
        assert_eq!(positions, [0, 1, 1, 1, 2, 3, 3, 4, 5, 5, 6, 7, 8]);
        for pair in tokens.windows(2).filter(|p| p[0].position == p[1].position) {
            assert_eq!(pair[0].offset_from, pair[1].offset_from);
        }
    }

    #[test]
    fn query_words_groups() {
        let words = query_words("Batería rota");
        assert_eq!(words, [["bateria", "bateri"], ["rota", "rot"]]);
        assert_eq!(query_words("rota ROTA"), [["rota", "rot"]]);
        assert_eq!(query_words("A-1"), [vec!["a-1", "a"], vec!["1"]]);
    }

    #[test]
    fn matching_words_for_highlights() {
        let text = "La BATERÍA está rota.";
        let none = HashSet::new();
        let set = |term: &str| HashSet::from([term.to_string()]);
        assert_eq!(matching_words(text, &set("bateria"), &[]), ["BATERÍA"]);
        let prefixes = ["bat".to_string()];
        assert_eq!(matching_words(text, &none, &prefixes), ["BATERÍA"]);
        assert!(matching_words(text, &none, &[String::new()]).is_empty());
        let phone = matching_words("Tel: 600-123-456", &set("600123456"), &[]);
        assert_eq!(phone, ["600-123-456"]);
    }

    #[test]
    fn registered_analyzer_indexes_and_finds() -> tantivy::Result<()> {
        use tantivy::schema::{IndexRecordOption, Schema, TextFieldIndexing, TextOptions};
        use tantivy::{Term, collector::Count, doc, query::TermQuery};

        let mut builder = Schema::builder();
        let indexing = TextFieldIndexing::default()
            .set_tokenizer(TOKENIZER)
            .set_index_option(IndexRecordOption::WithFreqsAndPositions);
        let options = TextOptions::default().set_indexing_options(indexing);
        let body = builder.add_text_field("body", options);
        let index = Index::create_in_ram(builder.build());
        register(&index);
        let mut writer = index.writer(15_000_000)?;
        writer.add_document(doc!(body => "La BATERÍA está rota 👍"))?;
        writer.commit()?;
        let searcher = index.reader()?.searcher();
        for term in ["bateria", "bateri", "👍"] {
            let term = Term::from_field_text(body, term);
            let query = TermQuery::new(term, IndexRecordOption::WithFreqsAndPositions);
            assert_eq!(searcher.search(&query, &Count)?, 1);
        }
        Ok(())
    }
}
