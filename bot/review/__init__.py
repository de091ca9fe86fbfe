"""The leads' review tools over the query log and feedback: reports and their pages, the
weekly digest, answer traces, quality evaluation and cost projection."""
