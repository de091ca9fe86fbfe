"""Word handling shared by keyword search and the answerer."""

from __future__ import annotations

import pytest

from indexer.text import identifiers, search_terms


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("KafkaConsumerLagHigh is firing", ["KafkaConsumerLagHigh"]),
        ("check etcd_mvcc_db_total_size now", ["etcd_mvcc_db_total_size"]),
        ("dashboards for checkout-service please", ["checkout-service"]),
        ("what about gRPC and kube-proxy?", ["gRPC", "kube-proxy"]),
        # Hyphenated English, paths, URLs and plain words name nothing specific.
        ("my first on-call shift, out-of-hours, a follow-up", []),
        ("what access/setup do I need? see status.logit.io", []),
        ("the quick brown fox", []),
    ],
)
def test_identifiers_are_the_names_of_specific_things(text, names):
    assert identifiers(text) == names


def test_search_terms_split_compound_identifiers():
    assert {"kubepodcrashloop", "pod", "crash", "loop"} <= set(search_terms("KubePodCrashLooping"))
