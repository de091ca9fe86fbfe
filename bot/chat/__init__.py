"""Chat adapters: Slack, Microsoft Teams and the local web chat.

Each turns a platform event into a question for the answering service and renders the
answer back (Block Kit, an Adaptive Card, HTML). None touches Chroma or SQL directly.
"""
