"""Word-level text handling shared by lexical search and the extractive answerer."""

from __future__ import annotations

import re

# Identifiers keep their inner punctuation: "etcd_mvcc_db_total_size", "kube-proxy",
# "www.gov.uk" and "KubePodCrashLooping" are one token each (and also split into parts).
_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-/]*[A-Za-z0-9]|[A-Za-z0-9]")
_PARTS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
_STOPWORDS = """
a about above after again against all am an and any are as at be because been before being
below between both but by can could did do does doing down during each few for from further
had has have having he her here hers him his how i if in into is it its itself just me more
most my no nor not now of off on once only or other our out over own same she should so some
such than that the their them then there these they this those through to too under until up
very was we were what when where which while who whom why will with would you your yours get
got im ive dont whats hows thats one us i'm it's what's how's need want please tell know
there's shall may might also
"""
STOP = frozenset(_STOPWORDS.split())


def stem(w: str) -> str:
    """Fold "rotate", "rotated", "rotates" and "rotating" to one form."""
    for suffix in ("ing", "ies", "es", "s", "ed"):
        if len(w) > len(suffix) + 3 and w.endswith(suffix):
            w = w[: -len(suffix)]
            break
    if len(w) > 4 and w.endswith("e"):
        w = w[:-1]
    return w


def terms(text: str) -> list[str]:
    """Lower-cased, stemmed content words; identifiers stay whole."""
    out = []
    for tok in _TOKEN.findall(text):
        w = tok.lower()
        if w not in STOP:
            out.append(stem(w))
    return out


def search_terms(text: str) -> list[str]:
    """``terms`` plus the parts of compound identifiers, so "KubePodCrashLooping" also
    matches "pod crash looping" and "etcd_mvcc_db_total_size" matches "db size"."""
    out = []
    for tok in _TOKEN.findall(text):
        w = tok.lower()
        if w in STOP:
            continue
        out.append(stem(w))
        parts = _PARTS.findall(tok)
        if len(parts) > 1:
            out.extend(stem(p.lower()) for p in parts if p.lower() not in STOP)
    return out


_CAMEL = re.compile(r"[a-z0-9][A-Z]")


def identifiers(text: str) -> list[str]:
    """The names of specific things in ``text``: CamelCase (alert names like
    "KafkaConsumerLagHigh"), snake_case, and hyphenated names of long parts
    ("checkout-service"). Hyphenated English ("on-call", "out-of-hours") is not one: a
    part of it is a stop word or shorter than three letters."""
    out = []
    for tok in _TOKEN.findall(text):
        tok = tok.strip("./")
        if "/" in tok or "." in tok:
            continue  # paths, URLs and "access/setup" are not one name
        if _CAMEL.search(tok) or "_" in tok:
            out.append(tok)
            continue
        parts = tok.split("-")
        if len(parts) > 1 and all(len(p) >= 3 and p.lower() not in STOP for p in parts):
            out.append(tok)
    return list(dict.fromkeys(out))
