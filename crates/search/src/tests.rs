//! Each expectation is what PostgreSQL 15 answers for the same text and query
//! (`to_tsvector('english', text) @@ <function>('english', query)`).

use super::*;

fn matches(syntax: Syntax, query: &str, text: &str) -> bool {
    let query = Query::parse(syntax, Language::English, query).expect("parses");
    query.matches(&Document::new(Language::English, text))
}

const HAT: &str = "The cat in the hat sat on a well-known mat";

#[test]
fn operators_follow_to_tsquery() {
    use Syntax::Operators as O;
    assert!(matches(O, "cats & hats", HAT));
    assert!(matches(O, "dog | mats", HAT));
    assert!(!matches(O, "cat & !hat", HAT));
    assert!(matches(O, "cat & !(dog | bird)", HAT));
    assert!(matches(O, "sat <-> mat:*", "sat matters"));
    assert!(matches(O, "cat <3> hat", HAT));
    assert!(!matches(O, "cat <-> hat", HAT));
    assert!(matches(O, "cat <-> in <-> the <-> hat", HAT));
    assert!(matches(O, "well-known <-> mat", HAT));
    assert!(matches(O, "'well known'", HAT));
    assert!(matches(O, "(hat | dog) <-> sat", HAT));
    assert!(matches(O, "!dog <-> sat", HAT));
    assert!(!matches(O, "!hat <-> sat", HAT));
    // Only stop words: PostgreSQL ignores the query and matches nothing.
    assert!(!matches(O, "the", HAT));
    assert!(!matches(O, "!the", HAT));
    assert!(matches(O, "the & cat", HAT));
    // Weights: to_tsvector gives every lexeme weight D.
    assert!(!matches(O, "cat:A", HAT));
    assert!(matches(O, "cat:*AD", HAT));
    assert!(!matches(O, "", HAT));
}

#[test]
fn malformed_operator_queries_are_refused() {
    for query in [
        "fat cat",
        "cat &",
        "(cat",
        "cat <x> dog",
        "cat <99999> dog",
        "cat:",
        "'open",
        "!dog <-> !cat",
        "(fat <-> cat | rat) <-> dog",
    ] {
        assert!(
            Query::parse(Syntax::Operators, Language::English, query).is_err(),
            "{query}"
        );
    }
    let deep = format!("{}cat{}", "(".repeat(100), ")".repeat(100));
    assert!(Query::parse(Syntax::Operators, Language::English, &deep).is_err());
    let negations = format!("{}cat", "!".repeat(100));
    assert!(Query::parse(Syntax::Operators, Language::English, &negations).is_err());
}

#[test]
fn plain_phrase_and_websearch_follow_postgres() {
    assert!(matches(Syntax::Plain, "hats, the cats!", HAT));
    assert!(!matches(Syntax::Plain, "hats dogs", HAT));
    assert!(matches(Syntax::Phrase, "cat in the hat", HAT));
    assert!(matches(Syntax::Phrase, "cat on the hat", HAT));
    assert!(!matches(Syntax::Phrase, "hat cat", HAT));
    let web = Syntax::WebSearch;
    assert!(matches(web, "\"cat in the hat\" -dog", HAT));
    assert!(!matches(web, "cat -hat", HAT));
    assert!(matches(web, "dog or mat", HAT));
    assert!(matches(web, "dog OR -bird", HAT));
    assert!(!matches(web, "\"hat cat\"", HAT));
    assert!(matches(web, "or cat or", HAT));
    assert!(!matches(web, "-the", HAT));
    // Operator characters only separate words here: `dog` is required.
    assert!(!matches(web, "cat !dog & (mat)", HAT));
}

#[test]
fn websearch_or_is_an_operator_only_between_operands() {
    let simple = |query: &str, text: &str| {
        let query = Query::parse(Syntax::WebSearch, Language::Simple, query).unwrap();
        query.matches(&Document::new(Language::Simple, text))
    };
    // PostgreSQL: 'cat' & 'or'; 'or'; 'cat' | 'or' & 'dog'.
    assert!(!simple("cat or", "cat"));
    assert!(simple("or", "or else"));
    assert!(simple("cat or or dog", "or dog"));
    assert!(!simple("cat or or dog", "dog"));
    assert!(simple("cat or -dog", "bird"));
}

#[test]
fn simple_matches_words_as_written() {
    let query = Query::parse(Syntax::Plain, Language::Simple, "cats").unwrap();
    assert!(!query.matches(&Document::new(Language::Simple, "cat")));
    assert!(query.matches(&Document::new(Language::Simple, "Cats")));
    assert!(Language::from_name("klingon").is_err());
}

#[test]
fn prefilter_requires_what_a_match_requires() {
    let prefilter = |query: &str| {
        Query::parse(Syntax::Operators, Language::English, query)
            .unwrap()
            .prefilter()
    };
    assert_eq!(
        prefilter("cats & hat:*").as_deref(),
        Some("(\"cat\" AND \"hat\"*)")
    );
    assert_eq!(
        prefilter("cat | !dog"),
        None,
        "an alternative that requires nothing narrows nothing"
    );
    assert_eq!(prefilter("!dog"), None);
    assert_eq!(
        prefilter("(cat | dog) <-> mat").as_deref(),
        Some("((\"cat\" OR \"dog\") AND \"mat\")")
    );
    assert_eq!(prefilter("the"), None);
}
