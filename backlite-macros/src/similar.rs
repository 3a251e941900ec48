//! "Did you mean ..?" for misspelt keys.

/// The candidate closest to `word`, if it is close enough to be a likely typo.
pub fn did_you_mean<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|&candidate| (edit_distance(word, candidate), candidate))
        // A third of the candidate's length: `max_attempt` finds `max_attempts`, while short
        // unrelated words such as `cap` and `name` do not suggest each other.
        .filter(|&(distance, candidate)| distance <= (candidate.len() / 3).max(1))
        .min_by_key(|&(distance, _)| distance)
        .map(|(_, candidate)| candidate)
}

/// Levenshtein distance: the fewest single-character insertions, deletions and substitutions
/// that turn `a` into `b`.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    // `row[j]` is the distance between the prefix of `a` seen so far and `b[..j]`.
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEYS: &[&str] = &["name", "max_attempts", "backoff", "timeout", "retention"];

    #[test]
    fn distances() {
        assert_eq!(edit_distance("", ""), 0);
        assert_eq!(edit_distance("abc", ""), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("timout", "timeout"), 1);
        assert_eq!(edit_distance("max_attempts", "max_attempts"), 0);
    }

    #[test]
    fn near_misses_are_suggested() {
        assert_eq!(did_you_mean("max_attempt", KEYS), Some("max_attempts"));
        assert_eq!(did_you_mean("max_atempts", KEYS), Some("max_attempts"));
        assert_eq!(did_you_mean("maxattempts", KEYS), Some("max_attempts"));
        assert_eq!(did_you_mean("timout", KEYS), Some("timeout"));
        assert_eq!(did_you_mean("retension", KEYS), Some("retention"));
        assert_eq!(did_you_mean("backof", KEYS), Some("backoff"));
        assert_eq!(did_you_mean("nme", KEYS), Some("name"));
        assert_eq!(
            did_you_mean("jiter", &["base", "cap", "jitter"]),
            Some("jitter")
        );
        // Two edits: a swapped pair of letters, or two letters missing.
        assert_eq!(
            did_you_mean("exponentail", &["exponential"]),
            Some("exponential")
        );
        assert_eq!(did_you_mean("max_atempt", KEYS), Some("max_attempts"));
        assert_eq!(did_you_mean("retenion", KEYS), Some("retention"));
    }

    #[test]
    fn unrelated_words_are_not() {
        assert_eq!(did_you_mean("retries", KEYS), None);
        assert_eq!(did_you_mean("queue", KEYS), None);
        assert_eq!(did_you_mean("x", KEYS), None);
        assert_eq!(did_you_mean("cap", &["name"]), None);
    }
}
