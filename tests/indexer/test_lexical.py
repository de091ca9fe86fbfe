from indexer.lexical import corpus_terms
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
