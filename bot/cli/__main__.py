"""``python -m bot.cli``: the same as the ``kbot`` command."""

from bot.cli import main

main()
