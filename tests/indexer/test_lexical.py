from hypothesis import given
from hypothesis import strategies as st

from indexer.lexical import MIN_WORD, LexicalIndex, Vocabulary, corpus_terms
from indexer.text import search_terms


def test_corpus_terms_are_each_texts_search_terms():
    texts = [
        "KubePodCrashLooping fired: rotate the etcd_mvcc_db_total_size alert (kube-proxy).",
        "Rotating certs on www.gov.uk, then\n\nrotated\tkeys; access/setup docs",
        "the and of",  # only stop words
        "",
        "KubePodCrashLooping again, and CPUThrottlingHigh.md",
    ]
    assert corpus_terms(texts) == [search_terms(t) or ["\u2205"] for t in texts]


def test_a_word_one_edit_from_another_is_near_it() -> None:
    v = Vocabulary(["alertmanag", "rotat", "databas", "sonar", "abc", "k8s", "kube-proxy"])
    assert v.near("alertmang")  # a letter dropped
    assert v.near("alertmanagr")  # a letter added
    assert v.near("alertmanog")  # a letter changed
    assert v.near("roatt")  # two letters swapped
    assert not v.near("sonarqub")  # a name of its own, not a misspelling
    # A word is not near itself, and only words of letters, long enough, are kept.
    assert not v.near("databas") and "databas" in v
    assert "abc" not in v and "k8s" not in v and "kube-proxy" not in v and len(v) == 4


@given(
    st.text(alphabet="abcdefgh", min_size=MIN_WORD + 1, max_size=9),
    st.lists(st.text(alphabet="abcdefgh", min_size=MIN_WORD, max_size=9), max_size=20),
    st.integers(min_value=0),
    st.sampled_from("abcdefgh"),
    st.sampled_from(["drop", "add", "change", "swap"]),
)
def test_every_one_edit_misspelling_of_a_word_is_near_it(word, others, at, letter, edit) -> None:
    i = at % len(word)
    typo = {
        "drop": word[:i] + word[i + 1 :],
        "add": word[:i] + letter + word[i:],
        "change": word[:i] + letter + word[i + 1 :],
        "swap": word[:i] + word[i + 1 : i + 2] + word[i] + word[i + 2 :],
    }[edit]
    if typo == word:
        return
    assert Vocabulary([word, *others]).near(typo)


def test_an_index_gives_the_words_it_holds(tmp_path) -> None:
    index = LexicalIndex(tmp_path / "bm25")
    assert index.vocabulary() is None  # nothing built yet
    index.build(["a:1", "a:2"], ["Rotate the SonarQube token", "KubePodCrashLooping fired"])
    words = index.vocabulary()
    assert words is not None and {"rotat", "sonarqub", "token", "crash"} <= words.words
    index.build(["a:1"], ["Cosmos accounts"])
    assert "cosmo" in index.vocabulary() and "sonarqub" not in index.vocabulary()
