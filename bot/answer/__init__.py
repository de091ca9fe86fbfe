"""The answering core: retrieve, judge the evidence, choose passages, answer, validate, log.

It knows no chat platform and no observer: adapters call it, and metrics, logs and spans
watch it through the events it emits (``bot.answer.events``).
"""
